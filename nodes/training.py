"""What `ZEraseTrain` does, without ComfyUI: node inputs -> EraseConfig + PromptSet -> the core EraseTrainer.

For the bundled nano model the prompt sets, the concept kind and the settings come from the same functions the CLI
uses (`zerase_core.nano.erasure_runs`), so a node run and `python -m zerase_core erase` with the same seed train the
same adapters. For any other Z-Image model the user's lines are the erase prompts, keywords and anchors.
Interrupting (any exception, ComfyUI's InterruptProcessingException included) saves a partial file atomically; a
partial file resumes to the same result as an uninterrupted run.
"""
from __future__ import annotations

import re
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from torch import nn

from zerase_core.adapters import TARGET_PRESETS, AdapterSet
from zerase_core.checkpoint import fingerprint
from zerase_core.erase_config import DEFAULT_SLICES, EPSILON_PRESETS, METHODS, EraseConfig
from zerase_core.erasure_file import ErasureFileError, ErasureInfo, adapter_dict, read_erasure, save_erasure
from zerase_core.progress import Progress
from zerase_core.prompts import PromptSet
from zerase_core.trainer import EraseTrainer, StepRecord

from .parsing import lines, words_list

CONCEPT_KINDS = ("auto", *EPSILON_PRESETS)
TARGETS = ("auto", *TARGET_PRESETS)   # auto: the concept kind's rows (EraseConfig.with_kind: Q+K, or Q+K+V)
LATENT_FACTOR = 8                    # Z-Image's VAE (and the nano codec) downsample 8×


@dataclass(frozen=True)
class TrainInputs:
    """ZEraseTrain's widget values, as the node received them."""
    concepts: str
    keywords: str = ""
    anchors: str = ""
    preserve: str = ""
    method: str = "zerase"
    steps: int = 200
    learning_rate: float = 1e-3
    rank: int = 8
    targets: str = "auto"
    epsilon: float = 0.0             # 0 = the preset of the concept kind
    beta: float = EraseConfig.beta
    eta: float = 2.0
    seed: int = 0
    resolution: int = 64
    concept_kind: str = "auto"
    sample_steps: int = 20
    sample_cfg: float = 3.0
    batch_size: int = 4
    pool_prompts: int = 32
    shuffle_bank: int = 0

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"method {self.method!r} is not trainable here; choose one of {METHODS}")
        if self.targets not in TARGETS:
            raise ValueError(f"targets {self.targets!r} must be one of {TARGETS} (rows of the fused qkv to adapt)")
        if self.concept_kind not in CONCEPT_KINDS:
            raise ValueError(f"concept_kind {self.concept_kind!r} must be one of {CONCEPT_KINDS}")
        if self.resolution % (2 * LATENT_FACTOR) or self.resolution < 2 * LATENT_FACTOR:
            raise ValueError(f"resolution {self.resolution} must be a multiple of 16 (latent = resolution/8, patch 2), "
                             f"e.g. 64 for the nano model or 512 for Z-Image")
        if not lines(self.concepts):
            raise ValueError("concepts is empty: give the concept word(s) (nano) or erase prompt(s), one per line")


def concept_list(inputs: TrainInputs, nano: bool) -> tuple[str, ...]:
    """The concepts, one a line, each once; on the nano model its lower-case caption words (`Star` is `star`), as the
    CLI's `--concept`."""
    if nano:
        from zerase_core.nano.prompts import concept_words
        return tuple(concept_words(lines(inputs.concepts)))
    return tuple(dict.fromkeys(lines(inputs.concepts)))


def erase_config(inputs: TrainInputs, nano: bool) -> EraseConfig:
    """The EraseConfig of a run; for nano exactly what `zerase_core erase` builds from the same values. Targets
    `auto` take the concept kind's qkv rows (`EraseConfig.with_kind`); a named preset is kept as chosen."""
    latent = inputs.resolution // LATENT_FACTOR
    slices = DEFAULT_SLICES if inputs.targets == "auto" else TARGET_PRESETS[inputs.targets]
    config = EraseConfig(
        method=inputs.method, seed=inputs.seed, steps=inputs.steps, learning_rate=inputs.learning_rate,
        rank=inputs.rank, eta=inputs.eta, epsilon=inputs.epsilon or None, beta=inputs.beta,
        slices=slices, latent_size=(latent, latent), sample_steps=inputs.sample_steps,
        sample_cfg=inputs.sample_cfg, batch_size=inputs.batch_size, pool_prompts=inputs.pool_prompts,
        shuffle_bank=inputs.shuffle_bank,
    )
    kind = inputs.concept_kind
    if kind == "auto":
        if not nano:
            return config
        from zerase_core.nano.erasure_runs import concept_kind
        kind = concept_kind(list(concept_list(inputs, nano)))
    # the kind's presets as `erase` applies them (ε, L_attn under the anchor target); a named rows preset stays chosen
    return config.with_kind(kind) if inputs.targets == "auto" else replace(config.with_kind(kind), slices=slices)


def _without(prompt: str, keywords: tuple[str, ...]) -> str:
    text = prompt
    for keyword in sorted(keywords, key=len, reverse=True):
        text = re.sub(rf"(?i)\b{re.escape(keyword)}\b", " ", text)
    return " ".join(text.split())


def prompt_set(inputs: TrainInputs, nano: bool) -> PromptSet:
    concepts = concept_list(inputs, nano)
    anchors = lines(inputs.anchors) + lines(inputs.preserve)
    if nano:
        from zerase_core.nano.erasure_runs import prompt_set as nano_prompt_set
        keywords = tuple(dict.fromkeys(word.lower() for word in words_list(inputs.keywords)))
        if keywords and set(keywords) != set(concepts):
            raise ValueError(f"keywords {list(keywords)} differ from the concepts {list(concepts)}: on the nano model "
                             f"the concept words are the keywords; leave keywords empty")
        return nano_prompt_set(list(concepts), list(anchors) or None, inputs.seed)
    keywords = words_list(inputs.keywords) or concepts
    # The mapped prompts of the "anchor" erase target: the user's anchors, else the erase prompts without the
    # keywords (the README's "the erase prompt without the concept"); extra `preserve` prompts are no mapping.
    targets = lines(inputs.anchors) or tuple(_without(prompt, keywords) for prompt in concepts)
    return PromptSet(erase=concepts, keywords=keywords, anchors=anchors or targets, targets=targets)


@dataclass
class ResumeState:
    config: EraseConfig
    prompts: PromptSet
    concepts: tuple[str, ...]
    adapter_tensors: dict[str, torch.Tensor]
    state_tensors: dict[str, torch.Tensor]
    trainer_state: dict


def resume_state(path: Path, nano: bool) -> ResumeState:
    """Settings, prompts and trainer state of a partial file (the node's widget values are not used)."""
    info, adapter_tensors, state_tensors = read_erasure(path)
    if not info.partial:
        raise ErasureFileError(f"{path.name} is a finished erasure ({info.steps_done}/{info.steps_total} steps); "
                               f"resume_from takes only partial files (interrupted runs)")
    training = info.training
    if "config" not in training or "state" not in training or "anchors" not in training:
        raise ErasureFileError(f"{path.name} has no resume state (config, anchors and trainer state)")
    config = EraseConfig.from_dict(training["config"])
    if nano:
        from zerase_core.nano.erasure_runs import prompt_set as nano_prompt_set
        prompts = nano_prompt_set(list(info.concepts), training["anchors"], config.seed)
    else:
        if "erase" not in training:
            raise ErasureFileError(f"{path.name} was made for the nano model (no erase prompts stored); resume it on "
                                   f"the nano model")
        prompts = PromptSet(erase=tuple(training["erase"]), keywords=info.keywords, anchors=tuple(training["anchors"]),
                            targets=tuple(training.get("targets", ())))
    return ResumeState(config, prompts, info.concepts, adapter_tensors, state_tensors, training["state"])


@dataclass
class TrainResult:
    info: ErasureInfo
    tensors: dict[str, torch.Tensor]
    history: list[StepRecord]
    path: Path


Attach = Callable[[AdapterSet], AbstractContextManager]


def _info(trainer: EraseTrainer, concepts, prompts: PromptSet, config: EraseConfig, base_fingerprint: str,
          base_config: dict, partial: bool, extra_summary: dict | None = None) -> ErasureInfo:
    return ErasureInfo(
        method=config.method, concepts=tuple(concepts), keywords=prompts.keywords, anchors=prompts.anchors[:8],
        adapter=adapter_dict(trainer.adapters.config), base_fingerprint=base_fingerprint, base_config=base_config,
        recommended_strength=1.0, steps_done=trainer.step, steps_total=config.steps, seed=config.seed,
        partial=partial, summary={**trainer.summary(), **(extra_summary or {})},
        training={"config": config.to_dict(), "anchors": list(prompts.anchors), "erase": list(prompts.erase),
                  "targets": list(prompts.targets), "state": trainer.state_metadata()},
    )


def run_erasure(model: nn.Module, conditioner, prompts: PromptSet, config: EraseConfig, *, out: Path,
                base_config: dict, concepts, denoise=None, in_channels: int = 16, shift: float = 3.0,
                resume: ResumeState | None = None, on_step=None, attach: Attach | None = None,
                on_ready: Callable[[EraseTrainer], None] | None = None,
                progress: Progress | None = None) -> TrainResult:
    """Train, save the erasure file to `out`; on any exception save a partial file there first, then re-raise.

    `attach(adapters)` is a context manager that attaches the adapters for the run (the bridge's PatcherInjection);
    without it the trainer attaches them to `model` itself. `progress(phase, done, total)` follows the work before
    the first step (x_t pool, teacher cache, shuffle bank; zerase_core.progress); `on_step` the steps.
    """
    base_fingerprint = fingerprint(model)
    trainer = EraseTrainer(model, conditioner, prompts, config, denoise=denoise, in_channels=in_channels,
                           shift=shift, attach=attach is None, progress=progress)
    attached = attach(trainer.adapters) if attach is not None else nullcontext()
    try:
        with attached:
            if resume is not None:
                trainer.restore(resume.adapter_tensors, resume.state_tensors, resume.trainer_state)
            if on_ready is not None:
                on_ready(trainer)
            started = time.monotonic()
            try:
                trainer.run(on_step)
            except BaseException:
                info = _info(trainer, concepts, prompts, config, base_fingerprint, base_config, True)
                save_erasure(out, trainer.adapters, info, extra_tensors=trainer.state_tensors())
                raise
            summary = {"train_seconds": time.monotonic() - started}
            info = _info(trainer, concepts, prompts, config, base_fingerprint, base_config, False, summary)
            save_erasure(out, trainer.adapters, info)
            return TrainResult(info, trainer.adapters.export_tensors(), list(trainer.history), out)
    finally:
        if attach is None:
            trainer.adapters.detach()
