"""Frozen configuration of a single-stream NextDiT, stored as JSON in safetensors metadata.

The fields mirror what ComfyUI's `NextDiT` needs. `kind` picks the family: "z-image" (`z_image_modulation=True`:
adaLN read from a 256-wide time embedding, learned pad tokens) or "lumina2" (Lumina-Image-2.0: SiLU→Linear adaLN
from a min(dim, 1024)-wide time embedding, GQA with `n_kv_heads`, no pad tokens, t not scaled). `turbo()` gives the
published Z-Image(-Turbo) settings (6.15B parameters), `lumina2()` Lumina-Image-2.0's (2.6B).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Any

from ..common.dataclass_dicts import config_from_dict

METADATA_KEY = "zerase.dit_config"
KINDS = {"z-image": "Z-Image / Z-Image-Turbo", "lumina2": "Lumina-Image-2.0"}


@dataclass(frozen=True)
class DiTConfig:
    dim: int = 3840  # hidden width of every token
    n_layers: int = 30  # joint (text+image) blocks: `layers.{i}`
    n_refiner_layers: int = 2  # blocks in each of `noise_refiner` and `context_refiner`
    n_heads: int = 30  # attention heads (MHA: kv heads = heads)
    cap_feat_dim: int = 2560  # width of the text encoder's features (Qwen3-4B: 2560)
    in_channels: int = 16  # latent channels (Flux VAE: 16)
    patch_size: int = 2
    axes_dims: tuple[int, ...] = (32, 48, 48)  # RoPE dims per axis (sequence, row, column); sum = head dim
    axes_lens: tuple[int, ...] = (1536, 512, 512)  # RoPE table sizes; informative only (positions are computed)
    rope_theta: float = 256.0
    time_scale: float = 1000.0  # the network sees t·1000 with t = 1 − sigma
    norm_eps: float = 1e-5
    ffn_multiple_of: int = 256
    ffn_dim_multiplier: float = 8 / 3
    pad_tokens_multiple: int = 32  # text and image streams are each padded to a multiple of this
    shift: float = 3.0  # flow-matching sigma shift used by the sampler
    qk_norm_eps: float | None = None  # eps of the per-head Q/K RMSNorms: None = torch's default, as ComfyUI;
    # diffusers' ZImageTransformer2DModel uses 1e-5
    time_hidden: int | None = None  # width of the timestep MLP's hidden layer: None = min(dim, 1024), as
    # ComfyUI; diffusers always uses 1024 (the same from dim 1024 up)
    kind: str = "z-image"  # "z-image" or "lumina2" (see the module docstring)
    n_kv_heads: int | None = None  # key/value heads (GQA); None = n_heads

    def __post_init__(self) -> None:
        positive = ("dim", "n_heads", "cap_feat_dim", "in_channels", "patch_size", "pad_tokens_multiple")
        for name in positive:
            if getattr(self, name) <= 0:
                raise ValueError(f"DiTConfig.{name} must be positive, got {getattr(self, name)}")
        for name in ("n_layers", "n_refiner_layers"):
            if getattr(self, name) < 0:
                raise ValueError(f"DiTConfig.{name} must be ≥ 0, got {getattr(self, name)}")
        if self.kind not in KINDS:
            raise ValueError(f"DiTConfig.kind must be one of {sorted(KINDS)}, got {self.kind!r}")
        if self.n_kv_heads is not None and (self.n_kv_heads <= 0 or self.n_heads % self.n_kv_heads):
            raise ValueError(f"DiTConfig.n_kv_heads={self.n_kv_heads} must divide n_heads={self.n_heads}")
        if self.kind == "lumina2" and self.pad_tokens_multiple != 1:
            raise ValueError(
                f"Lumina-2 has no pad tokens: pad_tokens_multiple must be 1, got {self.pad_tokens_multiple}"
            )
        if self.kind == "z-image" and self.dim < 256:
            # The timestep embedding is 256 wide and block adaLN reads min(dim, 256) of it (ComfyUI NextDiT).
            raise ValueError(f"DiTConfig.dim must be ≥ 256 (Z-Image modulation width), got {self.dim}")
        if self.dim % self.n_heads:
            raise ValueError(f"DiTConfig.dim={self.dim} is not divisible by n_heads={self.n_heads}")
        if sum(self.axes_dims) != self.head_dim or any(d % 2 for d in self.axes_dims):
            raise ValueError(
                f"DiTConfig.axes_dims={self.axes_dims} must be even and sum to the head dim {self.head_dim}"
            )
        object.__setattr__(self, "axes_dims", tuple(int(d) for d in self.axes_dims))
        object.__setattr__(self, "axes_lens", tuple(int(d) for d in self.axes_lens))

    @property
    def head_dim(self) -> int:
        return self.dim // self.n_heads

    @property
    def kv_heads(self) -> int:
        return self.n_kv_heads if self.n_kv_heads is not None else self.n_heads

    @property
    def pad_tokens(self) -> bool:
        """Whether the model has learned `cap_pad_token` / `x_pad_token` (Z-Image) or none (Lumina-2)."""
        return self.kind == "z-image"

    @property
    def ffn_hidden(self) -> int:
        hidden = int(self.ffn_dim_multiplier * self.dim)
        return self.ffn_multiple_of * ((hidden + self.ffn_multiple_of - 1) // self.ffn_multiple_of)

    @property
    def time_width(self) -> int:
        return self.time_hidden if self.time_hidden is not None else min(self.dim, 1024)

    @property
    def adaln_width(self) -> int:
        """Width of the time embedding that every adaLN reads: min(dim, 256) (Z-Image), min(dim, 1024) (Lumina-2)."""
        return min(self.dim, 256) if self.kind == "z-image" else self.time_width

    @classmethod
    def turbo(cls, **overrides) -> DiTConfig:
        """Z-Image / Z-Image-Turbo (same architecture; only the weights differ)."""
        return cls(**overrides)

    @classmethod
    def lumina2(cls, **overrides) -> DiTConfig:
        """Lumina-Image-2.0 (Alpha-VLLM): dim 2304, 26 layers, 24 heads over 8 kv heads, Gemma-2-2B features."""
        widths = dict(dim=2304, n_layers=26, n_refiner_layers=2, n_heads=24, n_kv_heads=8, cap_feat_dim=2304)
        positions = dict(axes_dims=(32, 32, 32), axes_lens=(300, 512, 512), rope_theta=10000.0, time_scale=1.0)
        feed_forward = dict(ffn_multiple_of=256, ffn_dim_multiplier=4.0)
        family = dict(kind="lumina2", pad_tokens_multiple=1, shift=6.0)  # no pad tokens; ComfyUI's sigma shift
        settings: dict[str, Any] = {**widths, **positions, **feed_forward, **family, **overrides}
        return cls(**settings)

    @property
    def family(self) -> str:
        return KINDS[self.kind]

    def to_dict(self) -> dict:
        data = dataclasses.asdict(self)
        data["axes_dims"] = list(self.axes_dims)
        data["axes_lens"] = list(self.axes_lens)
        return data

    @classmethod
    def from_dict(cls, data: dict) -> DiTConfig:
        return config_from_dict(cls, data, tuple_fields=("axes_dims", "axes_lens"))

    def to_metadata(self) -> dict[str, str]:
        return {METADATA_KEY: json.dumps(self.to_dict())}

    @classmethod
    def from_metadata(cls, metadata: dict[str, str] | None) -> DiTConfig | None:
        if not metadata or METADATA_KEY not in metadata:
            return None
        try:
            data = json.loads(metadata[METADATA_KEY])
        except json.JSONDecodeError as error:
            raise ValueError(f"metadata '{METADATA_KEY}' is not valid JSON: {error}") from None
        return cls.from_dict(data)
