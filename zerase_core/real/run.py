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
import re
import time
from dataclasses import replace
from pathlib import Path

import torch

from ..model.checkpoint import fingerprint
from ..engine.erase_config import EraseConfig
from ..formats.erasure_file import ErasureInfo, adapter_dict, read_erasure, save_erasure
from ..common.progress import PhaseCounter, Progress
from ..common.prompts import PromptSet
from ..engine.shuffle_bank import PreparedConditioner, ShuffleBank
from ..engine.methods import shuffles
from ..engine.trainer import EraseTrainer
from .options import add_model_arguments, check_base, device_of, real_source  # noqa: F401 (the CLI's)
from .sources import ModelSource, load_transformer
from .world import TURBO, RealWorld, conditioner, load_vae_of, missing_parts

DEFAULT_BANK = 8  # word orders per erase prompt when the user gives no --shuffle-bank
DEFAULT_RESOLUTION = 512  # training resolution of Z-Image (the node's advice)
ERASE_TEMPLATES = ("{}", "a picture of {}", "a photo of {}", "a painting of {}")
REAL_PHASES = {"encode prompts": "prompt", "sample": "step", "decode": "image"}


def _on_device(dit, device: torch.device):
    """(DiT, denoise): on the CPU the DiT itself; on a GPU its weights copied there and a denoiser that moves inputs
    in and float32 velocities back (the x_t pool and teacher cache stay in CPU memory, as in docs/gpu-h200)."""
    if device.type == "cpu":
        return dit, None
    from ..bench.synthetic import DeviceDenoiser

    dit = dit.to(device)
    return dit, DeviceDenoiser(dit, device)


class _Release:
    """A PromptSet stand-in for prompts whose keywords nobody asks for (generate's)."""

    @staticmethod
    def keywords_in(prompt: str) -> list[str]:
        return []


class _Counting:
    """A conditioner that reports each encoded prompt to a PhaseCounter."""

    def __init__(self, inner, counter: PhaseCounter):
        self.inner, self.counter = inner, counter

    def encode(self, prompts):
        result = self.inner.encode(prompts)
        self.counter.advance(len(prompts))
        return result

    def keyword_positions(self, prompt, keyword):
        return self.inner.keyword_positions(prompt, keyword)


def encode_all(
    source: ModelSource, prompts, prompt_set=None, progress: Progress | None = None, keywords=()
) -> PreparedConditioner:
    """Features (and keyword rows) of every prompt, then the text encoder is released: the result holds none."""
    unique = list(dict.fromkeys(prompts))
    text = conditioner(source)
    try:
        for keyword in keywords:
            text.check_keyword(keyword)
        counted = _Counting(text, PhaseCounter(progress, "encode prompts", len(unique)))
        return PreparedConditioner(counted, unique, prompt_set or _Release())
    finally:
        text.release()
        del text
        gc.collect()


def _without(prompt: str, keywords) -> str:
    text = prompt
    for keyword in sorted(keywords, key=len, reverse=True):
        text = re.sub(rf"(?i)\b{re.escape(keyword)}\b", " ", text)
    return " ".join(text.split())


def real_prompt_set(concepts: list[str], prompts: list[str] | None, anchors: list[str] | None) -> PromptSet:
    """Erase prompts (given, else templates around each concept), the concepts as keywords, mapped prompts (the
    anchors, else each erase prompt without its keywords) as ZEraseTrain builds them."""
    keywords = tuple(dict.fromkeys(concept.strip() for concept in concepts if concept.strip()))
    if not keywords:
        raise ValueError("give at least one --concept (the word or words to erase, e.g. 'Van Gogh')")
    erase = tuple(
        dict.fromkeys(prompts or [template.format(keyword) for keyword in keywords for template in ERASE_TEMPLATES])
    )
    targets = tuple(anchors) if anchors else tuple(_without(prompt, keywords) for prompt in erase)
    return PromptSet(erase=erase, keywords=keywords, anchors=targets, targets=targets)


def training_prompts(prompts: PromptSet, config: EraseConfig) -> list[str]:
    """Every prompt the trainer encodes: erase, anchors, mapped, empty, and the bank's word orders."""
    needed = [*prompts.erase, *prompts.anchors, *prompts.targets, *prompts.preserve, ""]
    if config.shuffle_bank and shuffles(config.method):
        needed += ShuffleBank(prompts, prompts.erase, config.shuffle_bank, config.seed).prompts()
    return needed


def prepare_config(config: EraseConfig, resolution: int) -> EraseConfig:
    if resolution % 16 or resolution < 16:
        raise ValueError(
            f"--resolution {resolution} must be a multiple of 16 (latent = resolution/8, patch 2), e.g. 512"
        )
    if shuffles(config.method) and not config.shuffle_bank:
        config = replace(config, shuffle_bank=DEFAULT_BANK)  # no text encoder during training
    return replace(config, latent_size=(resolution // 8, resolution // 8))


def _info(
    trainer: EraseTrainer,
    prompts: PromptSet,
    config: EraseConfig,
    base: str,
    base_config: dict,
    partial: bool,
    summary: dict | None = None,
) -> ErasureInfo:
    return ErasureInfo(
        method=config.method,
        concepts=prompts.keywords,
        keywords=prompts.keywords,
        anchors=prompts.anchors[:8],
        adapter=adapter_dict(trainer.adapters.config),
        base_fingerprint=base,
        base_config=base_config,
        recommended_strength=1.0,
        steps_done=trainer.step,
        steps_total=config.steps,
        seed=config.seed,
        partial=partial,
        summary={**trainer.summary(), **(summary or {})},
        training={
            "config": config.to_dict(),
            "anchors": list(prompts.anchors),
            "erase": list(prompts.erase),
            "targets": list(prompts.targets),
            "state": trainer.state_metadata(),
        },
    )


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
) -> Path:
    """Encode every prompt, release the text encoder, map the DiT, train, write the erasure file (a partial file
    on any interruption, which `resume=` continues)."""
    restored = None
    if resume is not None:
        config, prompts, *restored = resume_prompts(resume)
    if config.method == "uce-text":
        raise ValueError("uce-text runs on the nano model only from the CLI; on a real model use zerase (default)")
    prepared = encode_all(source, training_prompts(prompts, config), prompts, progress, prompts.keywords)
    dit = load_transformer(source)
    dit.gradient_checkpointing = True  # a block's activations are recomputed in the backward, not kept
    base, base_config = fingerprint(dit), dit.config.to_dict()
    dit, denoise = _on_device(dit, torch.device(device))
    trainer = EraseTrainer(
        dit,
        prepared,
        prompts,
        config,
        denoise=denoise,
        in_channels=dit.config.in_channels,
        shift=dit.config.shift,
        progress=progress,
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
            save_erasure(
                out,
                trainer.adapters,
                _info(trainer, prompts, config, base, base_config, True),
                extra_tensors=trainer.state_tensors(),
            )
            raise
        summary = {
            "train_seconds": time.monotonic() - started,
            "strength_table": [],
            "strength_search": "skipped: no offline judge for real models",
        }
        return save_erasure(out, trainer.adapters, _info(trainer, prompts, config, base, base_config, False, summary))
    finally:
        trainer.adapters.detach()


class _Steps(torch.nn.Module):
    """The DiT, reporting one "sample" unit per new sigma (cond and uncond calls of a step count once)."""

    def __init__(self, dit, counter: PhaseCounter):
        super().__init__()
        self.dit, self.counter, self.last = dit, counter, None

    def forward(self, x, sigma, context, lengths):
        key = float(sigma.reshape(-1)[0])
        if key != self.last:
            self.last = key
            self.counter.advance()
        return self.dit(x, sigma, context, lengths)


def generate_real(
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
    progress: Progress | None = None,
    device: str = "cpu",
) -> torch.Tensor:
    """Images (B, 3, H, W) in [0, 1]; each erasure file attached at its strength (default: its recommended one,
    1/N of it for N files, as on the nano model). A missing VAE is named before any sampling."""
    missing_parts(source, ("text_encoder", "tokenizer"))
    latents = sample_real(
        source,
        prompts,
        seeds,
        steps,
        cfg,
        height,
        width,
        erasures,
        strengths,
        allow_other_base,
        allow_partial,
        progress,
        device=device,
        needs=("vae",),
    )
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
            edits.append(attach_file(world, path, strength, allow_other_base, allow_partial))
            if isinstance(edits[-1][0], torch.nn.Module):
                edits[-1][0].to(torch.device(device))
        missing_parts(source, needs)
        if len(edits) > 1:
            for index, (edit, info) in enumerate(edits):
                if index >= len(strengths):
                    edit.set_strength(info.recommended_strength / len(edits))
        dit, denoise = _on_device(world.dit, torch.device(device))
        counted = _Steps(denoise or dit, PhaseCounter(progress, "sample", steps))
        latents = world.sample_latents(prompts, seeds, steps, cfg, height, width, model=counted, noise=noise)
    finally:
        for edit, _ in reversed(edits):
            edit.detach()
    world.dit = None
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
    return erase_real(source, prompts, config, out, on_step, None, out if partial else None, str(device_of(args)))
