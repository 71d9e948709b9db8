"""One erase run: prompts → x_t pool → trainer → strength → erasure file. The CLI (`nano.erasure_runs`), the
ComfyUI node (`nodes.training`) and the bench all call `run_erasure`, so their files carry the same metadata.

The metadata is the union of what each caller used to write: `training` holds the config, the anchors, the erase
prompts, the mapped (target) prompts and the trainer state (a partial file resumes from them on any model), and
`recommended_strength` is the strength chosen by `choose_strength` (the nano strength search), or 1.0 where no search
ran (`summary.strength_table` is then empty).
Interrupting (Ctrl-C, or any exception, ComfyUI's interrupt included) saves a partial file atomically, which
resumes to the same result as an uninterrupted run with the same seed.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ..adapters.gated import AdapterSet
from ..common.progress import Progress
from ..common.prompts import PromptSet
from ..formats.erasure_file import ErasureFileError, ErasureInfo, adapter_dict, read_erasure, save_erasure
from ..model.checkpoint import fingerprint
from .erase_config import EraseConfig
from .trainer import EraseTrainer, StepRecord

Attach = Callable[[AdapterSet], AbstractContextManager]
# (the trained edit) -> (recommended strength, the table of the strengths tried)
StrengthChooser = Callable[[AdapterSet], tuple[float, list]]


@dataclass
class ResumeState:
    """What a partial file holds to continue its run: settings, prompts, adapters and the trainer's state."""

    config: EraseConfig
    prompts: PromptSet
    concepts: tuple[str, ...]
    adapter_tensors: dict[str, torch.Tensor]
    state_tensors: dict[str, torch.Tensor]
    trainer_state: dict


@dataclass
class TrainResult:
    info: ErasureInfo
    tensors: dict[str, torch.Tensor]
    history: list[StepRecord]
    path: Path


def read_partial(path: Path) -> tuple[ErasureInfo, dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """(info, adapter tensors, resume state) of a partial erasure file; ErasureFileError for any other file."""
    info, adapter_tensors, state_tensors = read_erasure(path)
    if not info.partial:
        raise ErasureFileError(
            f"{Path(path).name} is a finished erasure ({info.steps_done}/{info.steps_total} "
            "steps); only partial files (interrupted runs) can be resumed"
        )
    if any(key not in info.training for key in ("config", "state", "anchors")):
        raise ErasureFileError(f"{Path(path).name} has no resume state (config, anchors and trainer state)")
    return info, adapter_tensors, state_tensors


def erasure_info(
    trainer: EraseTrainer,
    concepts,
    prompts: PromptSet,
    config: EraseConfig,
    base_fingerprint: str,
    base_config: dict,
    strength: float,
    partial: bool,
    extra_summary: dict | None = None,
) -> ErasureInfo:
    """The metadata of a run's file (finished or partial)."""
    return ErasureInfo(
        method=config.method,
        concepts=tuple(concepts),
        keywords=prompts.keywords,
        anchors=prompts.anchors[:8],
        adapter=adapter_dict(trainer.adapters.config),
        base_fingerprint=base_fingerprint,
        base_config=base_config,
        recommended_strength=strength,
        steps_done=trainer.step,
        steps_total=config.steps,
        seed=config.seed,
        partial=partial,
        summary={**trainer.summary(), **(extra_summary or {})},
        training={
            "config": config.to_dict(),
            "anchors": list(prompts.anchors),
            "erase": list(prompts.erase),
            "targets": list(prompts.targets),
            "state": trainer.state_metadata(),
        },
    )


def run_erasure(
    model: nn.Module,
    conditioner,
    prompts: PromptSet,
    config: EraseConfig,
    *,
    out: Path,
    base_config: dict,
    concepts,
    denoise=None,
    in_channels: int = 16,
    shift: float = 3.0,
    resume: ResumeState | None = None,
    on_step=None,
    attach: Attach | None = None,
    on_ready: Callable[[EraseTrainer], None] | None = None,
    progress: Progress | None = None,
    parallel=None,
    checkpoint_every: int = 0,
    choose_strength: StrengthChooser | None = None,
    build_batch: int | None = None,
) -> TrainResult:
    """Train `config.method`, choose the strength, save the erasure file to `out`; on any exception during training
    save a partial file there first, then re-raise.

    `attach(adapters)` is a context manager that attaches the adapters for the run (the bridge's PatcherInjection);
    without it the trainer attaches them to `model` itself. `progress(phase, done, total)` follows the work before the
    first step (x_t pool, teacher cache, shuffle bank); `on_step(step, total, metrics)` the steps. `parallel`
    (distributed.DataParallel) splits each step's batch across processes; only its rank 0 writes files and chooses
    the strength. `checkpoint_every` > 0 saves a partial file every that many steps. `build_batch` caps the forwards
    per x_t pool / teacher-cache batch (EraseTrainer.sample_batch / cache_batch), e.g. to what fits a GPU's memory.
    """
    writes = parallel is None or parallel.rank == 0
    base_fingerprint = fingerprint(model)
    trainer_class: type[EraseTrainer] = EraseTrainer
    if build_batch is not None:
        sizes = {
            "sample_batch": min(EraseTrainer.sample_batch, build_batch),
            "cache_batch": min(EraseTrainer.cache_batch, build_batch),
        }
        trainer_class = type("EraseTrainer", (EraseTrainer,), sizes)
    trainer = trainer_class(
        model,
        conditioner,
        prompts,
        config,
        denoise=denoise,
        in_channels=in_channels,
        shift=shift,
        attach=attach is None,
        progress=progress,
        parallel=parallel,
    )

    def save_partial() -> None:
        if writes:
            info = erasure_info(trainer, concepts, prompts, config, base_fingerprint, base_config, 1.0, True)
            save_erasure(out, trainer.adapters, info, extra_tensors=trainer.state_tensors())

    def step_done(step: int, total: int, metrics: dict) -> None:
        if checkpoint_every and step % checkpoint_every == 0 and step < total:
            save_partial()
        if on_step is not None:
            on_step(step, total, metrics)

    try:
        with attach(trainer.adapters) if attach is not None else nullcontext():
            if resume is not None:
                trainer.restore(resume.adapter_tensors, resume.state_tensors, resume.trainer_state)
            if on_ready is not None:
                on_ready(trainer)
            started = time.monotonic()
            try:
                trainer.run(step_done if checkpoint_every or on_step is not None else None)
            except BaseException:
                save_partial()
                raise
            train_seconds = time.monotonic() - started
            table: list = []
            strength = 1.0
            if choose_strength is not None and writes:
                strength, table = choose_strength(trainer.adapters)
            summary = {"train_seconds": train_seconds, "strength_table": table}
            info = erasure_info(
                trainer, concepts, prompts, config, base_fingerprint, base_config, strength, False, summary
            )
            if writes:
                save_erasure(out, trainer.adapters, info)
            return TrainResult(info, trainer.adapters.export_tensors(), list(trainer.history), out)
    finally:
        if attach is None:
            trainer.adapters.detach()
