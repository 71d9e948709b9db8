"""The backward one student forward at a time (engine/gradients): the same steps bit for bit, one forward's
activations kept instead of three, and the rule that turns it on."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from zerase_fixtures import TINY_CONFIG, WordConditioner, fresh_dit

from zerase_core.common.prompts import PromptSet
from zerase_core.engine import memory_model
from zerase_core.engine.erase_config import EraseConfig
from zerase_core.engine.trainer import EraseTrainer
from zerase_core.model.config import DiTConfig

DIT = dataclasses.replace(TINY_CONFIG, n_layers=2, n_refiner_layers=1)
PROMPTS = PromptSet(
    erase=("a red circle on white background", "a red star on black background"),
    keywords=("red",),
    anchors=("a circle on white background", "a star on black background"),
)
WORDS = ["a", "red", "blue", "green", "circle", "square", "star", "on", "white", "black", "background", "with"]


def trainer(staged: bool, checkpointing: bool = False, **overrides) -> EraseTrainer:
    settings = dict(steps=6, pool_prompts=2, sample_steps=2, batch_size=2, sample_cfg=1.0, latent_size=(4, 4), rank=2,
                    stationarity_every=2, shuffle_probability=0.5)
    settings.update(overrides)
    model = fresh_dit(DIT)
    model.gradient_checkpointing = checkpointing
    built = EraseTrainer(model, WordConditioner(WORDS), PROMPTS, EraseConfig(**settings))
    built.fuse_forwards = False
    built.backward_per_forward = staged
    return built


def run(built: EraseTrainer, steps: int) -> tuple[list[dict], dict[str, torch.Tensor]]:
    for _ in range(steps):
        built.train_step()
    built.check_finite()
    return [dict(record.metrics) for record in built.history], built.adapters.export_tensors()


@pytest.mark.parametrize("checkpointing", [False, True])
def test_staged_steps_equal_one_backward_bit_for_bit(checkpointing):
    # λ rises from 0 within a few steps (fixed λ > 0 on the later ones), and stationarity steps take ∇L_er and ∇L_pr
    # apart: both ways of combining the terms are compared
    (whole, whole_tensors), (staged, staged_tensors) = (
        run(trainer(flag, checkpointing, lambda_mode="fixed", fixed_lambda=0.7), 4) for flag in (False, True)
    )
    assert [record.keys() for record in staged] == [record.keys() for record in whole]
    assert "stationarity" in whole[1]
    for one, other in zip(whole, staged, strict=True):
        for key in one:
            assert torch.equal(torch.as_tensor(other[key]), torch.as_tensor(one[key])), key
    for key, tensor in whole_tensors.items():
        assert torch.equal(staged_tensors[key], tensor), key


def test_adaptive_lambda_steps_equal_too():
    (whole, whole_tensors), (staged, staged_tensors) = (run(trainer(flag), 5) for flag in (False, True))
    assert [record["lambda"] for record in staged] == [record["lambda"] for record in whole]
    assert any(record["lambda"] > 0 for record in whole)  # the preserve terms were weighted in
    for key, tensor in whole_tensors.items():
        assert torch.equal(staged_tensors[key], tensor), key


def test_the_staged_step_keeps_one_forward_at_a_time():
    """Bytes alive in saved tensors at their largest, measured by hooks on a step: staged ≈ one forward's."""
    peaks = []
    for staged in (False, True):
        built = trainer(staged, stationarity_every=0)
        built.train_step()  # the λ baseline probe and caches
        alive, peak = [0], [0]

        def pack(tensor):
            alive[0] += tensor.numel() * tensor.element_size()
            peak[0] = max(peak[0], alive[0])
            return _Freed(tensor, alive)

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda box: box.tensor):
            built.train_step()
        peaks.append(peak[0])
    whole, staged = peaks
    assert staged < 0.5 * whole, peaks


class _Freed:
    """A saved tensor that subtracts its bytes from the running count when autograd frees it."""

    def __init__(self, tensor, alive):
        self.tensor, self.alive, self.size = tensor, alive, tensor.numel() * tensor.element_size()

    def __del__(self):
        self.alive[0] -= self.size


def test_the_rule_follows_whether_the_forwards_run_apart():
    built = trainer(staged=False)
    built.backward_per_forward = None
    built.fuse_forwards = None
    assert not built._backward_per_forward()  # stacked forwards: one backward
    built.model.gradient_checkpointing = True
    assert built._backward_per_forward()  # apart under checkpointing: staged
    for method in ("esd", "eraseanything"):  # nothing released per forward: one backward, gradients as before
        other = trainer(staged=True, checkpointing=True, method=method)
        assert not other._backward_per_forward()
        other.train_step()
        assert all(parameter.grad is not None for parameter in other.adapters.parameters())


def test_the_memory_model_keeps_the_largest_forward_when_staged():
    config = DiTConfig()
    whole = memory_model.predict(memory_model.Problem(config, 512, 64, checkpointing=False))
    staged = memory_model.predict(
        memory_model.Problem(config, 512, 64, checkpointing=True, checkpointed_layers=0, separate_forwards=True)
    )
    assert staged["activations"] < 0.5 * whole["activations"]
