"""What a NextDiT state dict's keys and shapes say: ComfyUI names, which model it is, and its DiTConfig.

`normalize_keys` maps a prefixed or diffusers/official state dict to ComfyUI's bare NextDiT names (fusing
`to_q | to_k | to_v` into `qkv`); `detect_architecture` tells Z-Image from Lumina-Image-2.0 by their weights
(Z-Image: adaLN_modulation.0 Linear + learned pad tokens; Lumina-2: SiLU adaLN_modulation.1, no pad tokens) and
refuses other models (Flux, SD3, U-Nets, text encoders, VAEs, Z-Image variants) with a message naming them;
`infer_config` reads the DiTConfig from metadata
`zerase.dit_config`, checked against the shapes, or from the shapes alone. `checkpoint` reads, loads and saves.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TypeVar

import torch

from .config import METADATA_KEY, DiTConfig

StateDict = dict[str, torch.Tensor]
_Value = TypeVar("_Value")


class CheckpointError(ValueError):
    """A file or state dict that cannot be loaded as a Z-Image DiT."""


class UnsupportedModelError(CheckpointError):
    """The checkpoint holds another kind of model; the message says which."""


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
_PAD_TOKENS = ("cap_pad_token", "x_pad_token")

# (pattern searched in each key, what a match means); first match wins. Keys are prefix-stripped.
_FOREIGN = (
    (r"lora_(?:up|down|A|B)\b|^lora_unet_", "a LoRA / adapter file, not a base model"),
    (r"^(?:double_blocks|single_blocks)\.", "a Flux model (double_blocks / single_blocks)"),
    (r"^single_transformer_blocks\.", "a Flux model in diffusers format (single_transformer_blocks)"),
    (r"^joint_blocks\.", "an SD3 / MMDiT model (joint_blocks)"),
    (r"^transformer_blocks\.\d+\.(?:img_mod|txt_mod)\.", "a Qwen-Image model (transformer_blocks.N.img_mod / txt_mod)"),
    (r"^transformer_blocks\.\d+\.attn\.add_[qkv]_proj", "an MMDiT model in diffusers format (SD3-style)"),
    (
        r"^(?:input_blocks|output_blocks|middle_block|down_blocks|up_blocks|mid_block)\.",
        "a U-Net (SD1.x / SD2 / SDXL: input_blocks / down_blocks)",
    ),
    (
        r"(?:^|\.)layers\.\d+\.self_attn\.|(?:^|\.)embed_tokens\.",
        "a text encoder (Qwen/LLM: model.layers.N.self_attn), not a diffusion model; load it with a CLIP loader",
    ),
    (r"(?:^|\.)block\.\d+\.layer\.\d+\.", "a text encoder (T5), not a diffusion model"),
    (r"text_model\.encoder\.", "a text encoder (CLIP), not a diffusion model"),
    (
        r"^(?:first_stage_model\.|vae\.)?(?:encoder\.(?:down|mid|conv_in)|decoder\.(?:up|mid|conv_out))",
        "a VAE (encoder.down / decoder.up), not a diffusion model; load it with a VAE loader",
    ),
)
_NEXT_DIT = (
    r"^(?:cap_embedder|noise_refiner|context_refiner|x_embedder|all_x_embedder|time_caption_embed)\."
    r"|^layers\.\d+\.attention\."
)
SUPPORTED = (
    "Supported: Z-Image / Z-Image-Turbo (adaLN_modulation.0 Linear, cap_pad_token / x_pad_token) and"
    " Lumina-Image-2.0 (SiLU adaLN_modulation.1, GQA, no pad tokens)"
)
_VARIANTS = (
    (r"^siglip_(?:embedder|refiner|pad_token)", "Z-Image Omni (siglip_embedder: image-conditioned variant)"),
    (r"^dec_net\.", "pixel-space Z-Image (dec_net)"),
    (r"^(?:clip_text_pooled_proj|time_text_embed)\.", "NewBie (clip_text_pooled_proj)"),
    (
        r"(?:^|\.)scale_weight$|(?:^|\.)weight_scale$|^scaled_fp8$",
        "a ComfyUI fp8-scaled Z-Image; use the bf16 or fp32 file",
    ),
)


# ---------------------------------------------------------------- key names


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
    from ..real.lumina import is_diffusers_lumina, lumina_comfy_names

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


# ---------------------------------------------------------------- detection


def detect_architecture(state_dict: Mapping[str, torch.Tensor]) -> str:
    """ "z-image" or "lumina2" (ComfyUI or diffusers names, any prefix); else UnsupportedModelError naming it."""
    if not state_dict:
        raise CheckpointError("the checkpoint holds no tensors")
    tensors = strip_prefix(state_dict)
    for pattern, description in _FOREIGN:
        example = _first_match(tensors, pattern)
        if example is not None:
            raise UnsupportedModelError(
                f"this looks like {description} (key {example}); ZErase loads only"
                f" single-stream NextDiT checkpoints. {SUPPORTED}"
            )
    if _first_match(tensors, _NEXT_DIT) is None:
        sample = ", ".join(list(tensors)[:5])
        raise UnsupportedModelError(
            f"this is not a diffusion transformer ZErase recognises: {len(tensors)} tensors"
            f" such as {sample} (a NextDiT has cap_embedder, noise_refiner,"
            f" layers.N.attention)."
            f" {SUPPORTED}"
        )
    for pattern, description in _VARIANTS:
        example = _first_match(tensors, pattern)
        if example is not None:
            raise UnsupportedModelError(
                f"this is {description} (key {example}), not the text-to-image Z-Image or Lumina-2. {SUPPORTED}"
            )
    return _kind_of(tensors)


def _kind_of(tensors: Mapping[str, torch.Tensor]) -> str:
    """Z-Image or Lumina-2 from the block modulation and the pad tokens, which must agree."""
    zimage = _first_match(tensors, r"^(?:layers|noise_refiner)\.\d+\.adaLN_modulation\.0\.")
    lumina = _first_match(tensors, r"^(?:layers|noise_refiner)\.\d+\.(?:adaLN_modulation\.1|norm1\.linear)\.")
    pads = [name for name in _PAD_TOKENS if name in tensors]
    gqa = any("GQA" in sign for sign in _lumina_signs(tensors))
    if zimage and not lumina and len(pads) == len(_PAD_TOKENS) and not gqa:
        return "z-image"
    if lumina and not zimage and not pads:
        return "lumina2"
    found = [
        f"modulation {zimage or lumina or 'absent'}" + (f" and {lumina}" if zimage and lumina else ""),
        f"pad tokens {pads or 'none'}",
        *_lumina_signs(tensors),
    ]
    raise UnsupportedModelError(f"this NextDiT mixes the two known families: {'; '.join(found)}. {SUPPORTED}")


def _first_match(keys: Mapping[str, object], pattern: str) -> str | None:
    compiled = re.compile(pattern)
    return next((key for key in keys if compiled.search(key)), None)


def _lumina_signs(tensors: Mapping[str, torch.Tensor]) -> list[str]:
    """Why a NextDiT state dict is Lumina-2 rather than Z-Image (empty when it is Z-Image)."""
    signs = []
    missing = [name for name in _PAD_TOKENS if name not in tensors]
    if missing:
        signs.append(f"no {' / '.join(missing)} (Lumina-2 masks padding; Z-Image learns pad tokens)")
    for key, value in tensors.items():
        if key.endswith(".attention.qkv.weight") and value.dim() == 2 and value.shape[0] != 3 * value.shape[1]:
            signs.append(f"{key} has {value.shape[0]} rows for width {value.shape[1]}: kv heads ≠ q heads (GQA)")
            break
        query = tensors.get(key[: -len("to_k.weight")] + "to_q.weight")
        if key.endswith(".attention.to_k.weight") and query is not None and value.shape != query.shape:
            signs.append(f"{key} is narrower than to_q: kv heads ≠ q heads (GQA)")
            break
    silu_adaln = _first_match(tensors, r"^(?:layers|noise_refiner)\.\d+\.adaLN_modulation\.1\.")
    if silu_adaln is not None:
        signs.append(f"{silu_adaln}: SiLU→Linear block modulation")
    caption = tensors.get("cap_embedder.1.weight")
    if caption is not None and tuple(caption.shape) == (2304, 2304):
        signs.append("cap_embedder.1 is 2304 wide over Gemma-2-2B features (2304)")
    return signs


# ---------------------------------------------------------------- config


@dataclass(frozen=True)
class _Shapes:
    """What the tensors say about the architecture."""

    dim: int
    cap_feat_dim: int
    n_layers: int
    n_refiner_layers: int
    patch_features: int
    head_dim: int | None
    ffn_hidden: int | None
    kind: str = "z-image"
    kv_heads: int | None = None


def infer_config(state_dict: Mapping[str, torch.Tensor], metadata: Mapping[str, str] | None = None) -> DiTConfig:
    """The DiTConfig of a state dict with ComfyUI names: from metadata `zerase.dit_config`, checked against the
    tensor shapes, else from the shapes alone (Z-Image: head dim 128; Lumina-2: head dim 96, axes 32/32/32)."""
    shapes = _read_shapes(state_dict)
    try:
        config = DiTConfig.from_metadata(dict(metadata) if metadata else None)
    except (ValueError, TypeError) as error:
        raise CheckpointError(f"metadata '{METADATA_KEY}' is invalid: {error}") from None
    if config is None:
        return _config_from_shapes(shapes)
    stated = {
        "dim": config.dim,
        "cap_feat_dim": config.cap_feat_dim,
        "n_layers": config.n_layers,
        "n_refiner_layers": config.n_refiner_layers,
        "head_dim": config.head_dim,
        "patch features (p·p·C)": config.patch_size**2 * config.in_channels,
        "ffn_hidden": config.ffn_hidden,
        "kind": config.kind,
        "kv heads": config.kv_heads,
    }
    found = {
        "kind": shapes.kind,
        "kv heads": shapes.kv_heads,
        "dim": shapes.dim,
        "cap_feat_dim": shapes.cap_feat_dim,
        "n_layers": shapes.n_layers,
        "n_refiner_layers": shapes.n_refiner_layers,
        "head_dim": shapes.head_dim,
        "patch features (p·p·C)": shapes.patch_features,
        "ffn_hidden": shapes.ffn_hidden,
    }
    wrong = [
        f"{name} {stated[name]} in metadata but {value} in the tensors"
        for name, value in found.items()
        if value is not None and value != stated[name]
    ]
    if wrong:
        raise CheckpointError(f"metadata '{METADATA_KEY}' does not match the tensors: {'; '.join(wrong)}")
    return config


def _read_shapes(tensors: Mapping[str, torch.Tensor]) -> _Shapes:
    for key in ("cap_embedder.1.weight", "x_embedder.weight"):
        if key not in tensors:
            raise CheckpointError(
                f"{key} is missing, so the model's width is unknown (keys must have ComfyUI names: see normalize_keys)"
            )
        if tensors[key].dim() != 2:
            raise CheckpointError(f"{key} has shape {list(tensors[key].shape)}; a Linear weight is 2-D")
    dim, cap_feat_dim = tensors["cap_embedder.1.weight"].shape
    n_noise, n_context = _count_blocks(tensors, "noise_refiner"), _count_blocks(tensors, "context_refiner")
    if n_noise != n_context:
        raise CheckpointError(
            f"{n_noise} noise_refiner blocks but {n_context} context_refiner blocks; Z-Image has as many of each"
        )
    head = _first_block_tensor(tensors, "attention.q_norm.weight")
    ffn = _first_block_tensor(tensors, "feed_forward.w1.weight")
    qkv = _first_block_tensor(tensors, "attention.qkv.weight")
    kv_heads = None
    if head is not None and qkv is not None and (qkv.shape[0] - dim) % (2 * head.shape[0]) == 0:
        kv_heads = int((qkv.shape[0] - dim) // (2 * head.shape[0]))
    return _Shapes(
        kind=_kind_of(tensors),
        kv_heads=kv_heads,
        dim=int(dim),
        cap_feat_dim=int(cap_feat_dim),
        n_layers=_count_blocks(tensors, "layers"),
        n_refiner_layers=n_noise,
        patch_features=int(tensors["x_embedder.weight"].shape[1]),
        head_dim=None if head is None else int(head.shape[0]),
        ffn_hidden=None if ffn is None else int(ffn.shape[0]),
    )


def _first_block_tensor(tensors: Mapping[str, torch.Tensor], name: str) -> torch.Tensor | None:
    keys = (f"{block}.{name}" for block in ("layers.0", "noise_refiner.0", "context_refiner.0"))
    return next((tensors[key] for key in keys if key in tensors), None)


def _count_blocks(tensors: Mapping[str, torch.Tensor], family: str) -> int:
    pattern = re.compile(rf"^{family}\.(\d+)\.")
    indices = {int(match[1]) for match in map(pattern.match, tensors) if match}
    absent = sorted(set(range(max(indices, default=-1) + 1)) - indices)
    if absent:
        raise CheckpointError(f"{family} blocks {absent[:5]} are missing (found indices up to {max(indices)})")
    return len(indices)


def _config_from_shapes(shapes: _Shapes) -> DiTConfig:
    def uninferable(reason: str) -> CheckpointError:
        return CheckpointError(
            f"cannot infer the DiT config without '{METADATA_KEY}' metadata: {reason}; save the"
            f" checkpoint with save_dit or pass metadata=DiTConfig(...).to_metadata()"
        )

    patch_size = 2  # Z-Image patchifies 2×2 (ComfyUI hard-codes it too)
    if shapes.patch_features % (patch_size * patch_size):
        raise uninferable(f"x_embedder takes {shapes.patch_features} features per patch, not 2·2·channels")
    if shapes.head_dim is None:
        raise uninferable("no attention.q_norm.weight to read the head dim from")
    if shapes.kind == "lumina2":
        from ..real.lumina import lumina_config_from_shapes

        return lumina_config_from_shapes(shapes, patch_size, uninferable)
    if shapes.head_dim != 128 or shapes.dim % 128:
        raise uninferable(
            f"dim {shapes.dim} with head dim {shapes.head_dim}; only head dim 128 (RoPE axes"
            f" 32/48/48, as Z-Image) is known"
        )
    # dim 3840 gives exactly DiTConfig.turbo(): 30 heads, axes (32, 48, 48), theta 256, t·1000, pad to 32.
    try:
        config = DiTConfig(
            dim=shapes.dim,
            n_heads=shapes.dim // 128,
            n_layers=shapes.n_layers,
            n_refiner_layers=shapes.n_refiner_layers,
            cap_feat_dim=shapes.cap_feat_dim,
            in_channels=shapes.patch_features // (patch_size * patch_size),
            patch_size=patch_size,
        )
    except ValueError as error:
        raise uninferable(str(error)) from None
    if shapes.ffn_hidden is not None and shapes.ffn_hidden != config.ffn_hidden:
        raise uninferable(
            f"feed_forward.w1 has {shapes.ffn_hidden} rows but dim {shapes.dim} gives"
            f" {config.ffn_hidden} (8/3·dim rounded up to a multiple of 256)"
        )
    return config


__all__ = [
    "CheckpointError",
    "UnsupportedModelError",
    "StateDict",
    "strip_prefix",
    "normalize_keys",
    "comfy_names",
    "detect_architecture",
    "infer_config",
]
