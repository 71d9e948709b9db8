"""Which model a state dict holds, told by its weights: `detect_architecture` tells Z-Image from Lumina-Image-2.0
(Z-Image: adaLN_modulation.0 Linear + learned pad tokens; Lumina-2: SiLU adaLN_modulation.1, no pad tokens) and
refuses other models (Flux, SD3, U-Nets, text encoders, VAEs, Z-Image variants) with a message naming them.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import torch

from .checkpoint_keys import CheckpointError, UnsupportedModelError, strip_prefix

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
    return kind_of(tensors)


def kind_of(tensors: Mapping[str, torch.Tensor]) -> str:
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


__all__ = ["SUPPORTED", "detect_architecture", "kind_of"]
