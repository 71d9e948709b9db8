"""Progress of the long phases: every phase before the first training step reports its units as it goes, the nano
erase run reports pool, cache, training and strength search in order, and the CLI draws each phase as a named bar."""
from __future__ import annotations

import dataclasses
import io
import re

import pytest
from zerase_fixtures import TINY_CONFIG, randomized_dit

from zerase_core.common.progress import PhaseBars, PhaseCounter
from zerase_core.common.prompts import PromptSet
from zerase_core.engine.erase_config import EraseConfig
from zerase_core.engine.trainer import EraseTrainer
from zerase_core.engine.trajectory import pool_ticks

PROMPTS = PromptSet(erase=("a red circle on white background", "a red star on black background"), keywords=("red",),
                    anchors=("a circle on white background", "a star on black background"))


class Recorder:
    """A progress callback that keeps every call, and what the model had done by then."""

    def __init__(self, counting=None):
        self.calls: list[tuple[str, int, int]] = []
        self.forwards_seen: list[int] = []
        self.counting = counting

    def __call__(self, phase: str, done: int, total: int) -> None:
        self.calls.append((phase, done, total))
        self.forwards_seen.append(self.counting[0] if self.counting else 0)

    def phases(self) -> list[str]:
        names: list[str] = []
        for phase, _, _ in self.calls:
            if not names or names[-1] != phase:
                names.append(phase)
        return names

    def of(self, phase: str) -> list[tuple[int, int]]:
        return [(done, total) for name, done, total in self.calls if name == phase]


def check_phase(calls: list[tuple[int, int]], total: int | None = None) -> None:
    """Starts at 0, never goes back, ends at its total; one total throughout."""
    assert calls[0][0] == 0 and calls[-1][0] == calls[-1][1], calls
    assert all(later >= earlier for (earlier, _), (later, _) in zip(calls, calls[1:])), calls
    if total is not None:
        assert {seen for _, seen in calls} == {total}, calls


class SmallBatches(EraseTrainer):
    """Several sampling and cache batches even for a handful of prompts."""
    sample_batch = 2
    cache_batch = 4


@pytest.mark.parametrize("bank", [0, 3])
def test_trainer_reports_pool_cache_and_bank_while_it_builds_them(word_conditioner, bank):
    recorder = Recorder()
    config = EraseConfig(steps=2, pool_prompts=5, sample_steps=3, batch_size=1, sample_cfg=2.0, latent_size=(4, 4),
                         rank=2, shuffle_bank=bank, anchor_trajectories=True, target_states="mapped")
    trainer = SmallBatches(randomized_dit(dataclasses.replace(TINY_CONFIG, n_refiner_layers=0)), word_conditioner,
                           PROMPTS, config, progress=recorder)
    assert recorder.phases() == ["x_t pool", "teacher cache"] + (["shuffle bank"] if bank else [])
    count = min(config.pool_prompts, len(PROMPTS.erase) * 4)
    pool = recorder.of("x_t pool")
    check_phase(pool, pool_ticks(count, config.sample_steps, SmallBatches.sample_batch, config.anchor_trajectories,
                                 targets=True))
    # 3 batches · 3 steps · (erase, anchor, mapped target: zerase's anchor erase target samples the mapped prompts)
    assert pool[-1][1] == 3 * 3 * 3 and len(pool) == 1 + pool[-1][1]
    check_phase(recorder.of("teacher cache"), -(-trainer.pool.size * trainer.pool.steps // SmallBatches.cache_batch))
    if bank:
        check_phase(recorder.of("shuffle bank"))
    assert trainer.step == 0


def test_pool_reports_arrive_while_the_model_works(word_conditioner):
    """Each x_t pool report comes after more forwards than the one before: progress as the work happens."""
    model = randomized_dit(dataclasses.replace(TINY_CONFIG, n_refiner_layers=0))
    forwards = [0]
    model.register_forward_hook(lambda *_: forwards.__setitem__(0, forwards[0] + 1))
    recorder = Recorder(forwards)
    config = EraseConfig(steps=1, pool_prompts=2, sample_steps=4, batch_size=1, sample_cfg=1.0, latent_size=(4, 4),
                         rank=2)
    EraseTrainer(model, word_conditioner, PROMPTS, config, progress=recorder)
    seen = [count for (phase, _, _), count in zip(recorder.calls, recorder.forwards_seen) if phase == "x_t pool"]
    assert seen[0] == 0 and all(later > earlier for earlier, later in zip(seen, seen[1:])), seen


def test_nano_erase_reports_every_phase_in_order(tmp_path):
    from zerase_core.nano.erasure_runs import erase
    from zerase_core.nano.world import NanoWorld
    recorder = Recorder()
    steps, ready = [], []
    config = EraseConfig(steps=3, pool_prompts=2, sample_steps=2, seed=0)
    erase(NanoWorld.load(), ["star"], config, tmp_path / "star.safetensors", choose_strength=False,
          on_step=lambda step, total, metrics: steps.append(step), progress=recorder,
          on_ready=lambda trainer: ready.append((type(trainer).__name__, trainer.step, list(steps))))
    assert ready == [("EraseTrainer", 0, [])]  # once, the trainer built, before its first step
    assert recorder.phases() == ["x_t pool", "teacher cache", "train"]
    train = recorder.of("train")
    check_phase(train, config.steps)
    assert [done for done, _ in train if done] == steps == [1, 2, 3]


def test_a_phase_that_stops_early_ends_full():
    recorder = Recorder()
    counter = PhaseCounter(recorder, "strength search", 8)
    counter.advance()
    counter.advance()
    counter.finish()
    assert recorder.calls == [("strength search", 0, 8), ("strength search", 1, 8), ("strength search", 2, 8),
                              ("strength search", 2, 2)]
    PhaseCounter(None, "nothing", 3).advance()     # no callback: no-op


def test_phase_bars_draw_a_named_bar_with_eta_per_phase():
    stream = io.StringIO()
    bars = PhaseBars(file=stream, units={"train": "step"})
    for phase, total in (("x_t pool", 4), ("train", 3)):
        for done in range(total + 1):
            bars(phase, done, total)
            if phase == "train":
                bars.set_postfix(L_er="0.1")
    bars.close()
    text = stream.getvalue()
    assert re.search(r"x_t pool: 100%.*4/4 \[", text), text
    assert re.search(r"train: 100%.*3/3 \[\d\d:\d\d<\d\d:\d\d, .*step.*L_er=0.1", text), text   # elapsed<ETA
