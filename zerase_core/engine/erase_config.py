"""Settings of one erasure run (`EraseConfig`), with the paper's defaults; its choices and per-kind presets live in
`presets.py`."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from ..adapters.gated import SLICES, AdapterConfig
from ..common.dataclass_dicts import config_from_dict
from ..common.limits import CFG_RANGE
from .methods import method as method_named
from .methods import method_names
from .presets import (
    ANCHOR_ATTENTION_PRESETS,
    ANCHOR_ETA,
    ANCHOR_ETA_PRESETS,
    ANCHOR_SLICE_PRESETS,
    DEFAULT_SLICES,
    EPSILON_PRESETS,
    ERASE_TARGETS,
    INFERENCE_METHODS,
    LAMBDA_MODES,
    SLICE_PRESETS,
    TARGET_STATES,
)
from .settings import check_ranges, cli_and_node, count_setting, setting

METHODS = method_names(trainable=True)  # engine/methods: one file per method (as registered at import)


@dataclass(frozen=True)
class EraseConfig:
    method: str = "zerase"
    steps: int = count_setting(200, "Training steps (optimizer updates).", 100_000, "steps")
    learning_rate: float = setting(
        1e-3,
        "AdamW learning rate of the adapter weights.",
        minimum=1e-7,
        maximum=1.0,
        cli="--lr",
        node="learning_rate",
        step=1e-5,
        round=1e-7,
    )
    rank: int = count_setting(8, "Rank of each low-rank adapter (alpha = rank).", 256, "rank")
    alpha: float | None = None  # None = rank (delta scale 1)
    slices: tuple[str, ...] = DEFAULT_SLICES  # the released checkpoint: Q+K of every joint layer; SLICE_PRESETS
    families: tuple[str, ...] = ("layers",)
    layers: tuple[int, ...] | None = None
    eta: float = setting(
        2.0,
        "η: negative guidance of the ESD target v(∅) − η(v(c) − v(∅)).",
        minimum=0.0,
        maximum=50.0,
        hint=" (negative guidance η; the paper uses 2)",
        step=0.1,
        **cli_and_node("eta"),
    )
    erase_target: str | None = None  # ERASE_TARGETS; None = per method (zerase: anchor)
    target_eta: float | None = setting(
        None,
        "η of the anchor target (0 = the anchor alone).",
        minimum=0.0,
        maximum=50.0,
        hint=" (η of the anchor-mapped target)",
        cli="--target-eta",
        unset=f"the concept kind's preset: {ANCHOR_ETA:g}, attributes {ANCHOR_ETA_PRESETS['attribute']:g}",
    )
    target_states: str | None = None  # TARGET_STATES: where the anchor target is taken; None = "mapped"
    attention_weight: float = setting(
        1.0, "w of L_er = L_erase + w·L_attn (the paper: unweighted).", minimum=0.0, maximum=1000.0
    )
    concept_kind: str = "object"
    epsilon: float | None = setting(
        None,
        "ε of the λ update (preservation slack); unset (the node: 0) = the preset "
        "of the concept kind (1e-3 style/nudity, 1e-2 object).",
        minimum=0.0,
        maximum=1.0,
        hint=" (ε presets: 1e-3 … 1e-2)",
        node_default=0.0,
        step=1e-4,
        round=1e-6,
        **cli_and_node("epsilon"),
    )
    # Dual step size of λ. The paper uses 0.1 over 1,000 steps; our default run is 200 steps, and λ integrates
    # β·g̃ per step, so 0.1 left λ too small to hold L_pr (nano, 2026-11-28: yellow keep 0.84× base at β 0.1,
    # 0.94× at β 1; red 0.90× → 0.97×). The paper reports robustness to β; the bench's sweep measures it.
    beta: float = setting(
        1.0,
        "β: step size of the λ update (the paper: 0.1 over 1,000 steps).",
        minimum=0.0,
        maximum=100.0,
        step=0.01,
        **cli_and_node("beta"),
    )
    lagrangian_alpha: float | None = setting(
        None,
        "α of g̃ = ΔL_pr/α + ε (None = learning_rate, as the paper).",
        minimum=1e-12,
        maximum=1e6,
        hint=" (α of g̃ = ΔL_pr/α + ε; must be > 0)",
    )
    lambda_mode: str = "adaptive"  # "fixed" keeps λ = fixed_lambda (ablation)
    fixed_lambda: float = setting(0.0, "λ of lambda_mode fixed.", minimum=0.0, maximum=1e6)
    lambda_max: float = setting(
        100.0, "Upper bound of λ (the theory assumes bounded λ ∈ [0, D]).", minimum=0.0, maximum=1e6
    )
    shuffle_probability: float = setting(
        0.9, "Probability that a step shuffles the erase prompt's words.", minimum=0.0, maximum=1.0
    )
    # 0: every step draws a fresh word order (the paper), so the text encoder runs during training. K > 0: K orders
    # of each erase prompt are drawn and encoded once, before training; the steps pick among them and the trainer
    # keeps no text encoder (shuffle_bank.py). At Z-Image scale that keeps Qwen3-4B out of the training loop.
    shuffle_bank: int = setting(
        0,
        "0: a fresh word order of the erase prompt every step (the paper), so the text "
        "encoder runs while training. K: K orders per erase prompt are encoded before "
        "training and the steps pick among them (try 16 on small GPUs).",
        minimum=0,
        maximum=4096,
        kind=int,
        hint=" (word orders encoded per erase prompt before training; 0 = a fresh order every step)",
        metavar="K",
        node_minimum=-1,
        node_help=(
            "Word orders of each erase prompt encoded before training. 0 (auto): 8 on a GPU, "
            "so the text encoder is unloaded before the DiT loads; a fresh order every step "
            "on a CPU. -1: a fresh order every step (the paper), the text encoder runs while "
            "training. K: K orders, the steps pick among them."
        ),
        **cli_and_node("shuffle_bank"),
    )
    batch_size: int = count_setting(4, "Pool states per training step.", 1024, "batch_size")
    probe_size: int = setting(
        2,
        "Fixed (x_t, prompt) pairs of the λ probe, measured before and after each step.",
        minimum=1,
        maximum=1024,
        kind=int,
    )
    pool_prompts: int = count_setting(
        32, "Trajectories sampled once with the frozen model (at most 4 per erase prompt).", 100_000, "pool_prompts"
    )
    sample_steps: int = count_setting(
        20, "Sampler steps of the frozen x_t trajectories (Turbo: 8).", 1000, "sample_steps"
    )
    sample_cfg: float = setting(
        3.0,
        "Guidance of the frozen sampler for x_t (1 = none, Turbo).",
        minimum=CFG_RANGE[0],
        maximum=CFG_RANGE[1],
        hint=" (guidance of the x_t sampler; 1 = none)",
        node="sample_cfg",
        step=0.1,
    )
    anchor_trajectories: bool = True  # also sample the pool with the anchor prompts; L_pr's anchor term uses them
    latent_size: tuple[int, int] = (8, 8)
    seed: int = 0
    stationarity_every: int = 25
    cache: bool = True  # reuse teacher velocities at pool states

    def __post_init__(self) -> None:
        if self.method not in method_names(trainable=True):
            raise ValueError(
                f"unknown method {self.method!r}; trainable methods: {method_names(trainable=True)} "
                f"(inference-time: {INFERENCE_METHODS})"
            )
        if self.concept_kind not in EPSILON_PRESETS:
            raise ValueError(f"unknown concept kind {self.concept_kind!r}; expected one of {list(EPSILON_PRESETS)}")
        if self.erase_target is not None and self.erase_target not in ERASE_TARGETS:
            raise ValueError(f"erase_target {self.erase_target!r} must be one of {ERASE_TARGETS}")
        if self.target_states is not None and self.target_states not in TARGET_STATES:
            raise ValueError(f"target_states {self.target_states!r} must be one of {TARGET_STATES}")
        if self.lambda_mode not in LAMBDA_MODES:
            raise ValueError(f"lambda_mode {self.lambda_mode!r} must be one of {LAMBDA_MODES}")
        if isinstance(self.shuffle_bank, bool) or not isinstance(self.shuffle_bank, int):
            raise ValueError(f"shuffle_bank={self.shuffle_bank!r} must be a whole number of word orders (0 = none)")
        check_ranges(self)  # every described field against its Setting's range (settings.py)
        if any(s not in SLICES for s in self.slices):
            raise ValueError(f"slices {self.slices} must be a subset of {SLICES}")
        object.__setattr__(self, "slices", tuple(self.slices))
        object.__setattr__(self, "families", tuple(self.families))
        object.__setattr__(self, "latent_size", tuple(self.latent_size))
        if self.layers is not None:
            object.__setattr__(self, "layers", tuple(self.layers))
        self.adapter_config()  # validates rank/alpha/slices/families

    @property
    def epsilon_value(self) -> float:
        return EPSILON_PRESETS[self.concept_kind] if self.epsilon is None else self.epsilon

    @property
    def erase_target_value(self) -> str:
        if self.erase_target is not None:
            return self.erase_target
        return method_named(self.method).erase_target

    @property
    def target_states_value(self) -> str:
        if self.target_states is not None:
            return self.target_states
        return "mapped"

    @property
    def target_eta_value(self) -> float:
        if self.target_eta is None:
            return ANCHOR_ETA_PRESETS.get(self.concept_kind, ANCHOR_ETA)
        return self.target_eta

    @property
    def alpha_value(self) -> float:
        return self.learning_rate if self.lagrangian_alpha is None else self.lagrangian_alpha

    @property
    def gate(self) -> str:
        return method_named(self.method).gate

    def adapter_config(self) -> AdapterConfig:
        return AdapterConfig(
            rank=self.rank,
            alpha=float(self.alpha or self.rank),
            slices=self.slices,
            families=self.families,
            layers=self.layers,
            gate=self.gate,
        )

    def with_kind(self, kind: str) -> EraseConfig:
        """This config for a concept of `kind`: its ε preset (unless `epsilon` is set) and its qkv slices preset
        (unless `slices` differ from the default Q+K; under the anchor target ANCHOR_SLICE_PRESETS first), and under
        the anchor target its L_attn weight (ANCHOR_ATTENTION_PRESETS, unless `attention_weight` differs from the
        default)."""
        slices = self.slices
        if slices == DEFAULT_SLICES:
            slices = SLICE_PRESETS.get(kind, slices)
            if self.erase_target_value == "anchor":
                slices = ANCHOR_SLICE_PRESETS.get(kind, slices)
        attention = self.attention_weight
        if self.erase_target_value == "anchor" and attention == EraseConfig.attention_weight:
            attention = ANCHOR_ATTENTION_PRESETS.get(kind, attention)
        return dataclasses.replace(self, concept_kind=kind, slices=slices, attention_weight=attention)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> EraseConfig:
        if "erase_target" not in data:  # written before erase targets existed: ESD on ∅, as it was trained
            data = {**data, "erase_target": "empty"}
        return config_from_dict(cls, data, tuple_fields=("slices", "families", "layers", "latent_size"))
