"""What an erasure file must satisfy: its tensors against its metadata (key set, shapes, dtype, finite values), and
its base model against the model it is applied to."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from ..adapters.gated import KEY_PREFIX
from ..model.checkpoint import fingerprint
from ..model.config import KINDS, DiTConfig
from ..model.layout import FAMILIES
from .erasure_info import UCE_DELTA_KEY, UCE_TEXT_METHOD, ErasureFileError, ErasureInfo

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


def check_tensors(
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


def check_base(path: Path, info: ErasureInfo, model: nn.Module, allow_other_base: bool) -> None:
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


__all__ = ["STOCK_LORA_SUFFIXES", "expected_shapes", "check_tensors", "check_base"]
