"""Interrupt + resume reaches the uninterrupted result bit for bit, for every method, wherever inside a step the
interrupt lands (before the update, inside `optimizer.step`, in the λ probe after the update) and at several steps
in one run. Each "life" is a fresh trainer restored from what a partial file stores (JSON round trip of the
metadata), as a second process would be. Tiny random DiT, word-level conditioner, a handful of steps."""
from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from zerase_fixtures import TINY_CONFIG, fresh_dit

from zerase_core.common.prompts import PromptSet
from zerase_core.engine.erase_config import METHODS, EraseConfig
from zerase_core.engine.trainer import EraseTrainer

DIT = dataclasses.replace(TINY_CONFIG, n_layers=2, n_refiner_layers=0)
PROMPTS = PromptSet(erase=("a red circle on white background", "a red star on black background"), keywords=("red",),
                    anchors=("a circle on white background", "a star on black background"))
STEPS = 6


def make_trainer(conditioner, method: str, shuffle_bank: int = 0) -> EraseTrainer:
    config = EraseConfig(method=method, steps=STEPS, pool_prompts=2, sample_steps=2, batch_size=2, sample_cfg=1.0,
                         latent_size=(4, 4), rank=2, stationarity_every=2, shuffle_bank=shuffle_bank)
    return EraseTrainer(fresh_dit(DIT), conditioner, PROMPTS, config)


class Interrupt:
    """Raises KeyboardInterrupt at `point` of step `step` (1-based): "losses" (word orders drawn, nothing updated),
    "optimizer" (right after optimizer.step updated the weights and moments), "probe" (the λ probe after the update;
    methods without a probe fall back to "optimizer")."""

    def __init__(self, trainer: EraseTrainer, step: int, point: str):
        self.trainer, self.step, self.point = trainer, step, point
        if point == "probe" and not (trainer.config.method == "zerase" and trainer.config.lambda_mode == "adaptive"):
            self.point = "optimizer"
        self.updated = False      # the due step's optimizer.step ran (so the next probe is the one after it)
        self.wrap("losses", "_losses", trainer)
        self.wrap("optimizer", "step", trainer.optimizer)
        self.wrap("probe", "probe", trainer)

    def wrap(self, point: str, name: str, owner) -> None:
        original = getattr(owner, name)

        def wrapped(*args, **kwargs):
            due = self.trainer.step + 1 == self.step
            if due and self.point == point == "losses":
                raise KeyboardInterrupt
            result = original(*args, **kwargs)
            if due and point == "optimizer":
                self.updated = True
            if due and self.point == point and (point != "probe" or self.updated):
                raise KeyboardInterrupt
            return result

        setattr(owner, name, wrapped)


def saved(trainer: EraseTrainer):
    """What a partial erasure file keeps of a trainer."""
    return (trainer.adapters.export_tensors(), trainer.state_tensors(),
            json.loads(json.dumps(trainer.state_metadata())))


def run_with_interrupts(conditioner, method: str, interrupts, shuffle_bank: int = 0) -> EraseTrainer:
    state = None
    for step, point in [*interrupts, (None, None)]:
        trainer = make_trainer(conditioner, method, shuffle_bank)
        if state is not None:
            trainer.restore(*state)
        if step is None:
            trainer.run()
            return trainer
        Interrupt(trainer, step, point)
        with pytest.raises(KeyboardInterrupt):
            trainer.run()
        assert trainer.step == step - 1          # the interrupted step left nothing behind
        state = saved(trainer)


def assert_same_run(ours: EraseTrainer, theirs: EraseTrainer) -> None:
    mine, reference = ours.adapters.export_tensors(), theirs.adapters.export_tensors()
    assert set(mine) == set(reference)
    for key in mine:
        assert torch.equal(mine[key], reference[key]), key
    assert ours.lam == theirs.lam
    assert [record.metrics for record in ours.history] == [record.metrics for record in theirs.history]
    assert ours.rng.bit_generator.state == theirs.rng.bit_generator.state


@pytest.mark.parametrize("method", METHODS)
def test_interrupts_at_several_steps_and_points_resume_bit_for_bit(method, word_conditioner):
    straight = make_trainer(word_conditioner, method)
    straight.run()
    resumed = run_with_interrupts(word_conditioner, method, [(2, "optimizer"), (3, "losses"), (5, "probe")])
    assert_same_run(resumed, straight)


def test_interrupt_with_a_shuffle_bank_resumes_bit_for_bit(word_conditioner):
    straight = make_trainer(word_conditioner, "zerase", shuffle_bank=3)
    straight.run()
    resumed = run_with_interrupts(word_conditioner, "zerase", [(2, "probe"), (4, "optimizer")], shuffle_bank=3)
    assert_same_run(resumed, straight)


def test_an_interrupted_step_is_undone_in_place(word_conditioner):
    """The trainer object itself (what the partial save reads) is back at the step boundary."""
    trainer = make_trainer(word_conditioner, "zerase")
    trainer.train_step()
    before = saved(trainer)
    Interrupt(trainer, 2, "probe")
    with pytest.raises(KeyboardInterrupt):
        trainer.train_step()
    after = saved(trainer)
    for ours, theirs in zip(after[:2], before[:2]):
        assert set(ours) == set(theirs) and all(torch.equal(ours[key], theirs[key]) for key in ours)
    assert after[2] == before[2]
