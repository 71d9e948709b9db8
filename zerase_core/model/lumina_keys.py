"""Lumina-Image-2.0 in diffusers' format: `Lumina2Transformer2DModel` names and `config.json`, both directions.

ComfyUI (core) name                         diffusers name
t_embedder.mlp.0 / mlp.2                    time_caption_embed.timestep_embedder.linear_1 / linear_2
cap_embedder.0 / .1                         time_caption_embed.caption_embedder.0 / .1
{block}.attention.qkv (rows q | k | v)      {block}.attn.to_q | to_k | to_v (k, v: n_kv_heads·head_dim rows each)
{block}.attention.out / q_norm / k_norm     {block}.attn.to_out.0 / norm_q / norm_k
{block}.adaLN_modulation.1                  {block}.norm1.linear            (modulated blocks)
{block}.attention_norm1                     {block}.norm1.norm (modulated) / {block}.norm1 (context refiner)
{block}.attention_norm2                     {block}.norm2
{block}.feed_forward.w1 / w2 / w3           {block}.feed_forward.linear_1 / linear_2 / linear_3
final_layer.adaLN_modulation.1 / .linear    norm_out.linear_1 / norm_out.linear_2
x_embedder, ffn_norm1, ffn_norm2            unchanged

Config facts (diffusers 0.42): the Q/K RMSNorms use eps 1e-5 (ComfyUI: torch's default); RoPE theta is fixed at
10000; the feed-forward width is `ffn_dim_multiplier`·4·dim (None = 4·dim) rounded up to `multiple_of`; the
network reads t = 1 − sigma unscaled and returns −(ComfyUI's output).
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import torch

from .checkpoint_errors import CheckpointError
from .config import DiTConfig

DIFFUSERS_QK_NORM_EPS = 1e-5
DIFFUSERS_ROPE_THETA = 10000.0
_BLOCK = r"^((?:layers|noise_refiner|context_refiner)\.\d+)\."
# (ComfyUI name, diffusers name) of the renamed modules: the table above, top-level modules then block modules
_NAMES = (
    ("t_embedder.mlp.0.", "time_caption_embed.timestep_embedder.linear_1."),
    ("t_embedder.mlp.2.", "time_caption_embed.timestep_embedder.linear_2."),
    ("cap_embedder.", "time_caption_embed.caption_embedder."),
    ("final_layer.adaLN_modulation.1.", "norm_out.linear_1."),
    ("final_layer.linear.", "norm_out.linear_2."),
)
_BLOCK_NAMES = (
    ("attention.out.", "attn.to_out.0."),
    ("attention.q_norm.", "attn.norm_q."),
    ("attention.k_norm.", "attn.norm_k."),
    ("adaLN_modulation.1.", "norm1.linear."),
    ("attention_norm1.", "norm1.norm."),
    ("attention_norm2.", "norm2."),
    ("feed_forward.w1.", "feed_forward.linear_1."),
    ("feed_forward.w2.", "feed_forward.linear_2."),
    ("feed_forward.w3.", "feed_forward.linear_3."),
)


def _renames(to_diffusers: bool) -> tuple[tuple[str, str], ...]:
    """(pattern, replacement) of every rename in one direction; the first pattern that matches a key wins."""
    found, made = (0, 1) if to_diffusers else (1, 0)
    return (
        *((rf"^{re.escape(pair[found])}", pair[made]) for pair in _NAMES),
        *((_BLOCK + re.escape(pair[found]), rf"\1.{pair[made]}") for pair in _BLOCK_NAMES),
    )


# The context refiner's blocks are unmodulated: their attention_norm1 is diffusers' plain `norm1` (an RMSNorm).
_TO_DIFFUSERS = ((r"^(context_refiner\.\d+)\.attention_norm1\.", r"\1.norm1."), *_renames(to_diffusers=True))
_TO_COMFY = (*_renames(to_diffusers=False), (_BLOCK + r"norm1\.weight$", r"\1.attention_norm1.weight"))
_QKV = re.compile(_BLOCK + r"attention\.qkv\.weight$")
_PART = re.compile(_BLOCK + r"attn\.to_([qkv])\.weight$")


def is_diffusers_lumina(keys) -> bool:
    return any(key.startswith("time_caption_embed.") or ".attn.to_q." in key for key in keys)


def _rename(key: str, table) -> str:
    for pattern, replacement in table:
        new, count = re.subn(pattern, replacement, key)
        if count:
            return new
    return key


def lumina_diffusers_state_dict(state_dict: Mapping[str, torch.Tensor], config: DiTConfig) -> dict[str, torch.Tensor]:
    """diffusers' `Lumina2Transformer2DModel` names for the core's (ComfyUI's) Lumina-2 state dict; q/k/v are views."""
    widths = [config.dim, config.kv_heads * config.head_dim, config.kv_heads * config.head_dim]
    converted: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        fused = _QKV.match(key)
        if fused:
            if value.shape[0] != sum(widths):
                raise CheckpointError(f"{key} has {value.shape[0]} rows, not q|k|v = {widths}")
            for name, part in zip("qkv", value.split(widths, dim=0), strict=True):
                converted[f"{fused[1]}.attn.to_{name}.weight"] = part
            continue
        converted[_rename(key, _TO_DIFFUSERS)] = value
    return converted


def lumina_comfy_names(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """ComfyUI names for prefix-free diffusers Lumina-2 keys; pops each to_q/to_k/to_v as it fuses them."""
    parts: dict[str, dict[str, str]] = {}
    for key in state_dict:
        match = _PART.match(key)
        if match:
            parts.setdefault(match[1], {})[match[2]] = key
    renamed: dict[str, torch.Tensor] = {}
    for block, names in sorted(parts.items()):
        missing = [f"to_{name}" for name in "qkv" if name not in names]
        if missing:
            raise CheckpointError(f"partial diffusers-format attention in {block}: {'/'.join(missing)} missing")
        renamed[f"{block}.attention.qkv.weight"] = torch.cat([state_dict.pop(names[name]) for name in "qkv"])
    for key, value in state_dict.items():
        new = _rename(key, _TO_COMFY)
        if new in renamed:
            raise CheckpointError(f"mixed key formats: {key} and another key are both {new}")
        renamed[new] = value
    return renamed


def lumina_config_from_diffusers(data: Mapping) -> DiTConfig:
    """The DiTConfig that computes what a diffusers `Lumina2Transformer2DModel` with this `config.json` computes."""
    dim = int(data.get("hidden_size", 2304))
    out = data.get("out_channels")
    if out is not None and int(out) != int(data.get("in_channels", 16)):
        raise CheckpointError(f"transformer config has out_channels {out} ≠ in_channels; Lumina-2 predicts latents")
    multiplier = data.get("ffn_dim_multiplier")
    return DiTConfig.lumina2(
        dim=dim,
        n_layers=int(data.get("num_layers", 26)),
        n_refiner_layers=int(data.get("num_refiner_layers", 2)),
        n_heads=int(data.get("num_attention_heads", 24)),
        n_kv_heads=int(data.get("num_kv_heads", 8)),
        cap_feat_dim=int(data.get("cap_feat_dim", 1024)),
        in_channels=int(data.get("in_channels", 16)),
        patch_size=int(data.get("patch_size", 2)),
        axes_dims=tuple(data.get("axes_dim_rope", (32, 32, 32))),
        axes_lens=tuple(data.get("axes_lens", (300, 512, 512))),
        rope_theta=DIFFUSERS_ROPE_THETA,
        norm_eps=float(data.get("norm_eps", 1e-5)),
        ffn_multiple_of=int(data.get("multiple_of", 256)),
        ffn_dim_multiplier=4.0 * (1.0 if multiplier is None else float(multiplier)),
        qk_norm_eps=DIFFUSERS_QK_NORM_EPS,
    )


def lumina_diffusers_config(config: DiTConfig) -> dict:
    """A diffusers `config.json` body for a core Lumina-2 config (only configs diffusers can express)."""
    if config.kind != "lumina2" or config.rope_theta != DIFFUSERS_ROPE_THETA or config.time_scale != 1.0:
        raise CheckpointError(
            f"{config.family} with RoPE theta {config.rope_theta} and time scale {config.time_scale}"
            f" has no Lumina2Transformer2DModel config (Lumina-2: theta 10000, t unscaled)"
        )
    if config.time_width != min(config.dim, 1024):
        raise CheckpointError(f"timestep hidden width {config.time_width}: diffusers fixes it at min(dim, 1024)")
    return {
        "patch_size": config.patch_size,
        "in_channels": config.in_channels,
        "hidden_size": config.dim,
        "num_layers": config.n_layers,
        "num_refiner_layers": config.n_refiner_layers,
        "num_attention_heads": config.n_heads,
        "num_kv_heads": config.kv_heads,
        "multiple_of": config.ffn_multiple_of,
        "ffn_dim_multiplier": config.ffn_dim_multiplier / 4.0,
        "norm_eps": config.norm_eps,
        "axes_dim_rope": list(config.axes_dims),
        "axes_lens": list(config.axes_lens),
        "cap_feat_dim": config.cap_feat_dim,
    }


__all__ = [
    "is_diffusers_lumina",
    "lumina_diffusers_state_dict",
    "lumina_comfy_names",
    "lumina_config_from_diffusers",
    "lumina_diffusers_config",
]
