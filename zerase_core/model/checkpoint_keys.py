"""The key names of a NextDiT state dict: `normalize_keys` maps a prefixed or diffusers/official state dict to
ComfyUI's bare NextDiT names (fusing `to_q | to_k | to_v` into `qkv`).

What the keys say about the model is read in `checkpoint_detect` (which model it is) and `checkpoint_config` (its
DiTConfig); `checkpoint` reads, loads and saves.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import TypeVar

import torch

from .checkpoint_errors import CheckpointError, UnsupportedModelError

__all__ = ["CheckpointError", "UnsupportedModelError", "StateDict", "comfy_names", "normalize_keys", "strip_prefix"]

StateDict = dict[str, torch.Tensor]
_Value = TypeVar("_Value")


# ComfyUI's rule (`unet_prefix_from_state_dict`): a prefix counts when more than 5 keys carry it.
_PREFIXES = ("model.diffusion_model.", "diffusion_model.")
_FUSED_PART = re.compile(r"^((?:layers|noise_refiner|context_refiner)\.\d+\.attention)\.to_([qkv])\.(weight|bias)$")
_PATCH_MODULE = re.compile(r"^all_(x_embedder|final_layer)\.\d+-\d+\.")
_RENAMES = (
    (".attention.to_out.0.", ".attention.out."),
    (".attention.norm_q.", ".attention.q_norm."),
    (".attention.norm_k.", ".attention.k_norm."),
)
_DROPPED = ("norm_final.weight",)  # Lumina-2 leftover that nothing reads


def strip_prefix(state_dict: Mapping[str, _Value]) -> dict[str, _Value]:
    """Bare keys; in a full checkpoint only the diffusion model's keys are kept (VAE / text encoder dropped)."""
    for prefix in _PREFIXES:
        if sum(key.startswith(prefix) for key in state_dict) > 5:
            return {key[len(prefix) :]: value for key, value in state_dict.items() if key.startswith(prefix)}
    return dict(state_dict)


def normalize_keys(state_dict: Mapping[str, torch.Tensor]) -> StateDict:
    """ComfyUI's bare NextDiT names for a Z-Image state dict with a prefix or diffusers/official names.

    The input is not modified. Tensors are shared, except `attention.qkv.weight` built from diffusers'
    `to_q | to_k | to_v` (rows concatenated in that order).
    """
    return comfy_names(strip_prefix(state_dict))


def comfy_names(state_dict: StateDict) -> StateDict:
    """ComfyUI names for prefix-free keys; fuses to_q/to_k/to_v inside `state_dict`, popping each part as it goes."""
    from .lumina_keys import is_diffusers_lumina, lumina_comfy_names

    if is_diffusers_lumina(state_dict):  # diffusers' Lumina2Transformer2DModel names
        return lumina_comfy_names(state_dict)
    return _rename(_fuse_qkv(state_dict))


def _fuse_qkv(state_dict: StateDict) -> StateDict:
    """Replaces to_q/to_k/to_v by the fused qkv in place, popping the parts (no lingering copies)."""
    groups: dict[tuple[str, str], dict[str, str]] = {}
    for key in state_dict:
        match = _FUSED_PART.match(key)
        if match:
            groups.setdefault((match[1], match[3]), {})[match[2]] = key
    for (attention, kind), parts in sorted(groups.items()):
        missing = [f"to_{name}" for name in "qkv" if name not in parts]
        if missing:
            present = ", ".join(sorted(parts.values()))
            raise CheckpointError(
                f"partial diffusers-format attention: {present} present but {attention}."
                f"{'/'.join(missing)}.{kind} missing"
            )
        fused = f"{attention}.qkv.{kind}"
        if fused in state_dict:
            raise CheckpointError(
                f"mixed key formats: both {fused} (ComfyUI) and {attention}.to_q/to_k/to_v (diffusers) are present"
            )
        state_dict[fused] = torch.cat([state_dict.pop(parts[name]) for name in "qkv"], dim=0)
    return state_dict


def _rename(state_dict: StateDict) -> StateDict:
    renamed: StateDict = {}
    origin: dict[str, str] = {}
    for key, value in state_dict.items():
        if key in _DROPPED:
            continue
        new_key = _PATCH_MODULE.sub(r"\1.", key)
        for old, new in _RENAMES:
            new_key = new_key.replace(old, new)
        if new_key in renamed:
            raise CheckpointError(f"mixed key formats: {origin[new_key]} and {key} are both {new_key}")
        renamed[new_key] = value
        origin[new_key] = key
    return renamed


__all__ = ["CheckpointError", "UnsupportedModelError", "StateDict", "strip_prefix", "normalize_keys", "comfy_names"]
