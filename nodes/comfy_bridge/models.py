"""Which MODELs are accepted (single-stream Z-Image and Lumina-Image-2.0; a refusal names what it got) and what an
accepted one is (`base_info`, `describe_layout`); `loaders.py` builds and loads them."""

from __future__ import annotations

from dataclasses import dataclass

import comfy.ldm.lumina.model

from zerase_core.model.config import DiTConfig

BASE_ATTACHMENT = "zerase.base"  # BaseInfo of a MODEL built by LoadSingleStreamDiT

# ComfyUI's model-config class name -> what it is, for refusals (checkpoint_keys._FOREIGN).
_REFUSED = {
    "Flux": "a dual-stream Flux model",
    "FluxInpaint": "a dual-stream Flux model",
    "FluxSchnell": "a dual-stream Flux model",
    "Flux2": "a dual-stream Flux.2 model",
    "Chroma": "a dual-stream Chroma (Flux) model",
    "SD3": "a dual-stream SD3 (MMDiT) model",
    "QwenImage": "a dual-stream Qwen-Image model",
    "HiDream": "a HiDream model",
    "AuraFlow": "an AuraFlow model",
    "PixArtAlpha": "a PixArt model",
    "ZImagePixelSpace": "pixel-space Z-Image (not supported yet)",
}


@dataclass(frozen=True)
class BaseInfo:
    config: DiTConfig
    nano: bool


def zimage_network(model) -> comfy.ldm.lumina.model.NextDiT:
    """The Z-Image or Lumina-2 NextDiT inside a MODEL, or ValueError naming what the MODEL is instead."""
    base = getattr(model, "model", None)
    network = getattr(base, "diffusion_model", None)
    if network is None:
        raise ValueError(f"expected a MODEL (a ComfyUI ModelPatcher), got {type(model).__name__}")
    kind = type(getattr(base, "model_config", None)).__name__
    unet = getattr(getattr(base, "model_config", None), "unet_config", {}) or {}
    if isinstance(network, comfy.ldm.lumina.model.NextDiTPixelSpace) or kind == "ZImagePixelSpace":
        raise ValueError(
            "this MODEL is pixel-space Z-Image (dec_net), which ZErase does not support yet; use "
            "text-to-image Z-Image / Z-Image-Turbo"
        )
    if not isinstance(network, comfy.ldm.lumina.model.NextDiT):
        what = _REFUSED.get(kind) or (
            f"a U-Net ({kind})" if "UNet" in type(network).__name__ else f"{kind} ({type(network).__name__})"
        )
        raise ValueError(
            f"this MODEL is {what}; ZErase erases concepts from single-stream NextDiT models only "
            f"(load Z-Image / Z-Image-Turbo, Lumina-Image-2.0, or the bundled nano model)"
        )
    if getattr(network, "siglip_embedder", None) is not None:
        raise ValueError("this MODEL is Z-Image Omni (siglip_embedder, image-conditioned), not supported yet")
    if getattr(network, "clip_text_pooled_proj", None) is not None:
        raise ValueError(
            f"this MODEL is NewBie ({kind}: Lumina-2 with clip_text_pooled_proj), not supported; ZErase "
            f"supports Z-Image / Z-Image-Turbo and Lumina-Image-2.0"
        )
    zimage = unet.get("z_image_modulation", False)
    pads = getattr(network, "cap_pad_token", None) is not None
    if zimage != pads:
        raise ValueError(
            f"this MODEL ({kind}) has z_image_modulation={zimage} but {'learned' if pads else 'no'} pad "
            f"tokens: neither Z-Image (both) nor Lumina-Image-2.0 (neither). ComfyUI recognises a Z-Image "
            f"file only at width 3840; smaller Z-Image files load through LoadSingleStreamDiT when they "
            f"carry ZErase's config metadata"
        )
    return network


def base_info(model) -> BaseInfo:
    attached = model.get_attachment(BASE_ATTACHMENT)
    if attached is not None:
        return attached
    network = zimage_network(model)
    unet = model.model.model_config.unet_config
    lumina = not unet.get("z_image_modulation", False)
    config = DiTConfig(
        kind="lumina2" if lumina else "z-image",
        n_kv_heads=_kv_heads(network),
        dim=unet["dim"],
        n_layers=unet["n_layers"],
        n_refiner_layers=unet.get("n_refiner_layers", 2),
        n_heads=unet["n_heads"],
        cap_feat_dim=unet["cap_feat_dim"],
        in_channels=unet["in_channels"],
        patch_size=unet["patch_size"],
        axes_dims=tuple(unet["axes_dims"]),
        axes_lens=tuple(unet["axes_lens"]),
        rope_theta=float(unet.get("rope_theta", 10000.0)),
        time_scale=float(unet.get("time_scale", 1.0)),
        norm_eps=float(unet.get("norm_eps", 1e-5)),
        ffn_multiple_of=unet.get("multiple_of", 256),
        ffn_dim_multiplier=float(unet["ffn_dim_multiplier"]),
        pad_tokens_multiple=unet.get("pad_tokens_multiple") or 1,
        shift=float(model.model.model_sampling.shift),
    )
    return BaseInfo(config, nano=False)


def _kv_heads(network) -> int | None:
    """Key/value heads when fewer than the query heads (GQA, Lumina-2), else None (the DiTConfig default)."""
    attention = next((block.attention for block in network.layers), None)
    if attention is None or attention.n_local_kv_heads == attention.n_local_heads:
        return None
    return attention.n_local_kv_heads


def describe_layout(model) -> str:
    info = base_info(model)
    config = info.config
    network = zimage_network(model)
    if config.kind == "lumina2":
        return (
            f"Lumina-Image-2.0 NextDiT: dim {config.dim}, {config.n_layers} joint layers, "
            f"{config.n_refiner_layers}+{config.n_refiner_layers} refiners, {config.n_heads} heads over "
            f"{config.kv_heads} kv heads (GQA), fused attention.qkv; joint sequence [text, unpadded | image "
            f"(H/{config.patch_size})·(W/{config.patch_size}) tokens, unpadded]; ZErase adapters add their delta "
            f"at text rows only (image rows see the frozen W)"
        )
    return (
        f"{'nano ' if info.nano else ''}Z-Image NextDiT: dim {config.dim}, {config.n_layers} joint layers, "
        f"{config.n_refiner_layers}+{config.n_refiner_layers} refiners, {config.n_heads} heads, fused "
        f"attention.qkv; joint sequence [text padded to {network.pad_tokens_multiple or 1} | image "
        f"(H/{config.patch_size})·(W/{config.patch_size}) tokens padded to {network.pad_tokens_multiple or 1}]; "
        f"ZErase adapters add their delta at text rows only (image rows see the frozen W)"
    )


def is_nano(model) -> bool:
    return base_info(model).nano
