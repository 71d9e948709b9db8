"""Erase concepts from the bundled nano model: train (or solve), pick a strength on held-out prompts, save the file.

Interrupting (Ctrl-C, or an exception raised by `on_step`) saves a partial file atomically; `resume=` continues it
to the same result as an uninterrupted run with the same seed.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from ..common.progress import PhaseCounter, Progress
from ..common.prompts import PromptSet
from ..engine.erase_config import EraseConfig
from ..engine.methods import method as method_named
from ..engine.run import ResumeState, read_partial, run_erasure
from ..formats.erasure_file import UCE_DELTA_KEY, ErasureFileError, ErasureInfo, read_erasure, save_erasure
from ..model.checkpoint import fingerprint
from .prompts import NanoConditioner, attribute_of, concept_words, training_prompt_set
from .scoring import recommend_strength
from .world import NanoWorld

CONCEPT_KINDS = {"shape": "object", "colour": "attribute", "pattern": "style", "background": "abstract"}


def concept_kind(concepts: list[str]) -> str:
    """The kind of a (joint) erasure: style if any concept is a pattern, else attribute if any is a colour (its
    slices preset, Q+K+V, then covers every concept of the file), else object / abstract."""
    kinds = {CONCEPT_KINDS[attribute_of(concept)[0]] for concept in concepts}
    for kind in ("style", "attribute"):
        if kind in kinds:
            return kind
    return sorted(kinds)[0]


def prompt_set(concepts: list[str], anchors: list[str] | None, seed: int) -> PromptSet:
    generated = training_prompt_set(concepts, seed=seed)
    return generated if not anchors else replace(generated, anchors=tuple(anchors))


def read_resume(path: Path):
    """(info, adapter tensors, resume state) of a partial erasure file; ErasureFileError for any other file."""
    return read_partial(path)


def erase(
    world: NanoWorld,
    concepts: list[str],
    config: EraseConfig,
    out: Path,
    anchors: list[str] | None = None,
    resume: Path | None = None,
    on_step: Callable | None = None,
    choose_strength: bool = True,
    progress: Progress | None = None,
    parallel=None,
    checkpoint_every: int = 0,
    on_ready: Callable | None = None,
) -> Path:
    """Train `config.method` on the nano DiT and write the erasure file to `out` (`engine.run.run_erasure`).
    `progress(phase, done, total)` follows every phase: x_t pool, teacher cache (shuffle bank), train, strength
    search.

    `parallel` (distributed.DataParallel) splits each step's batch across processes; only its rank 0 writes files
    and chooses the strength. `checkpoint_every` > 0 saves a partial file every that many steps, so a killed process
    loses at most that many steps (`resume=` continues from it). `on_ready(trainer)` is called once the trainer is
    built, before its first step.
    """
    state = None
    if resume is not None:
        info, adapter_tensors, state_tensors = read_resume(resume)
        config = EraseConfig.from_dict(info.training["config"])
        concepts, anchors = list(info.concepts), info.training["anchors"]
    concepts = concept_words(concepts)
    if config.concept_kind == "object" and resume is None:
        config = config.with_kind(concept_kind(concepts))  # the kind's ε and slices presets (colours: Q+K+V)
    prompts = prompt_set(concepts, anchors, config.seed)
    if resume is not None:
        state = ResumeState(config, prompts, tuple(concepts), adapter_tensors, state_tensors, info.training["state"])
    training = _TrainPhase(progress, on_step, on_ready)

    def strength_search(edit):
        return recommend_strength(world, edit, concepts, progress=progress)

    run_erasure(
        world.dit,
        NanoConditioner(world.text_encoder),
        prompts,
        config,
        out=out,
        base_config=world.dit.config.to_dict(),
        concepts=concepts,
        in_channels=world.dit.config.in_channels,
        shift=world.dit.config.shift,
        resume=state,
        on_step=training.on_step(),
        on_ready=training.ready,
        progress=progress,
        parallel=parallel,
        checkpoint_every=checkpoint_every,
        choose_strength=strength_search if choose_strength else None,
    )
    return out


class _TrainPhase:
    """Reports the "train" phase to `progress` (from the step a run starts at), passes each step to `on_step` and
    the built trainer to `on_ready`."""

    def __init__(self, progress: Progress | None, on_step: Callable | None, on_ready: Callable | None = None):
        self.progress, self.user_step, self.user_ready = progress, on_step, on_ready
        self.counter: PhaseCounter | None = None

    def ready(self, trainer) -> None:
        if self.progress is not None:
            self.counter = PhaseCounter(self.progress, "train", trainer.config.steps)
            self.counter.advance(trainer.step)
        if self.user_ready is not None:
            self.user_ready(trainer)

    def on_step(self) -> Callable | None:
        return self.report if self.progress is not None or self.user_step is not None else None

    def report(self, step: int, steps: int, metrics: dict) -> None:
        if self.counter is not None:
            self.counter.advance(step - self.counter.done)
        if self.user_step is not None:
            self.user_step(step, steps, metrics)


def erase_uce(
    world: NanoWorld,
    concepts: list[str],
    out: Path,
    anchors: list[str] | None = None,
    seed: int = 0,
    choose_strength: bool = True,
    progress: Progress | None = None,
) -> Path:
    """uce-text: the closed-form edit of `cap_embedder.1` (seconds, no sampling)."""
    concepts = concept_words(concepts)
    prompts = prompt_set(concepts, anchors, seed)
    started = time.monotonic()
    delta = method_named("uce-text").solve(world.dit, NanoConditioner(world.text_encoder), prompts)
    solve_seconds = time.monotonic() - started
    delta.attach(world.dit)
    try:
        strength: float = 1.0
        table: list[dict] = []
        if choose_strength:
            strength, table = recommend_strength(world, delta, concepts, progress=progress)
    finally:
        delta.detach()
    info = ErasureInfo(
        method="uce-text",
        concepts=tuple(concepts),
        keywords=prompts.keywords,
        anchors=prompts.anchors[:8],
        adapter={},
        base_fingerprint=fingerprint(world.dit),
        base_config=world.dit.config.to_dict(),
        recommended_strength=strength,
        seed=seed,
        summary={"train_seconds": solve_seconds, "strength_table": table},
    )
    return save_erasure(out, {UCE_DELTA_KEY: delta.delta.detach()}, info)


def attach_file(
    world: NanoWorld,
    path: Path,
    strength: float | None = None,
    allow_other_base: bool = False,
    allow_partial: bool = False,
):
    """Attach an erasure file to the nano DiT; returns (edit, info) — call `edit.detach()` when done.

    A partial file (an interrupted run) is refused unless `allow_partial`, as ApplyErasedWeights refuses it.
    """
    from ..adapters.closed_form import UCE_TARGET, WeightDelta
    from ..formats.erasure_file import load_erasure

    info, tensors, _ = read_erasure(path)
    if info.partial and not allow_partial:
        raise ErasureFileError(
            f"{path} is a partial erasure ({info.steps_done}/{info.steps_total} steps); finish it "
            f"with `erase --resume {path}`, or pass --allow-partial to look at it anyway"
        )
    if info.method == "uce-text":
        if info.base_fingerprint != fingerprint(world.dit) and not allow_other_base:
            raise ErasureFileError(f"{path} was made for another base model (fingerprint {info.base_fingerprint})")
        edit = WeightDelta(UCE_TARGET, tensors[UCE_DELTA_KEY]).attach(world.dit)
        edit.set_strength(info.recommended_strength if strength is None else strength)
        return edit, info
    adapters, info = load_erasure(path, world.dit, allow_other_base)
    if strength is not None:
        adapters.set_strength(strength)
    return adapters.attach(world.dit), info
