"""Kept refiner outputs (zerase_core/engine/segments.py): a step assembled from them computes what the whole model computes,
for cached and uncached prompts and caption lengths; the cache is used only where the refiners stay frozen and the
pool's states are the ones it was filled from. Tiny random DiT with refiners, word-level conditioner."""
from __future__ import annotations

import dataclasses

import pytest
import torch
from zerase_fixtures import TINY_CONFIG, fresh_dit

from zerase_core.common.prompts import PromptSet
from zerase_core.engine.erase_config import EraseConfig
from zerase_core.engine.trainer import EraseTrainer

PROMPTS = PromptSet(erase=("a red circle on white background", "a red star on black background"), keywords=("red",),
                    anchors=("a circle on white background", "a star on black background"))
# nine words: a padded caption of 16 tokens where the cached ones have 8, so its image segment is computed afresh
LONG_PROMPT = "a red circle with a blue star on white background"


def make_trainer(conditioner, **overrides) -> EraseTrainer:
    settings = dict(steps=3, pool_prompts=2, sample_steps=2, batch_size=2, sample_cfg=2.0, latent_size=(4, 4), rank=2,
                    stationarity_every=0)
    settings.update(overrides)
    trainer = EraseTrainer(fresh_dit(dataclasses.replace(TINY_CONFIG, n_layers=2)), conditioner, PROMPTS,
                           EraseConfig(**settings))
    generator = torch.Generator().manual_seed(0)     # the same deltas in every trainer made here
    with torch.no_grad():
        for adapter in trainer.adapters.adapters.values():         # non-zero deltas: the joint layers are adapted
            for up in adapter.up.values():
                up.normal_(0.0, 0.5, generator=generator)
    return trainer


def whole_model(trainer: EraseTrainer, picks, prompts, kinds) -> torch.Tensor:
    states = torch.stack([trainer.pool.state(kind, p, k) for (p, k), kind in zip(picks, kinds)])
    sigma = torch.stack([trainer.pool.sigmas[k] for _, k in picks])
    context, lengths = trainer.conditioner.encode(prompts)
    return trainer.model(states, sigma, context, lengths)


def test_rows_from_kept_segments_match_the_whole_model(word_conditioner):
    trainer = make_trainer(word_conditioner)
    segments = trainer.pool.segments
    assert segments is not None and segments.bytes() > 0
    picks = [(0, 1), (1, 0), (0, 1), (1, 1), (0, 0)]
    prompts = ["", trainer.pool.anchors[1], "red a circle white on background", LONG_PROMPT, trainer.pool.prompts[0]]
    kinds = ["erase", "anchor", "erase", "erase", "erase"]
    assert [prompt in segments.text for prompt in prompts] == [True, True, False, False, True]
    with torch.no_grad():
        kept = trainer.model.joint(segments.joint_input(trainer.model, word_conditioner, trainer.pool, picks, prompts,
                                                        kinds))
        expected = whole_model(trainer, picks, prompts, kinds)
    torch.testing.assert_close(kept, expected, rtol=1e-4, atol=1e-5)
    assert len(segments.text) == 5 and "red a circle white on background" not in segments.text   # never grows


def test_teacher_velocities_are_the_same_with_and_without_kept_segments(word_conditioner):
    kept = make_trainer(word_conditioner)
    with torch.no_grad():
        for adapter in kept.adapters.adapters.values():
            for up in adapter.up.values():
                up.zero_()
    plain_pool = EraseTrainer(fresh_dit(dataclasses.replace(TINY_CONFIG, n_layers=2)), word_conditioner, PROMPTS,
                              kept.config, denoise=lambda *args: kept.model(*args)).pool   # not the model itself
    assert plain_pool.segments is None and kept.pool.segments is not None
    assert plain_pool.teacher.keys() == kept.pool.teacher.keys()
    for key, velocity in kept.pool.teacher.items():
        assert torch.equal(velocity, plain_pool.teacher[key])             # one forward, split in two: the same bits


def test_a_step_from_kept_segments_gives_the_losses_of_full_forwards(word_conditioner):
    trainer = make_trainer(word_conditioner, method="zerase")
    picks = [(0, 1), (1, 0)]
    teacher = trainer._teacher(picks)
    state = trainer.rng.bit_generator.state
    with torch.no_grad():
        kept = trainer.erase_parts(picks, teacher, shuffle=True, preserve=True)
        segments, trainer.pool.segments = trainer.pool.segments, None
        trainer.rng.bit_generator.state = state                            # the same word shuffles
        full = trainer.erase_parts(picks, teacher, shuffle=True, preserve=True)
        trainer.pool.segments = segments
    assert kept.keys() == full.keys() == {"erase", "attention", "preserve"}
    for name in kept:
        assert float(kept[name]) == pytest.approx(float(full[name]), rel=1e-4)


@pytest.mark.parametrize("overrides", [dict(cache=False), dict(families=("layers", "context_refiner"))])
def test_no_segments_are_kept_where_they_would_be_wrong(overrides, word_conditioner):
    trainer = make_trainer(word_conditioner, **overrides)
    assert trainer.pool.segments is None
    assert all(torch.isfinite(torch.tensor(list(trainer.train_step().values()))))


def test_kept_segments_under_gradient_checkpointing_give_the_same_step(word_conditioner):
    plain, checkpointed = make_trainer(word_conditioner), make_trainer(word_conditioner)
    checkpointed.model.gradient_checkpointing = True               # separate forwards per prompt list, recomputed
    first, second = plain.train_step(), checkpointed.train_step()
    assert first.keys() == second.keys()
    for name in first:
        assert second[name] == pytest.approx(first[name], rel=1e-4, abs=1e-9)
    for name, tensor in plain.adapters.state_dict().items():
        torch.testing.assert_close(checkpointed.adapters.state_dict()[name], tensor, rtol=1e-4, atol=1e-6)
