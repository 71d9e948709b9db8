"""Erasure files: gated adapter tensors (`zerase.*`) plus one JSON metadata object under `zerase.erasure`.

A file holds one erasure: Z-Erase's text-gated LoRA (§2.3), whose delta H'·ΔW reaches only text rows, so it must
be applied through `AdapterSet` and never by a stock LoRA loader (none reads the `zerase.` prefix). Partial files
(training interrupted or chunked) also carry resume state under `zerase_state.*`. Reading validates the metadata
against the tensors (key set, shapes, finite values) so a forged or damaged file fails with a message, not later.

Several erasures on one model follow the paper's merge Δθ_mul = Σ_i w_i Δθ_i with w_i = 1/N (§2.9; "Simply
summing the weights often leads to over-erasure"): see `apply_erasures` (`adapters/stack.py`).

`export_stock_lora` writes ComfyUI-native keys only for stream-pure erasures (adapters on the text-only
`context_refiner`, or a `uce-text` edit of `cap_embedder.1`), where an ungated stock LoRA computes the same thing.

The metadata record `ErasureInfo` lives in `erasure_info`, the checks of tensors and base model in `erasure_checks`,
the stock-LoRA conversion in `stock_export`; this module re-exports their public names.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from ..adapters.gated import KEY_PREFIX, AdapterSet
from ..adapters.stack import ErasureStack, apply_erasures
from ..common.files import atomic_save_safetensors, read_safetensors
from .erasure_checks import STOCK_LORA_SUFFIXES, check_base, check_tensors, expected_shapes
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
PathLike = str | os.PathLike[str]


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
    check_tensors(path, info, tensors, state)
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
    check_tensors(path, info, adapter, state)
    return info, adapter, {key[len(STATE_PREFIX) :]: value for key, value in state.items()}


def load_erasure(path: PathLike, model: nn.Module, allow_other_base: bool = False) -> tuple[AdapterSet, ErasureInfo]:
    """An AdapterSet for `model` with the file's tensors, at the recommended strength; not attached."""
    path = Path(path)
    info, tensors, _ = read_erasure(path)
    if info.method == UCE_TEXT_METHOD:
        raise ErasureFileError(
            f"{path} is a uce-text erasure (a weight edit of cap_embedder.1, not gated adapters); "
            f"export it with export_stock_lora and load it as a LoRA"
        )
    check_base(path, info, model, allow_other_base)
    try:
        adapters = AdapterSet(model, info.adapter_config())
        adapters.import_tensors(tensors)
    except ValueError as error:
        raise ErasureFileError(f"{path} does not fit this model: {error}") from None
    adapters.set_strength(info.recommended_strength)
    return adapters, info


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
    "STOCK_LORA_SUFFIXES",
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
