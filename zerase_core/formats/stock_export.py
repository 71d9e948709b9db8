"""Stock-LoRA export of stream-pure erasures: the ComfyUI-native tensors and the exported file's name.

A stock LoRA applies to every token of a layer, so it computes what a gated erasure does only where the layer sees
text alone: adapters on the text-only `context_refiner`, or a `uce-text` edit of `cap_embedder.1`. Other erasures are
refused. `erasure_file.export_stock_lora` reads the erasure and writes the file.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import torch

from ..adapters.gated import KEY_PREFIX, AdapterConfig
from .erasure_info import UCE_DELTA_KEY, UCE_TEXT_METHOD, ErasureFileError, ErasureInfo

STOCK_SUFFIX = ".stock-lora.safetensors"
PathLike = str | os.PathLike[str]


def stock_path(path_in: Path, path_out: PathLike | None) -> Path:
    """`path_out`, whose name must end in STOCK_SUFFIX, or by default the input's name with that ending."""
    if path_out is None:
        stem = path_in.name[: -len(".safetensors")] if path_in.name.endswith(".safetensors") else path_in.name
        return path_in.with_name(stem + STOCK_SUFFIX)
    path_out = Path(path_out)
    if not path_out.name.endswith(STOCK_SUFFIX):
        raise ErasureFileError(
            f"the exported file's name must end in '{STOCK_SUFFIX}' so it is never taken for a "
            f"gated erasure; got {path_out.name}"
        )
    return path_out


def stock_lora_tensors(path: Path, info: ErasureInfo, tensors: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The keys `export_stock_lora` writes (its docstring gives the format); erasures that are not stream-pure raise."""
    if info.method == UCE_TEXT_METHOD:
        return {"diffusion_model.cap_embedder.1.diff": tensors[UCE_DELTA_KEY] * info.recommended_strength}
    _check_stream_pure(path, info.adapter_config())
    _check_gqa_slices(path, info)
    return _context_refiner_lora(info, tensors)


def _check_gqa_slices(path: Path, info: ErasureInfo) -> None:
    """ComfyUI maps diffusers-name `to_k` / `to_v` LoRA keys to dim-wide row blocks of the fused qkv
    (`comfy.utils.z_image_to_diffusers`); with GQA (Lumina-2) k and v are narrower, so only q slices export."""
    config = info.dit_config()
    wide = [name for name in info.adapter_config().slices if name != "q"]
    if config.kv_heads != config.n_heads and wide:
        raise ErasureFileError(
            f"{path} adapts the {'/'.join(wide)} rows of a {config.family} model, whose "
            f"{config.kv_heads} key/value heads are fewer than its {config.n_heads} query heads; "
            f"ComfyUI's LoRA loader places to_k / to_v as dim-wide blocks, so the stock LoRA would "
            f"land on the wrong rows. Only q-slice erasures of this model export; apply this one "
            f"with ZErase"
        )


def _check_stream_pure(path: Path, config: AdapterConfig) -> None:
    others = [family for family in config.families if family != "context_refiner"]
    if others:
        raise ErasureFileError(
            f"{path} cannot be a stock LoRA: it adapts {others} with gate {config.gate!r}. A stock LoRA applies to "
            f"every token of a layer, and joint `layers` mix text and image tokens (`noise_refiner` sees only image "
            f"tokens), so the export would be the ungated edit that collapses single-stream models (paper §2.2). "
            f"Only erasures on the text-only context_refiner (or uce-text) export; apply this one with ZErase"
        )
    if config.gate == "image":
        raise ErasureFileError(
            f"{path} has gate 'image' on the text-only context_refiner: its adapters never fire, "
            f"and a stock LoRA would apply them to every token; nothing sensible to export"
        )


def _context_refiner_lora(info: ErasureInfo, tensors: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """ComfyUI diffusers-name slice LoRA keys; alpha carries the recommended strength (loader strength 1 = it)."""
    config = info.adapter_config()
    alpha = torch.tensor(config.alpha * info.recommended_strength, dtype=torch.float32)
    stock = {}
    for key in sorted(tensors):
        if not key.endswith(".down"):
            continue
        path, name = key[len(KEY_PREFIX) : -len(".down")].rsplit(".", 1)  # context_refiner.{i}.attention.qkv, q
        target = f"diffusion_model.{path[: -len('qkv')]}to_{name}"  # diffusion_model.….attention.to_q
        stock[f"{target}.lora_A.weight"] = tensors[key]  # [r, in]
        stock[f"{target}.lora_B.weight"] = tensors[key[: -len(".down")] + ".up"]  # [out, r]
        stock[f"{target}.alpha"] = alpha.clone()
    return stock


__all__ = ["STOCK_SUFFIX", "stock_path", "stock_lora_tensors"]
