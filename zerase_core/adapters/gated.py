"""Stream-gated low-rank adapters (Z-Erase §2.3): H' = H·W + S·H·ΔW, with S a per-token gate.

A `GatedLoRA` sits beside a frozen Linear (the fused `attention.qkv` included: its q, k and v row blocks are
separate targets, each with its own low-rank pair). The gate comes from the active `TokenLayout` and the block
family the Linear belongs to: policy `text` (the paper) adds the delta only at text-stream rows, `image` only at
image-stream rows, `all` everywhere (plain LoRA, which collapses single-stream models). The delta is never merged
into W: the gate depends on the tokens.

Attach/detach is one reversible place (`AdapterSet.attach` / `detach`, over `forward_wraps`): the Linear's
`forward` is wrapped by an instance attribute and restored on detach, so the model's own parameters and state-dict
keys never change; the ComfyUI bridge calls the same two functions from a PatcherInjection. The frozen teacher is
the same model with the adapters disabled (`AdapterSet.disabled()`), never a second copy of the weights.
"""

from __future__ import annotations

import math
import re
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, cast

import torch
from torch import nn

from ..common.limits import check_alpha, check_strength
from ..model.layout import FAMILIES, current_layout
from .forward_wraps import unwrap_forwards, wrap_forward

GATES = ("text", "image", "all")
SLICES = ("q", "k", "v")
TARGET_PRESETS = {"qk": ("q", "k"), "qkv": ("q", "k", "v"), "q": ("q",), "k": ("k",), "v": ("v",)}
KEY_PREFIX = "zerase."  # ComfyUI's LoRA loaders match no key with this prefix: files are never applied ungated


@dataclass(frozen=True)
class AdapterConfig:
    rank: int = 8
    alpha: float = 8.0  # delta scale = alpha / rank (paper default: alpha = rank)
    slices: tuple[str, ...] = ("q", "k")  # rows of the fused qkv to adapt (the released checkpoint: Q+K)
    families: tuple[str, ...] = ("layers",)  # block families to adapt (default: every joint layer)
    layers: tuple[int, ...] | None = None  # joint-layer indices, None = all
    gate: str = "text"

    def __post_init__(self) -> None:
        if not 1 <= self.rank <= 256:
            raise ValueError(f"rank must be in 1..256, got {self.rank}")
        check_alpha(self.alpha)
        if not self.slices or any(s not in SLICES for s in self.slices):
            raise ValueError(f"slices {self.slices} must be a non-empty subset of {SLICES}")
        if not self.families or any(f not in FAMILIES for f in self.families):
            raise ValueError(f"families {self.families} must be a non-empty subset of {FAMILIES}")
        if self.gate not in GATES:
            raise ValueError(f"gate {self.gate!r} must be one of {GATES}")
        object.__setattr__(self, "slices", tuple(s for s in SLICES if s in self.slices))

    @property
    def scale(self) -> float:
        return self.alpha / self.rank


class GatedLoRA(nn.Module):
    """Low-rank deltas for some of q/k/v rows of a fused projection, added only where the gate is open."""

    def __init__(
        self,
        in_features: int,
        width: int | tuple[int, int, int],
        config: AdapterConfig,
        family: str,
        generator: torch.Generator | None = None,
    ):
        """`generator` draws the down-projections' initial values (default: torch's global generator)."""
        super().__init__()
        # width: rows of each of q, k, v (one int when equal; GQA's k and v are narrower than q)
        widths = (width,) * 3 if isinstance(width, int) else tuple(width)
        self.family, self.gate_policy, self.width, self.widths = family, config.gate, widths[0], widths
        self.slices = config.slices
        self.rank_scale = config.scale
        self.down = nn.ParameterDict()
        self.up = nn.ParameterDict()
        for name in self.slices:
            down = torch.empty(config.rank, in_features)
            nn.init.kaiming_uniform_(down, a=math.sqrt(5), generator=generator)
            self.down[name] = nn.Parameter(down)
            self.up[name] = nn.Parameter(torch.zeros(widths[SLICES.index(name)], config.rank))  # identity at init
        self.enabled = True
        self.strength = 1.0

    def hidden(self, x: torch.Tensor) -> torch.Tensor:
        """(B, L, in) -> (B, L, rank·slices): the down-projections of every adapted slice in one matmul."""
        if len(self.slices) > 1:
            down = torch.cat([self.down[name] for name in self.slices])
        else:
            down = self.down[self.slices[0]]
        return x.to(down.dtype) @ down.t()

    def gate(self, device) -> torch.Tensor | None:
        """(B, L, 1) bool of rows that receive the delta, or None for policy `all`."""
        if self.gate_policy == "all":
            return None
        layout = current_layout()
        if layout is None:
            raise RuntimeError(
                "a gated adapter ran outside a layout-aware forward; call the model through ZImageDiT.forward "
                "or the ComfyUI bridge so the token layout is known"
            )
        if self.gate_policy == "text":
            return layout.text_mask(self.family, device).unsqueeze(-1)
        return layout.image_mask(self.family, device).unsqueeze(-1)

    def add_delta(self, x: torch.Tensor, base_output: torch.Tensor) -> torch.Tensor:
        if not self.enabled or self.strength == 0:
            return base_output
        hidden = self.hidden(x)
        gate = self.gate(x.device)
        if gate is not None:
            if gate.shape[:2] != base_output.shape[:2]:
                raise RuntimeError(
                    f"layout gives {tuple(gate.shape[:2])} rows but the {self.family} input has "
                    f"{tuple(base_output.shape[:2])}"
                )
            # The gate closes the rank-r hidden rows (where, not multiply: closed rows get exactly zero delta and
            # no gradient, even from a NaN); so every full-width op below is an add on the adapted slices only.
            hidden = torch.where(gate, hidden, 0.0)
        hidden = hidden * (self.rank_scale * self.strength)
        rank = hidden.shape[-1] // len(self.slices)
        parts = dict(zip(self.slices, hidden.split(rank, dim=-1), strict=True))
        blocks = base_output.split(self.widths, dim=-1)
        return torch.cat(
            [
                block + (parts[name] @ self.up[name].t()).to(block.dtype) if name in parts else block
                for name, block in zip(SLICES, blocks, strict=True)
            ],
            dim=-1,
        )


def _qkv_widths(attention: Any, linear: nn.Linear) -> int | tuple[int, int, int]:
    """Rows of q, k and v in a fused qkv: the core's `widths`, ComfyUI's heads × head_dim (GQA: fewer kv heads).
    `attention` is either attention module, read by its attributes."""
    widths = getattr(attention, "widths", None)
    if widths is None and hasattr(attention, "n_local_kv_heads"):  # ComfyUI's JointAttention
        kv = attention.n_local_kv_heads * attention.head_dim
        widths = (attention.n_local_heads * attention.head_dim, kv, kv)
    return tuple(widths) if widths is not None else linear.out_features // 3


def _family_of(path: str) -> str:
    return path.split(".", 1)[0]


def target_paths(model: nn.Module, config: AdapterConfig) -> list[str]:
    """Module paths (ComfyUI names, e.g. `layers.3.attention.qkv`) that the config adapts."""
    paths = []
    for path, _ in model.named_modules():
        match = re.fullmatch(r"(layers|context_refiner|noise_refiner)\.(\d+)\.attention\.qkv", path)
        if not match or match.group(1) not in config.families:
            continue
        if match.group(1) == "layers" and config.layers is not None and int(match.group(2)) not in config.layers:
            continue
        paths.append(path)
    if not paths:
        raise ValueError(f"no adapter targets in the model for {config}")
    return paths


class AdapterSet(nn.Module):
    """All gated adapters of one erasure; attach to a model, detach, enable/disable, set strength."""

    def __init__(self, model: nn.Module, config: AdapterConfig, generator: torch.Generator | None = None):
        super().__init__()
        self.config = config
        self.adapters = nn.ModuleDict()
        self.paths: list[str] = target_paths(model, config)
        for path in self.paths:
            linear = cast(nn.Linear, model.get_submodule(path))  # target_paths names qkv projections only
            width = _qkv_widths(model.get_submodule(path.rsplit(".", 1)[0]), linear)
            self.adapters[self._key(path)] = GatedLoRA(linear.in_features, width, config, _family_of(path), generator)
        self._attached: list[tuple[nn.Module, object]] = []

    @staticmethod
    def _key(path: str) -> str:
        return path.replace(".", "__")

    def adapter(self, path: str) -> GatedLoRA:
        return cast(GatedLoRA, self.adapters[self._key(path)])

    def each(self) -> list[GatedLoRA]:
        """Every adapter, in the order of `paths`."""
        return [self.adapter(path) for path in self.paths]

    def attach(self, model: nn.Module) -> AdapterSet:
        if self._attached:
            raise RuntimeError("adapters are already attached; detach them first")
        for path in self.paths:
            adapter = self.adapter(path)
            self._attached.append(
                wrap_forward(
                    model.get_submodule(path),
                    lambda original, _adapter=adapter: lambda x: _adapter.add_delta(x, original(x)),
                )
            )
        return self

    def detach(self) -> None:
        """Restore every wrapped forward; stacked sets must be detached in reverse order of attaching."""
        unwrap_forwards(self._attached)
        self._attached = []

    @property
    def attached(self) -> bool:
        return bool(self._attached)

    def set_enabled(self, enabled: bool) -> None:
        for adapter in self.each():
            adapter.enabled = enabled

    def set_gate(self, policy: str) -> None:
        """The gate policy of every adapter (`text`, `image` or `all`); the benchmark compares them on one step."""
        if policy not in GATES:
            raise ValueError(f"gate {policy!r} must be one of {GATES}")
        for adapter in self.each():
            adapter.gate_policy = policy

    def set_strength(self, strength: float) -> None:
        strength = check_strength(strength)
        for adapter in self.each():
            adapter.strength = strength

    @contextmanager
    def disabled(self):
        """The frozen teacher: the same model, adapters off."""
        previous = [adapter.enabled for adapter in self.each()]
        self.set_enabled(False)
        try:
            yield
        finally:
            for adapter, state in zip(self.each(), previous, strict=True):
                adapter.enabled = state

    def export_tensors(self) -> dict[str, torch.Tensor]:
        """Tensors under keys no stock LoRA loader reads: `zerase.<module path>.<slice>.down|up`."""
        tensors = {}
        for path in self.paths:
            adapter = self.adapter(path)
            for name in adapter.slices:
                tensors[f"{KEY_PREFIX}{path}.{name}.down"] = adapter.down[name].detach().float().cpu()
                tensors[f"{KEY_PREFIX}{path}.{name}.up"] = adapter.up[name].detach().float().cpu()
        return tensors

    def import_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        expected = self.export_tensors()
        missing = sorted(set(expected) - set(tensors))
        unexpected = sorted(set(tensors) - set(expected))
        if missing or unexpected:
            raise ValueError(
                f"adapter tensors do not match the model: missing {missing[:5]}, unexpected {unexpected[:5]}"
            )
        with torch.no_grad():
            for path in self.paths:
                adapter = self.adapter(path)
                for name in adapter.slices:
                    for kind, store in (("down", adapter.down), ("up", adapter.up)):
                        value = tensors[f"{KEY_PREFIX}{path}.{name}.{kind}"]
                        if value.shape != store[name].shape:
                            raise ValueError(
                                f"{path}.{name}.{kind} has shape {tuple(value.shape)}, "
                                f"the model needs {tuple(store[name].shape)}"
                            )
                        store[name].copy_(value)
