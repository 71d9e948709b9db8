"""Erase concepts from the bundled nano model: train (or solve), pick a strength on held-out prompts, save the file.

Interrupting (Ctrl-C, or an exception raised by `on_step`) saves a partial file atomically; `resume=` continues it
to the same result as an uninterrupted run with the same seed.
"""
from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path
from typing import Callable

from ..checkpoint import fingerprint
from ..closed_form import uce_text
from ..erase_config import EraseConfig
from ..erasure_file import UCE_DELTA_KEY, ErasureFileError, ErasureInfo, adapter_dict, read_erasure, save_erasure
from ..progress import PhaseCounter, Progress
from ..prompts import PromptSet
from ..trainer import EraseTrainer
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


def _info(world: NanoWorld, trainer: EraseTrainer, concepts, prompts: PromptSet, config: EraseConfig,
          strength: float, partial: bool, extra_summary=None) -> ErasureInfo:
    return ErasureInfo(
        method=config.method, concepts=tuple(concepts), keywords=prompts.keywords, anchors=prompts.anchors[:8],
        adapter=adapter_dict(trainer.adapters.config), base_fingerprint=fingerprint(world.dit),
        base_config=world.dit.config.to_dict(), recommended_strength=strength, steps_done=trainer.step,
        steps_total=config.steps, seed=config.seed, partial=partial,
        summary={**trainer.summary(), **(extra_summary or {})},
        training={"config": config.to_dict(), "anchors": list(prompts.anchors), "state": trainer.state_metadata()},
    )


def read_resume(path: Path):
    """(info, adapter tensors, resume state) of a partial erasure file; ErasureFileError for any other file."""
    info, adapter_tensors, state_tensors = read_erasure(path)
    if not info.partial:
        raise ErasureFileError(f"{path} is a finished erasure ({info.steps_done}/{info.steps_total} steps); "
                               "only partial files (interrupted runs) can be resumed")
    if "config" not in info.training or "state" not in info.training:
        raise ErasureFileError(f"{path} has no resume state")
    return info, adapter_tensors, state_tensors


def erase(world: NanoWorld, concepts: list[str], config: EraseConfig, out: Path, anchors: list[str] | None = None,
          resume: Path | None = None, on_step: Callable | None = None, choose_strength: bool = True,
          progress: Progress | None = None, parallel=None, checkpoint_every: int = 0) -> Path:
    """Train `config.method` on the nano DiT and write the erasure file to `out`. `progress(phase, done, total)`
    follows every phase: x_t pool, teacher cache (shuffle bank), train, strength search.

    `parallel` (distributed.DataParallel) splits each step's batch across processes; only its rank 0 writes files
    and chooses the strength. `checkpoint_every` > 0 saves a partial file every that many steps, so a killed process
    loses at most that many steps (`resume=` continues from it).
    """
    writes = parallel is None or parallel.rank == 0
    resume_info = None
    if resume is not None:
        resume_info, adapter_tensors, state_tensors = read_resume(resume)
        config = EraseConfig.from_dict(resume_info.training["config"])
        concepts, anchors = list(resume_info.concepts), resume_info.training["anchors"]
    concepts = concept_words(concepts)
    if config.concept_kind == "object" and resume is None:
        config = config.with_kind(concept_kind(concepts))     # the kind's ε and slices presets (colours: Q+K+V)
    prompts = prompt_set(concepts, anchors, config.seed)
    conditioner = NanoConditioner(world.text_encoder)
    trainer = EraseTrainer(world.dit, conditioner, prompts, config, in_channels=world.dit.config.in_channels,
                           shift=world.dit.config.shift, progress=progress, parallel=parallel)

    def save_partial():
        if writes:
            save_erasure(out, trainer.adapters, _info(world, trainer, concepts, prompts, config, 1.0, True),
                         extra_tensors=trainer.state_tensors())

    def step_done(step, total, metrics):
        if checkpoint_every and step % checkpoint_every == 0 and step < total:
            save_partial()
        if on_step is not None:
            on_step(step, total, metrics)
    try:
        if resume_info is not None:
            trainer.restore(adapter_tensors, state_tensors, resume_info.training["state"])
        started = time.monotonic()
        try:
            trainer.run(_reporting(step_done if checkpoint_every or on_step is not None else None, progress,
                                   trainer.step, config.steps))
        except BaseException:
            save_partial()
            raise
        train_seconds = time.monotonic() - started
        strength, table = (1.0, [])
        if choose_strength and writes:
            strength, table = recommend_strength(world, trainer.adapters, concepts, progress=progress)
        summary = {"train_seconds": train_seconds, "strength_table": table}
        if not writes:
            return out
        return save_erasure(out, trainer.adapters, _info(world, trainer, concepts, prompts, config, strength, False, summary))
    finally:
        trainer.adapters.detach()


def _reporting(on_step: Callable | None, progress: Progress | None, done: int, total: int) -> Callable | None:
    """`on_step` that also reports the "train" phase to `progress`."""
    if progress is None:
        return on_step
    counter = PhaseCounter(progress, "train", total)
    counter.advance(done)

    def report(step: int, steps: int, metrics: dict) -> None:
        counter.advance(step - counter.done)
        if on_step is not None:
            on_step(step, steps, metrics)

    return report


def erase_uce(world: NanoWorld, concepts: list[str], out: Path, anchors: list[str] | None = None, seed: int = 0,
              choose_strength: bool = True, progress: Progress | None = None) -> Path:
    """uce-text: the closed-form edit of `cap_embedder.1` (seconds, no sampling)."""
    concepts = concept_words(concepts)
    prompts = prompt_set(concepts, anchors, seed)
    started = time.monotonic()
    delta = uce_text(world.dit, NanoConditioner(world.text_encoder), prompts)
    solve_seconds = time.monotonic() - started
    delta.attach(world.dit)
    try:
        strength, table = (1.0, [])
        if choose_strength:
            strength, table = recommend_strength(world, delta, concepts, progress=progress)
    finally:
        delta.detach()
    info = ErasureInfo(method="uce-text", concepts=tuple(concepts), keywords=prompts.keywords,
                       anchors=prompts.anchors[:8], adapter={}, base_fingerprint=fingerprint(world.dit),
                       base_config=world.dit.config.to_dict(), recommended_strength=strength, seed=seed,
                       summary={"train_seconds": solve_seconds, "strength_table": table})
    return save_erasure(out, {UCE_DELTA_KEY: delta.delta.detach()}, info)


def attach_file(world: NanoWorld, path: Path, strength: float | None = None, allow_other_base: bool = False,
                allow_partial: bool = False):
    """Attach an erasure file to the nano DiT; returns (edit, info) — call `edit.detach()` when done.

    A partial file (an interrupted run) is refused unless `allow_partial`, as ApplyErasedWeights refuses it.
    """
    from ..closed_form import UCE_TARGET, WeightDelta
    from ..erasure_file import load_erasure
    info, tensors, _ = read_erasure(path)
    if info.partial and not allow_partial:
        raise ErasureFileError(f"{path} is a partial erasure ({info.steps_done}/{info.steps_total} steps); finish it "
                               f"with `erase --resume {path}`, or pass --allow-partial to look at it anyway")
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

