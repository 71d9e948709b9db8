"""The CLI's verbs on a real Z-Image (`--model` or `--dit/--text-encoder/--vae`): erase and generate.

Memory rule: the text encoder and the DiT are never resident together. Every prompt a run needs (erase prompts,
their word orders of the shuffle bank, anchors, mapped prompts, the empty prompt; for `generate` the prompts and
the empty one) is encoded first; the text encoder is then released (its memory map closes) and only then is the
DiT mapped. The VAE is loaded after the DiT is dropped. Training therefore always uses a shuffle bank (default 8
word orders per erase prompt) instead of a fresh order every step.

The erasure file is the one ZEraseTrain writes (`training` holds the erase prompts and mapped prompts), so a file
made here applies, and resumes, in ComfyUI and the other way round.
"""

from __future__ import annotations

import gc
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

from ..common.progress import PhaseCounter, Progress
from ..common.prompts import PromptSet
from ..engine.erase_config import EraseConfig
from ..engine.methods import shuffles
from ..engine.run import erasure_info
from ..engine.trainer import EraseTrainer
from ..formats.erasure_file import read_erasure, save_erasure
from ..model.checkpoint import fingerprint
from .devices import dit_on_device, set_checkpointing
from .options import add_model_arguments, check_base, device_of, real_source  # noqa: F401 (the CLI's)
from .prompts import encode_all, real_prompt_set, training_prompts
from .sources import ModelSource, load_transformer
from .world import TURBO, RealWorld, load_vae_of, missing_parts

DEFAULT_BANK = 8  # word orders per erase prompt when the user gives no --shuffle-bank
DEFAULT_RESOLUTION = 512  # training resolution of Z-Image (the node's advice)
REAL_PHASES = {"encode prompts": "prompt", "sample": "step", "decode": "image"}


def prepare_config(config: EraseConfig, resolution: int) -> EraseConfig:
    if resolution % 16 or resolution < 16:
        raise ValueError(
            f"--resolution {resolution} must be a multiple of 16 (latent = resolution/8, patch 2), e.g. 512"
        )
    if shuffles(config.method) and not config.shuffle_bank:
        config = replace(config, shuffle_bank=DEFAULT_BANK)  # no text encoder during training
    return replace(config, latent_size=(resolution // 8, resolution // 8))


def resume_prompts(path: Path):
    """(config, prompts, adapter tensors, state tensors, trainer state) of a partial file made for a real model."""
    info, adapters, state = read_erasure(path)
    training = info.training
    if not info.partial or "state" not in training:
        raise ValueError(f"{path} is not a partial erasure with a resume state; only interrupted runs resume")
    if "erase" not in training:
        raise ValueError(f"{path} was made for the nano model (no erase prompts stored); resume it without --model")
    prompts = PromptSet(
        erase=tuple(training["erase"]),
        keywords=info.keywords,
        anchors=tuple(training["anchors"]),
        targets=tuple(training.get("targets", ())),
    )
    return EraseConfig.from_dict(training["config"]), prompts, adapters, state, training["state"]


def erase_real(
    source: ModelSource,
    prompts: PromptSet,
    config: EraseConfig,
    out: Path,
    on_step=None,
    progress: Progress | None = None,
    resume: Path | None = None,
    device: str = "cpu",
    checkpointing: str = "auto",
) -> Path:
    """Encode every prompt, release the text encoder, map the DiT, train, write the erasure file (a partial file
    on any interruption, which `resume=` continues). The engine runs the DiT on `device`, its x_t pool and caches
    there when they fit; `checkpointing` ("auto", "all", "none", a count) is how many joint blocks recompute their
    activations in the backward (real/devices.py)."""
    restored = None
    if resume is not None:
        config, prompts, *restored = resume_prompts(resume)
    if config.method == "uce-text":
        raise ValueError("uce-text runs on the nano model only from the CLI; on a real model use zerase (default)")
    prepared = encode_all(source, training_prompts(prompts, config), prompts, progress, prompts.keywords)
    dit = load_transformer(source)
    base, base_config = fingerprint(dit), dit.config.to_dict()
    target = torch.device(device)
    if target.type != "cpu":
        dit = dit.to(target)
    print(set_checkpointing(dit, config, checkpointing, target)[1], file=sys.stderr)
    trainer = EraseTrainer(
        dit, prepared, prompts, config, in_channels=dit.config.in_channels, shift=dit.config.shift, progress=progress
    )
    trainer.adapters.to(next(dit.parameters()).device)
    try:
        if restored is not None:
            trainer.restore(*restored)
        counter = PhaseCounter(progress, "train", config.steps)
        counter.advance(trainer.step)

        def step_done(step, total, metrics):
            counter.advance(step - counter.done)
            if on_step is not None:
                on_step(step, total, metrics)

        started = time.monotonic()
        try:
            trainer.run(step_done)
        except BaseException:
            partial = erasure_info(trainer, prompts.keywords, prompts, config, base, base_config, 1.0, True)
            save_erasure(out, trainer.adapters, partial, extra_tensors=trainer.state_tensors())
            raise
        summary = {
            "train_seconds": time.monotonic() - started,
            "strength_table": [],
            "strength_search": "skipped: no offline judge for real models",
        }
        info = erasure_info(trainer, prompts.keywords, prompts, config, base, base_config, 1.0, False, summary)
        return save_erasure(out, trainer.adapters, info)
    finally:
        trainer.adapters.detach()


class CountedSteps(torch.nn.Module):
    """The DiT, reporting one "sample" unit per new sigma (cond and uncond calls of a step count once)."""

    def __init__(self, dit, counter: PhaseCounter):
        super().__init__()
        self.dit, self.counter = dit, counter
        self.last: float | None = None

    def forward(self, x, sigma, context, lengths):
        key = float(sigma.reshape(-1)[0])
        if key != self.last:
            self.last = key
            self.counter.advance()
        return self.dit(x, sigma, context, lengths)


def generate_real(
    source: ModelSource, *sampling, progress: Progress | None = None, device: str = "cpu"
) -> torch.Tensor:
    """Images (B, 3, H, W) in [0, 1] of `sample_real` (the same sampling arguments: prompts, seeds, steps, cfg,
    height, width, erasures, strengths, allow_other_base, allow_partial); each erasure file attached at its strength
    (default: its recommended one, 1/N of it for N files, as on the nano model). A missing text encoder or VAE is
    named before any sampling."""
    latents = sample_real(source, *sampling, progress=progress, device=device, needs=("vae",))
    return decode_latents(source, latents, progress)


def sample_real(
    source: ModelSource,
    prompts: list[str],
    seeds: list[int],
    steps: int = TURBO["steps"],
    cfg: float = TURBO["cfg"],
    height: int = 1024,
    width: int = 1024,
    erasures=(),
    strengths=(),
    allow_other_base: bool = False,
    allow_partial: bool = False,
    *,
    progress: Progress | None = None,
    noise: torch.Tensor | None = None,
    device: str = "cpu",
    needs: tuple[str, ...] = (),
) -> torch.Tensor:
    """The DiT's final latents of `generate_real` (before the VAE); the DiT is dropped when they are done. The parts
    in `needs` (generate: the VAE) are checked once the erasure files are, before the first step."""
    from ..nano.erasure_runs import attach_file

    prepared = encode_all(source, [*prompts, ""], None, progress)
    world = RealWorld(load_transformer(source), prepared, None)
    edits = []
    try:
        for index, path in enumerate(erasures):
            strength = strengths[index] if index < len(strengths) else None
            # attach_file reads only `world.dit`, which a RealWorld has as a NanoWorld does
            edits.append(attach_file(world, path, strength, allow_other_base, allow_partial))  # type: ignore[arg-type]
            if isinstance(edits[-1][0], torch.nn.Module):
                edits[-1][0].to(torch.device(device))
        missing_parts(source, needs)
        if len(edits) > 1:
            for index, (edit, info) in enumerate(edits):
                if index >= len(strengths):
                    edit.set_strength(info.recommended_strength / len(edits))
        dit, denoise = dit_on_device(world.dit, torch.device(device))
        counted = CountedSteps(denoise or dit, PhaseCounter(progress, "sample", steps))
        latents = world.sample_latents(prompts, seeds, steps, cfg, height, width, model=counted, noise=noise)
    finally:
        for edit, _ in reversed(edits):
            edit.detach()
    del world, dit, denoise, counted  # the DiT goes before the VAE comes
    gc.collect()
    return latents


def decode_latents(source: ModelSource, latents: torch.Tensor, progress: Progress | None = None) -> torch.Tensor:
    from .vae import decode

    vae = load_vae_of(source)
    counter = PhaseCounter(progress, "decode", len(latents))
    images = []
    for row in latents:
        images.append(decode(vae, row[None]))
        counter.advance()
    return torch.cat(images)


__all__ = [
    "dit_on_device",
    "CountedSteps",
    "encode_all",
    "real_prompt_set",
    "training_prompts",
    "prepare_config",
    "erase_real",
    "generate_real",
    "sample_real",
    "decode_latents",
    "resume_prompts",
    "REAL_PHASES",
]


def erase_real_entry(
    source: ModelSource,
    concepts,
    anchors,
    config: EraseConfig | None,
    args,
    out: Path,
    partial: bool,
    progress=None,
    name: str = "",
    parallel=None,
) -> Path:
    """One `erase-many` entry on a real model: its own encode / release / train cycle (the DiT is mapped again
    for each entry, so the text encoder never joins it)."""
    if config is None:
        raise ValueError("--method uce-text runs on the nano model only; on a real model use zerase (default)")
    if parallel is not None:
        raise ValueError("data-parallel --joint runs on the nano model only; run one process for a real model")
    prompts = real_prompt_set(list(concepts), None, anchors)
    config = prepare_config(config, getattr(args, "resolution", None) or DEFAULT_RESOLUTION)
    on_step = None
    if progress is not None:
        on_step = lambda step, total, metrics: progress.step(name, step, total, metrics)  # noqa: E731
    return erase_real(
        source,
        prompts,
        config,
        out,
        on_step,
        None,
        out if partial else None,
        str(device_of(args)),
        getattr(args, "checkpointing", "auto"),
    )
