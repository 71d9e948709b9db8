"""Z-Image in diffusers' format: `ZImageTransformer2DModel` state-dict names and its `config.json`.

The reverse direction of `checkpoint_keys.comfy_names` (which reads diffusers names): the core's ComfyUI names
-> diffusers names, splitting the fused `attention.qkv` into `to_q | to_k | to_v` (rows in that order),
`attention.out` -> `to_out.0`, `q_norm`/`k_norm` -> `norm_q`/`norm_k`, and `x_embedder` / `final_layer` ->
`all_x_embedder.{p}-1` / `all_final_layer.{p}-1` (p = patch size; the frame patch is 1 for images).

Config facts (diffusers 0.42): the Q/K RMSNorms use eps 1e-5 and the timestep MLP's hidden layer is 1024 wide;
the feed-forward width is int(dim / 3 · 8); text and image streams pad to 32 tokens.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import torch

from ..model.checkpoint_keys import CheckpointError
from ..model.config import DiTConfig

DIFFUSERS_QK_NORM_EPS = 1e-5
DIFFUSERS_TIME_HIDDEN = 1024
DIFFUSERS_PAD_MULTIPLE = 32
_FUSED = re.compile(r"^(.*\.attention\.)qkv\.(weight|bias)$")


def diffusers_state_dict(state_dict: Mapping[str, torch.Tensor], patch_size: int = 2) -> dict[str, torch.Tensor]:
    """diffusers' `ZImageTransformer2DModel` names for a state dict with the core's (ComfyUI's) bare names.

    The q/k/v parts are views of the fused tensor (no copy)."""
    converted: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        fused = _FUSED.match(key)
        if fused:
            if value.shape[0] % 3:
                raise CheckpointError(f"{key} has {value.shape[0]} rows, not three equal q/k/v parts")
            for name, part in zip(("to_q", "to_k", "to_v"), value.chunk(3, dim=0), strict=True):
                converted[f"{fused[1]}{name}.{fused[2]}"] = part
            continue
        key = key.replace(".attention.out.", ".attention.to_out.0.")
        key = key.replace(".attention.q_norm.", ".attention.norm_q.")
        key = key.replace(".attention.k_norm.", ".attention.norm_k.")
        for module in ("x_embedder.", "final_layer."):
            if key.startswith(module):
                key = f"all_{module[:-1]}.{patch_size}-1.{key[len(module) :]}"
        converted[key] = value
    return converted


def config_from_diffusers(data: Mapping) -> DiTConfig:
    """The DiTConfig that computes what a diffusers `ZImageTransformer2DModel` with this `config.json` computes."""

    def value(name, default):
        return data.get(name, default)

    patches, frames = list(value("all_patch_size", [2])), list(value("all_f_patch_size", [1]))
    if len(patches) != 1 or frames != [1]:
        raise CheckpointError(
            f"transformer config has patch sizes {patches} / frame patches {frames}; ZErase runs"
            f" the single 2-D patch size of Z-Image (all_patch_size [2], all_f_patch_size [1])"
        )
    if value("siglip_feat_dim", None) is not None:
        raise CheckpointError(
            "transformer config sets siglip_feat_dim: this is Z-Image Omni (image-conditioned),"
            " not the text-to-image Z-Image"
        )
    dim, heads = int(value("dim", 3840)), int(value("n_heads", 30))
    if int(value("n_kv_heads", heads)) != heads:
        raise CheckpointError(
            f"transformer config has n_kv_heads {value('n_kv_heads', heads)} != n_heads {heads};"
            f" Z-Image attention has as many key/value heads as query heads"
        )
    if not value("qk_norm", True):
        raise CheckpointError("transformer config has qk_norm false; Z-Image normalises queries and keys")
    ffn_hidden = int(dim / 3 * 8)
    return DiTConfig(
        dim=dim,
        n_layers=int(value("n_layers", 30)),
        n_refiner_layers=int(value("n_refiner_layers", 2)),
        n_heads=heads,
        cap_feat_dim=int(value("cap_feat_dim", 2560)),
        in_channels=int(value("in_channels", 16)),
        patch_size=int(patches[0]),
        axes_dims=tuple(value("axes_dims", [32, 48, 48])),
        axes_lens=tuple(value("axes_lens", [1024, 512, 512])),
        rope_theta=float(value("rope_theta", 256.0)),
        time_scale=float(value("t_scale", 1000.0)),
        norm_eps=float(value("norm_eps", 1e-5)),
        ffn_multiple_of=ffn_hidden,
        ffn_dim_multiplier=ffn_hidden / dim,
        pad_tokens_multiple=DIFFUSERS_PAD_MULTIPLE,
        qk_norm_eps=DIFFUSERS_QK_NORM_EPS,
        time_hidden=DIFFUSERS_TIME_HIDDEN,
    )


def diffusers_config(config: DiTConfig) -> dict:
    """A diffusers `config.json` body for the core config (only configs diffusers can express)."""
    if config.ffn_hidden != int(config.dim / 3 * 8):
        raise CheckpointError(
            f"feed-forward width {config.ffn_hidden} is not diffusers' int(dim / 3 · 8) ="
            f" {int(config.dim / 3 * 8)} for dim {config.dim}"
        )
    if config.time_width != DIFFUSERS_TIME_HIDDEN or config.pad_tokens_multiple != DIFFUSERS_PAD_MULTIPLE:
        raise CheckpointError(
            f"timestep hidden width {config.time_width} / pad multiple {config.pad_tokens_multiple}:"
            f" diffusers fixes them at {DIFFUSERS_TIME_HIDDEN} / {DIFFUSERS_PAD_MULTIPLE}"
        )
    return {
        "all_patch_size": [config.patch_size],
        "all_f_patch_size": [1],
        "in_channels": config.in_channels,
        "dim": config.dim,
        "n_layers": config.n_layers,
        "n_refiner_layers": config.n_refiner_layers,
        "n_heads": config.n_heads,
        "n_kv_heads": config.n_heads,
        "norm_eps": config.norm_eps,
        "qk_norm": True,
        "cap_feat_dim": config.cap_feat_dim,
        "rope_theta": config.rope_theta,
        "t_scale": config.time_scale,
        "axes_dims": list(config.axes_dims),
        "axes_lens": list(config.axes_lens),
    }


__all__ = ["diffusers_state_dict", "config_from_diffusers", "diffusers_config"]
