"""Erasure files: gated adapter tensors (`zerase.*`) plus one JSON metadata object under `zerase.erasure`.

A file holds one erasure: Z-Erase's text-gated LoRA (§2.3), whose delta H'·ΔW reaches only text rows, so it must
be applied through `AdapterSet` and never by a stock LoRA loader (none reads the `zerase.` prefix). Partial files
(training interrupted or chunked) also carry resume state under `zerase_state.*`. Reading validates the metadata
against the tensors (key set, shapes, finite values) so a forged or damaged file fails with a message, not later.

Several erasures on one model follow the paper's merge Δθ_mul = Σ_i w_i Δθ_i with w_i = 1/N (§2.9; "Simply
summing the weights often leads to over-erasure"): see `apply_erasures`.

`export_stock_lora` writes ComfyUI-native keys only for stream-pure erasures (adapters on the text-only
`context_refiner`, or a `uce-text` edit of `cap_embedder.1`), where an ungated stock LoRA computes the same thing.

The metadata record `ErasureInfo` lives in `erasure_info`, the stock-LoRA conversion in `stock_export`; this module
re-exports their public names.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from torch import nn

from ..adapters.gated import KEY_PREFIX, AdapterSet
from ..common.files import atomic_save_safetensors, read_safetensors
from ..common.limits import check_strength
from ..model.checkpoint import fingerprint
from ..model.config import KINDS, DiTConfig
from ..model.layout import FAMILIES
from .erasure_info import (
    ERASURE_FORMAT_VERSION,
    METADATA_KEY,
    UCE_DELTA_KEY,
    UCE_TEXT_METHOD,
    ErasureFileError,
    ErasureInfo,
    adapter_dict,
)
from .stock_export import STOCK_SUFFIX, stock_lora_tensors, stock_path  # noqa: F401 (STOCK_SUFFIX re-exported)

logger = logging.getLogger(__name__)

STATE_PREFIX = "zerase_state."  # resume state (optimizer moments, RNG); partial files only
# Key endings ComfyUI's loaders read (comfy/weight_adapter, comfy/lora.py); none may appear in an erasure file.
STOCK_LORA_SUFFIXES = (
    ".lora_up.weight",
    ".lora_down.weight",
    ".lora_mid.weight",
    "_lora.up.weight",
    "_lora.down.weight",
    ".lora_A.weight",
    ".lora_B.weight",
    ".lora.up.weight",
    ".lora.down.weight",
    ".lora_A",
    ".lora_B",
    ".alpha",
    ".dora_scale",
    ".diff",
    ".diff_b",
    ".set_weight",
    ".w_norm",
    ".b_norm",
    ".hada_w1_a",
    ".lokr_w1",
    ".oft_blocks",
)
PathLike = str | os.PathLike[str]
# DiTConfig fields that change tensor shapes: a mismatch is refused even with allow_other_base.
_SHAPE_FIELDS = (
    "dim",
    "n_layers",
    "n_refiner_layers",
    "n_heads",
    "cap_feat_dim",
    "in_channels",
    "patch_size",
    "ffn_multiple_of",
    "ffn_dim_multiplier",
)


# ---------------------------------------------------------------- tensors vs metadata


def expected_shapes(info: ErasureInfo) -> dict[str, tuple[int, ...]]:
    """Erasure tensor keys and shapes that the metadata implies (module paths as `adapters.target_paths`)."""
    config = info.dit_config()
    if info.method == UCE_TEXT_METHOD:
        return {UCE_DELTA_KEY: (config.dim, config.cap_feat_dim)}
    adapter = info.adapter_config()
    counts = {
        "layers": config.n_layers,
        "context_refiner": config.n_refiner_layers,
        "noise_refiner": config.n_refiner_layers,
    }
    shapes: dict[str, tuple[int, ...]] = {}
    for family in FAMILIES:
        if family not in adapter.families:
            continue
        for index in range(counts[family]):
            if family == "layers" and adapter.layers is not None and index not in adapter.layers:
                continue
            for name in adapter.slices:  # qkv rows: q dim wide, k and v kv_heads·head_dim (GQA)
                rows = config.dim if name == "q" else config.kv_heads * config.head_dim
                shapes[f"{KEY_PREFIX}{family}.{index}.attention.qkv.{name}.down"] = (adapter.rank, config.dim)
                shapes[f"{KEY_PREFIX}{family}.{index}.attention.qkv.{name}.up"] = (rows, adapter.rank)
    if not shapes:
        raise ErasureFileError(f"the adapter {info.adapter} targets no module of the base model {info.base_config}")
    return shapes


def _check_tensors(
    path: Path, info: ErasureInfo, tensors: Mapping[str, torch.Tensor], state: Mapping[str, torch.Tensor]
) -> None:
    expected = expected_shapes(info)
    missing, unexpected = sorted(set(expected) - set(tensors)), sorted(set(tensors) - set(expected))
    if missing or unexpected:
        raise ErasureFileError(
            f"{path}: tensors do not match the metadata (method {info.method!r}, adapter "
            f"{info.adapter}): missing {missing[:4]}, unexpected {unexpected[:4]}"
        )
    if state and not info.partial:
        raise ErasureFileError(
            f"{path}: resume state ({sorted(state)[:3]}) is only allowed in a partial file (metadata partial = false)"
        )
    for key, tensor in tensors.items():
        if tuple(tensor.shape) != expected[key]:
            raise ErasureFileError(
                f"{path}: {key} has shape {tuple(tensor.shape)} but the metadata (rank "
                f"{info.adapter.get('rank')}, dim {info.base_config['dim']}) says {expected[key]}"
            )
        if not tensor.is_floating_point():
            raise ErasureFileError(f"{path}: {key} has dtype {tensor.dtype}; adapter tensors are floating point")
    for key, tensor in [*tensors.items(), *state.items()]:
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise ErasureFileError(f"{path}: {key} contains NaN or inf values (a diverged or damaged erasure)")


# ---------------------------------------------------------------- save / read / load


def save_erasure(
    path: PathLike,
    adapters: AdapterSet | Mapping[str, torch.Tensor],
    info: ErasureInfo,
    extra_tensors: Mapping[str, torch.Tensor] | None = None,
) -> Path:
    """Atomically write an erasure file; `adapters` is an AdapterSet, or for uce-text {UCE_DELTA_KEY: delta}.

    Args:
        extra_tensors: resume state (optimizer moments, RNG state), stored as `zerase_state.<name>`; partial only.
    """
    path = Path(path)
    if path.suffix != ".safetensors":
        raise ErasureFileError(f"erasure files are .safetensors; got {path}")
    if isinstance(adapters, AdapterSet):
        if adapter_dict(adapters.config) != info.adapter:
            raise ErasureFileError(
                f"info.adapter {info.adapter} differs from the AdapterSet's config {adapter_dict(adapters.config)}"
            )
        tensors = adapters.export_tensors()
    else:
        tensors = {key: value.detach().cpu() for key, value in adapters.items()}
    state = {}
    for name, value in (extra_tensors or {}).items():
        if not name or name.endswith(STOCK_LORA_SUFFIXES):
            raise ErasureFileError(f"resume-state name {name!r} is empty or ends like a stock LoRA key")
        state[STATE_PREFIX + name] = value.detach().cpu()
    _check_tensors(path, info, tensors, state)
    atomic_save_safetensors({**tensors, **state}, path, metadata=info.to_metadata())
    logger.info("saved erasure %s (%s, %d/%d steps)", path, ", ".join(info.concepts), info.steps_done, info.steps_total)
    return path


def read_erasure(path: PathLike) -> tuple[ErasureInfo, dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """(info, adapter tensors `zerase.*`, resume state with the `zerase_state.` prefix removed), all validated."""
    path = Path(path)
    tensors, metadata = read_safetensors(path, ErasureFileError, "erasure file")
    if METADATA_KEY not in metadata:
        stock = next(
            (key for key in tensors if key.endswith(STOCK_LORA_SUFFIXES) or key.startswith("lora_unet_")), None
        )
        if stock is not None:
            raise ErasureFileError(
                f"{path} is not a ZErase erasure file: it looks like a stock LoRA (key {stock}); "
                f"load it with ComfyUI's LoraLoaderModelOnly instead"
            )
        raise ErasureFileError(
            f"{path} is not a ZErase erasure file: it has no '{METADATA_KEY}' metadata "
            f"({len(tensors)} tensors such as {list(tensors)[:3]})"
        )
    try:
        info = ErasureInfo.from_metadata(metadata)
    except ErasureFileError as error:
        raise ErasureFileError(f"{path}: {error}") from None
    adapter = {key: value for key, value in tensors.items() if key.startswith(KEY_PREFIX)}
    state = {key: value for key, value in tensors.items() if key.startswith(STATE_PREFIX)}
    stray = sorted(set(tensors) - set(adapter) - set(state))
    if stray:
        raise ErasureFileError(f"{path}: keys outside '{KEY_PREFIX}' and '{STATE_PREFIX}': {stray[:4]}")
    _check_tensors(path, info, adapter, state)
    return info, adapter, {key[len(STATE_PREFIX) :]: value for key, value in state.items()}


def _check_base(path: Path, info: ErasureInfo, model: nn.Module, allow_other_base: bool) -> None:
    config = getattr(model, "config", None)
    if isinstance(config, DiTConfig):
        stored, actual = info.base_config, config.to_dict()
        made_for = stored.get("kind", "z-image")
        if made_for != config.kind:
            raise ErasureFileError(
                f"{path} was made for {KINDS.get(made_for, made_for)} (base fingerprint "
                f"{info.base_fingerprint}) but this model is {config.family} (fingerprint "
                f"{fingerprint(model)}); an erasure only applies to the model family it was "
                f"trained on, with or without allow_other_base"
            )
        wrong = [
            f"{name} {stored[name]} (file) vs {actual[name]} (model)"
            for name in _SHAPE_FIELDS
            if stored[name] != actual[name]
        ]
        if wrong:
            raise ErasureFileError(
                f"{path} was made for a model of another shape: {'; '.join(wrong)}. Its adapters "
                f"cannot fit this model, with or without allow_other_base"
            )
        other = [name for name in stored if stored[name] != actual[name]]
        if other and not allow_other_base:
            raise ErasureFileError(
                f"{path} was made for a base model with other settings ({other}); pass "
                f"allow_other_base=True to apply it anyway"
            )
    found = fingerprint(model)
    if found != info.base_fingerprint and not allow_other_base:
        raise ErasureFileError(
            f"{path} was trained on base model {info.base_fingerprint}, but this model's "
            f"fingerprint is {found}; pass allow_other_base=True to apply it anyway (e.g. to a "
            f"fine-tune of the same base; erasure strength may differ)"
        )


def load_erasure(path: PathLike, model: nn.Module, allow_other_base: bool = False) -> tuple[AdapterSet, ErasureInfo]:
    """An AdapterSet for `model` with the file's tensors, at the recommended strength; not attached."""
    path = Path(path)
    info, tensors, _ = read_erasure(path)
    if info.method == UCE_TEXT_METHOD:
        raise ErasureFileError(
            f"{path} is a uce-text erasure (a weight edit of cap_embedder.1, not gated adapters); "
            f"export it with export_stock_lora and load it as a LoRA"
        )
    _check_base(path, info, model, allow_other_base)
    try:
        adapters = AdapterSet(model, info.adapter_config())
        adapters.import_tensors(tensors)
    except ValueError as error:
        raise ErasureFileError(f"{path} does not fit this model: {error}") from None
    adapters.set_strength(info.recommended_strength)
    return adapters, info


# ---------------------------------------------------------------- several erasures


def _strength_of(adapters: AdapterSet) -> float:
    strengths = {adapter.strength for adapter in adapters.each()}
    if len(strengths) != 1:
        raise ValueError(f"adapter set has mixed strengths {sorted(strengths)}; pass an explicit strength")
    return strengths.pop()


class ErasureStack:
    """Several erasures on one model, Δθ = Σ_i s_i·Δθ_i; `detach()` (or leaving a `with`) removes them."""

    def __init__(self, model: nn.Module, entries: Sequence[tuple[AdapterSet, float | None]]):
        if not entries:
            raise ValueError("apply_erasures needs at least one (AdapterSet, strength) entry")
        count = len(entries)
        self.sets = [adapters for adapters, _ in entries]
        self._previous = [_strength_of(adapters) for adapters in self.sets]
        self.strengths = [
            check_strength(previous / count if strength is None else strength, f"strength of erasure {index + 1}")
            for index, (previous, (_, strength)) in enumerate(zip(self._previous, entries, strict=True))
        ]
        attached: list[AdapterSet] = []
        try:
            for adapters, strength in zip(self.sets, self.strengths, strict=True):
                adapters.set_strength(strength)
                attached.append(adapters.attach(model))
        except BaseException:
            for adapters in reversed(attached):
                adapters.detach()
            self._restore_strengths()
            raise

    def _restore_strengths(self) -> None:
        for adapters, previous in zip(self.sets, self._previous, strict=True):
            adapters.set_strength(previous)

    def detach(self) -> None:
        """Detach in reverse order of attaching and give each set back the strength it had before."""
        for adapters in reversed(self.sets):
            if adapters.attached:
                adapters.detach()
        self._restore_strengths()

    def __enter__(self) -> ErasureStack:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.detach()


def apply_erasures(model: nn.Module, entries: Sequence[tuple[AdapterSet, float | None]]) -> ErasureStack:
    """Attach N erasures to `model` at once, merged as in the paper (§2.9): Δθ = Σ_i w_i·Δθ_i, w_i = 1/N.

    A `None` strength means 1/N × the set's current strength, which `load_erasure` sets to the file's
    recommended strength: each file keeps its own calibration, and the sum stays a convex combination (summing at
    full strength over-erases). An explicit strength is used as-is, not divided by N.
    """
    return ErasureStack(model, entries)


# ---------------------------------------------------------------- stock LoRA export


def export_stock_lora(path_in: PathLike, path_out: PathLike | None = None) -> Path:
    """Write a stream-pure erasure as a file ComfyUI's LoraLoaderModelOnly reads, at strength 1 = recommended.

    context_refiner adapters become slice LoRAs under diffusers names (`diffusion_model.context_refiner.{i}.
    attention.to_q.lora_A.weight` [r, in], `.lora_B.weight` [out, r], `.alpha` = alpha × recommended strength), which
    ComfyUI maps onto rows of the fused qkv; ComfyUI adds strength·(alpha/r)·B·A. A uce-text edit becomes the exact
    full-rank patch `diffusion_model.cap_embedder.1.diff` = recommended strength × delta [out, in] (ComfyUI adds
    strength·diff): no SVD truncation, and cap_embedder.1 is small (≈39 MB in fp32 at Z-Image size).
    The output name must end in `.stock-lora.safetensors` (default: the input's name with that ending).
    """
    path_in = Path(path_in)
    path_out = stock_path(path_in, path_out)
    info, tensors, _ = read_erasure(path_in)
    stock = stock_lora_tensors(path_in, info, tensors)
    source = {
        "method": info.method,
        "concepts": list(info.concepts),
        "base_fingerprint": info.base_fingerprint,
        "strength_baked_in": info.recommended_strength,
        "source": path_in.name,
    }
    atomic_save_safetensors(stock, path_out, metadata={"zerase.exported_from": json.dumps(source)})
    logger.info("exported %s as stock LoRA %s", path_in, path_out)
    return path_out


__all__ = [
    "ERASURE_FORMAT_VERSION",
    "METADATA_KEY",
    "STATE_PREFIX",
    "UCE_TEXT_METHOD",
    "UCE_DELTA_KEY",
    "ErasureFileError",
    "ErasureInfo",
    "ErasureStack",
    "adapter_dict",
    "expected_shapes",
    "save_erasure",
    "read_erasure",
    "load_erasure",
    "apply_erasures",
    "export_stock_lora",
]
