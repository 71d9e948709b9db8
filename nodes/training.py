"""What `ZEraseTrain` does, without ComfyUI: node inputs -> EraseConfig + PromptSet -> the core erase run
(`zerase_core.engine.run.run_erasure`, which the CLI calls too: the same file metadata for the same settings).

For the bundled nano model the prompt sets, the concept kind and the settings come from the same functions the CLI
uses (`zerase_core.nano.erasure_runs`), so a node run and `python -m zerase_core erase` with the same seed train the
same adapters. For any other Z-Image model the user's lines are the erase prompts, keywords and anchors.
Interrupting (any exception, ComfyUI's InterruptProcessingException included) saves a partial file atomically; a
partial file resumes to the same result as an uninterrupted run.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from pathlib import Path

from zerase_core.adapters.gated import TARGET_PRESETS
from zerase_core.common.prompts import PromptSet
from zerase_core.engine.erase_config import DEFAULT_SLICES, EPSILON_PRESETS, METHODS, EraseConfig
from zerase_core.engine.run import ResumeState, TrainResult, read_partial, run_erasure  # noqa: F401 (the node's run)
from zerase_core.engine.settings import described
from zerase_core.formats.erasure_file import ErasureFileError

from .parsing import lines, words_list

CONCEPT_KINDS = ("auto", *EPSILON_PRESETS)
TARGETS = ("auto", *TARGET_PRESETS)  # auto: the concept kind's rows (EraseConfig.with_kind: Q+K, or Q+K+V)
LATENT_FACTOR = 8  # Z-Image's VAE (and the nano codec) downsample 8×


@dataclass(frozen=True)
class TrainInputs:
    """ZEraseTrain's widget values, as the node received them."""

    concepts: str
    keywords: str = ""
    anchors: str = ""
    preserve: str = ""
    method: str = "zerase"
    steps: int = EraseConfig.steps  # the defaults of EraseConfig's settings, as the widgets show them
    learning_rate: float = EraseConfig.learning_rate
    rank: int = EraseConfig.rank
    targets: str = "auto"
    epsilon: float = 0.0  # 0 = the preset of the concept kind
    beta: float = EraseConfig.beta
    eta: float = EraseConfig.eta
    seed: int = 0
    resolution: int = 64
    concept_kind: str = "auto"
    sample_steps: int = EraseConfig.sample_steps
    sample_cfg: float = EraseConfig.sample_cfg
    batch_size: int = EraseConfig.batch_size
    pool_prompts: int = EraseConfig.pool_prompts
    shuffle_bank: int = EraseConfig.shuffle_bank

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"method {self.method!r} is not trainable here; choose one of {METHODS}")
        if self.targets not in TARGETS:
            raise ValueError(f"targets {self.targets!r} must be one of {TARGETS} (rows of the fused qkv to adapt)")
        if self.concept_kind not in CONCEPT_KINDS:
            raise ValueError(f"concept_kind {self.concept_kind!r} must be one of {CONCEPT_KINDS}")
        if self.resolution % (2 * LATENT_FACTOR) or self.resolution < 2 * LATENT_FACTOR:
            raise ValueError(
                f"resolution {self.resolution} must be a multiple of 16 (latent = resolution/8, patch 2), "
                f"e.g. 64 for the nano model or 512 for Z-Image"
            )
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
    """The EraseConfig of a run (the settings that are ZEraseTrain widgets, as the widgets gave them); for nano
    exactly what `zerase_core erase` builds from the same values. Targets `auto` take the concept kind's qkv rows
    (`EraseConfig.with_kind`); a named preset is kept as chosen."""
    latent = inputs.resolution // LATENT_FACTOR
    slices = DEFAULT_SLICES if inputs.targets == "auto" else TARGET_PRESETS[inputs.targets]
    widgets = {name: getattr(inputs, name) for name, (_, spec) in described(EraseConfig).items() if spec.node}
    config = EraseConfig(
        method=inputs.method,
        seed=inputs.seed,
        slices=slices,
        latent_size=(latent, latent),
        **{**widgets, "epsilon": inputs.epsilon or None},  # the widget's 0 is the concept kind's preset
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
            raise ValueError(
                f"keywords {list(keywords)} differ from the concepts {list(concepts)}: on the nano model "
                f"the concept words are the keywords; leave keywords empty"
            )
        return nano_prompt_set(list(concepts), list(anchors) or None, inputs.seed)
    keywords = words_list(inputs.keywords) or concepts
    # The mapped prompts of the "anchor" erase target: the user's anchors, else the erase prompts without the
    # keywords (the README's "the erase prompt without the concept"); extra `preserve` prompts are no mapping.
    targets = lines(inputs.anchors) or tuple(_without(prompt, keywords) for prompt in concepts)
    return PromptSet(erase=concepts, keywords=keywords, anchors=anchors or targets, targets=targets)


def resume_state(path: Path, nano: bool) -> ResumeState:
    """Settings, prompts and trainer state of a partial file (the node's widget values are not used)."""
    info, adapter_tensors, state_tensors = read_partial(path)
    training = info.training
    config = EraseConfig.from_dict(training["config"])
    if nano:
        from zerase_core.nano.erasure_runs import prompt_set as nano_prompt_set

        prompts = nano_prompt_set(list(info.concepts), training["anchors"], config.seed)
    else:
        if "erase" not in training:
            raise ErasureFileError(
                f"{path.name} was made for the nano model (no erase prompts stored); resume it on the nano model"
            )
        prompts = PromptSet(
            erase=tuple(training["erase"]),
            keywords=info.keywords,
            anchors=tuple(training["anchors"]),
            targets=tuple(training.get("targets", ())),
        )
    return ResumeState(config, prompts, info.concepts, adapter_tensors, state_tensors, training["state"])
