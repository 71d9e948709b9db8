"""The losses and the x_t pool as parts: their formulas on hand-made tensors, and a pool built from a tiny DiT."""
from __future__ import annotations

import pytest
import torch
from zerase_fixtures import WordConditioner, randomized_dit

from zerase_core.common.prompts import PromptSet
from zerase_core.engine.erase_config import EraseConfig
from zerase_core.engine.objectives import (
    attention_suppression,
    esd_target,
    preservation,
    velocity_mse,
)
from zerase_core.engine.pool import build_pool, teacher_prompts

WORDS = ["a", "red", "blue", "star", "circle", "on", "white", "black"]
PROMPTS = PromptSet(erase=("a red star on white", "a red circle on black"), keywords=("red",),
                    anchors=("a blue star on white", "a blue circle on black"),
                    targets=("a blue star on white", "a blue circle on black"))


def test_the_loss_formulas():
    empty, concept = torch.tensor([1.0, 2.0]), torch.tensor([3.0, 0.0])
    assert torch.equal(esd_target(empty, concept, 2.0), torch.tensor([-3.0, 6.0]))     # v(∅) − η(v(c) − v(∅))
    assert velocity_mse(torch.tensor([1.0, 3.0]), torch.tensor([0.0, 1.0])).item() == pytest.approx(2.5)
    a, b = torch.zeros(2), torch.ones(2)
    assert preservation(a, b, a, 2 * b).item() == pytest.approx(1.0 + 4.0)
    maps = [torch.full((1, 2, 3, 2), 0.25), torch.full((1, 2, 3, 2), 0.5)]          # keyword mass 0.5 and 1.0
    assert attention_suppression(maps).item() == pytest.approx(0.75)
    with pytest.raises(ValueError, match="no attention maps"):
        attention_suppression([])


def _pool(**overrides):
    model = randomized_dit()
    config = EraseConfig(pool_prompts=8, sample_steps=3, sample_cfg=2.0, latent_size=(4, 4), **overrides)
    return build_pool(model, model, WordConditioner(WORDS), PROMPTS, config, 16, 3.0, sample_batch=3, cache_batch=5,
                      keep_segments=False)


def test_a_pool_of_trajectories_with_its_teacher_cache():
    pool = _pool()
    assert pool.size == 8 and pool.steps == 3 and pool.states.shape == (8, 3, 16, 4, 4)
    assert pool.prompts[:2] == list(PROMPTS.erase) and pool.prompts[2] == PROMPTS.erase[0]
    assert pool.targets == [PROMPTS.targets[index % 2] for index in range(8)]         # zerase: the anchor target
    kinds = teacher_prompts(pool, [(0, 0)])
    assert set(kinds) == {"empty", "erase", "anchor", "target", "concept"}
    assert len(pool.teacher) == 8 * 3 * len(kinds) and pool.hits == pool.misses == 0
    again = _pool()
    assert torch.equal(pool.states, again.states)                                        # fixed seeds: same pool


def test_a_pool_without_cache_or_mapped_targets():
    pool = _pool(cache=False, method="esd")
    assert pool.targets is None and not pool.teacher
    assert set(teacher_prompts(pool, [(0, 1)])) == {"empty", "erase", "anchor"}
