"""Building and loading a MODEL: ComfyUI's Z-Image / Lumina-2 model from our config and weights, the bundled nano
world as ComfyUI objects, and `diffusion_models` files (refused unless single-stream; mmapped weights where possible).
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import torch

import comfy.model_detection
import comfy.model_management as model_management
import comfy.model_patcher
import comfy.sd
import comfy.supported_models
import comfy.supported_models_base
import comfy.utils
import folder_paths

from zerase_core.model.checkpoint import (
    UnsupportedModelError,
    detect_architecture,
    infer_config,
    normalize_keys,
    read_state_dict,
)
from zerase_core.model.config import DiTConfig
from zerase_core.nano import paths as nano_paths

from .models import BASE_ATTACHMENT, BaseInfo, zimage_network
from .nano_objects import NanoLatentFormat, NanoTextModel, NanoTokenizer, NanoVAE

logger = logging.getLogger(__name__)
_QUANT_KEY = re.compile(r"(?:^|\.)(?:scale_weight|weight_scale|scale_input|input_scale|comfy_quant)$|^scaled_fp8$")
STORED_DTYPES = (torch.float32, torch.bfloat16, torch.float16)  # weights assigned as stored (no conversion)


def _unet_config(config: DiTConfig) -> dict:
    return dict(
        image_model="lumina2",
        patch_size=config.patch_size,
        in_channels=config.in_channels,
        dim=config.dim,
        cap_feat_dim=config.cap_feat_dim,
        n_layers=config.n_layers,
        n_refiner_layers=config.n_refiner_layers,
        qk_norm=True,
        n_heads=config.n_heads,
        n_kv_heads=config.kv_heads,
        multiple_of=config.ffn_multiple_of,
        ffn_dim_multiplier=config.ffn_dim_multiplier,
        norm_eps=config.norm_eps,
        axes_dims=list(config.axes_dims),
        axes_lens=list(config.axes_lens),
        rope_theta=config.rope_theta,
        z_image_modulation=config.kind == "z-image",
        time_scale=config.time_scale,
        pad_tokens_multiple=config.pad_tokens_multiple if config.pad_tokens else None,
    )


def build_zimage_patcher(
    config: DiTConfig,
    state_dict: dict[str, torch.Tensor],
    nano: bool,
    dtype: torch.dtype = torch.float32,
    manual_cast_dtype: torch.dtype | None = None,
):
    """A genuine ComfyUI Z-Image or Lumina-2 model (`model_base.Lumina2` holding a NextDiT) from our config and weights.

    Weights stored in `dtype`, computed in `manual_cast_dtype` by ComfyUI's cast ops (None: in `dtype`). Built with
    inference mode off, so the weights are normal tensors a training node can backpropagate through.
    """
    family = comfy.supported_models.ZImage if config.kind == "z-image" else comfy.supported_models.Lumina2
    model_config = family(_unet_config(config))
    model_config.sampling_settings = {"multiplier": 1.0, "shift": config.shift}
    model_config.set_inference_dtype(dtype, manual_cast_dtype)
    if nano:
        model_config.latent_format = NanoLatentFormat()
    with torch.inference_mode(False):
        model = model_config.get_model({}, "")
        weights = {key: value.to(dtype) if value.is_floating_point() else value for key, value in state_dict.items()}
        missing, unexpected = model.diffusion_model.load_state_dict(weights, strict=False)
    if missing or unexpected:
        raise ValueError(
            f"the weights do not fit ComfyUI's NextDiT: missing {missing[:4]}, unexpected {unexpected[:4]}"
        )
    patcher = comfy.model_patcher.ModelPatcher(
        model, load_device=model_management.get_torch_device(), offload_device=model_management.unet_offload_device()
    )
    patcher.set_attachments(BASE_ATTACHMENT, BaseInfo(config, nano))
    return patcher


def _nano_patcher(disable_dynamic: bool = False):
    state, metadata = read_state_dict(nano_paths.DIT)
    state = normalize_keys(state)
    patcher = build_zimage_patcher(infer_config(state, metadata), state, nano=True)
    patcher.cached_patcher_init = (_nano_patcher, ())
    return patcher


def load_nano():
    """(MODEL, CLIP, VAE) of the bundled nano world, as objects stock ComfyUI nodes accept."""
    missing = [path.name for path in (nano_paths.DIT, nano_paths.TEXT_ENCODER, nano_paths.CODEC) if not path.exists()]
    if missing:
        raise FileNotFoundError(
            f"nano weights missing from {nano_paths.WEIGHTS}: {missing}; reinstall ZErase or "
            f"train them with `python -m zerase_core.nano.train` (see README)"
        )
    patcher = _nano_patcher()
    target = comfy.supported_models_base.ClipTarget(NanoTokenizer, NanoTextModel)
    clip = comfy.sd.CLIP(
        target,
        model_options={
            "load_device": torch.device("cpu"),
            "offload_device": torch.device("cpu"),
            "dtype": torch.float32,
        },
    )
    return patcher, clip, NanoVAE()


def _header_tensors(path: Path) -> dict[str, torch.Tensor]:
    """Keys and shapes of a safetensors file as meta tensors (nothing is read but the header)."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt", device="cpu") as handle:
        return {key: torch.empty(handle.get_slice(key).get_shape(), device="meta") for key in handle.keys()}  # noqa: SIM118 (a safetensors handle, not iterable)


def load_diffusion_file(name: str):
    """A `diffusion_models` file: refused unless it is Z-Image or Lumina-2, then loaded by ComfyUI's own loader."""
    if not name.endswith(".safetensors"):
        raise ValueError(f"{name} is not a .safetensors file; ZErase loads safetensors only")
    path = Path(folder_paths.get_full_path_or_raise("diffusion_models", name))
    try:
        # ComfyUI reads scaled-fp8 / quantized files itself: their scale keys are no other architecture's
        detect_architecture({key: value for key, value in _header_tensors(path).items() if not _QUANT_KEY.search(key)})
    except UnsupportedModelError as error:
        raise ValueError(f"{name}: {error}") from None
    from safetensors import safe_open

    with safe_open(str(path), framework="pt", device="cpu") as handle:
        metadata = handle.metadata() or {}
    stated = DiTConfig.from_metadata(metadata)
    if stated is not None and stated.dim != {"z-image": 3840, "lumina2": 2304}[stated.kind]:
        # ComfyUI's model detection knows Z-Image only at dim 3840 and Lumina-2 at 2304: build others ourselves.
        if stated.kind == "z-image" and _fp8_file(path):
            return _fp8_patcher(str(path), stated)
        state, _ = read_state_dict(path)
        return build_zimage_patcher(stated, normalize_keys(state), nano=False)
    model = load_zimage_file(str(path))
    zimage_network(model)
    return model


def load_zimage_file(path: str, disable_dynamic: bool = False):
    """A dim-3840 file as ComfyUI loads it, without ComfyUI's transient second copy of the weights where possible.

    ComfyUI's loader (and the stock UNETLoader) copies the file's mmapped tensors into freshly allocated parameters
    (`load_model_weights(assign=False)` unless the patcher is dynamic): during the load the process holds the file's
    pages and the copy. When ComfyUI keeps the weights as stored, `_assigned_patcher` builds the same model with
    ComfyUI's detection, dtype policy and classes, and assigns the mmapped tensors as the weights; anything else goes
    through ComfyUI's loader. Also the MODEL's `cached_patcher_init`, through which ComfyUI rebuilds it.
    """
    patcher = _assigned_patcher(path)
    if patcher is None:
        return comfy.sd.load_diffusion_model(path, disable_dynamic=disable_dynamic)
    patcher.cached_patcher_init = (load_zimage_file, (path,))
    return patcher


def _assigned_patcher(path: str):
    """The MODEL with the file's tensors as its weights, or None where ComfyUI's loader must run: a dtype ComfyUI
    converts to (`unet_dtype`, e.g. bf16 -> fp32 on a CPU without --bf16-unet), fp8/quantized/mixed-dtype weights,
    keys under a checkpoint prefix or in diffusers layout, dynamic VRAM (which assigns already), a GPU offload device.
    """
    offload_device = model_management.unet_offload_device()
    dynamic_vram = getattr(getattr(comfy, "memory_management", None), "aimdo_enabled", False)  # set by main.py
    if dynamic_vram or not model_management.is_device_cpu(offload_device):
        return None
    load_device = model_management.get_torch_device()
    with torch.inference_mode(False):  # normal tensors: ZEraseTrain can backpropagate through them as they are
        state, metadata = comfy.utils.load_torch_file(path, return_metadata=True)
        dtypes = {tensor.dtype for tensor in state.values()}
        if len(dtypes) != 1 or next(iter(dtypes)) not in STORED_DTYPES:
            return None
        stored = next(iter(dtypes))
        prefix = comfy.model_detection.unet_prefix_from_state_dict(state)
        if any(key.startswith(prefix) for key in state):
            return None
        model_config = comfy.model_detection.model_config_from_unet(state, "", metadata=metadata)
        if (
            type(model_config) not in (comfy.supported_models.ZImage, comfy.supported_models.Lumina2)
            or model_config.quant_config is not None
        ):
            return None
        supported = list(model_config.supported_inference_dtypes)
        chosen = model_management.unet_dtype(
            model_params=comfy.utils.calculate_parameters(state), supported_dtypes=supported, weight_dtype=stored
        )
        if chosen != stored:
            return None
        model_config.set_inference_dtype(
            stored, model_management.unet_manual_cast(stored, load_device, supported), device=load_device
        )
        model = model_config.get_model(state, "")  # parameters allocated but never written: not resident
        patcher = comfy.model_patcher.ModelPatcher(model, load_device=load_device, offload_device=offload_device)
        weights = model_config.process_unet_state_dict(state)
        missing, unexpected = model.diffusion_model.load_state_dict(weights, strict=False, assign=True)
    if missing:
        raise ValueError(
            f"{Path(path).name} does not fit ComfyUI's Z-Image NextDiT: {len(missing)} weights missing ({missing[:4]})"
        )
    if unexpected:
        logger.warning(
            "%s: ignored %d keys ComfyUI's NextDiT does not use: %s", Path(path).name, len(unexpected), unexpected[:4]
        )
    return patcher


def _fp8_file(path: Path) -> bool:
    """Weights stored in fp8: ComfyUI's fp8_e4m3fn / e5m2 files, or scaled fp8 (a `scaled_fp8` marker key)."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt", device="cpu") as handle:
        keys = list(handle.keys())
        return "scaled_fp8" in keys or any(handle.get_slice(key).get_dtype() in ("F8_E4M3", "F8_E5M2") for key in keys)


def _fp8_patcher(path: str, config: DiTConfig):
    """A Z-Image file below dim 3840 with fp8 weights, loaded the way ComfyUI's diffusion-model loader loads one
    it detects: its quant conversion (scaled fp8 -> mixed-precision ops with QuantizedTensor weights), its dtype
    policy (`unet_dtype`, `unet_manual_cast`; e.g. `--fp8_e4m3fn-unet` keeps plain fp8), its ops and weight loading;
    only the model config comes from the file's ZErase metadata instead of ComfyUI's detection."""
    with torch.inference_mode(False):
        state, metadata = comfy.utils.load_torch_file(path, return_metadata=True)
        state, metadata = comfy.utils.convert_old_quants(state, "", metadata=metadata)
        model_config = comfy.supported_models.ZImage(_unet_config(config))
        model_config.sampling_settings = {"multiplier": 1.0, "shift": config.shift}
        quantized = comfy.utils.detect_layer_quantization(state, "")
        if quantized:
            model_config.quant_config = quantized
        load_device = model_management.get_torch_device()
        supported = list(model_config.supported_inference_dtypes)
        stored = None if quantized else comfy.utils.weight_dtype(state)
        dtype = model_management.unet_dtype(
            model_params=comfy.utils.calculate_parameters(state), supported_dtypes=supported, weight_dtype=stored
        )
        manual = model_management.unet_manual_cast(None if quantized else dtype, load_device, supported)
        model_config.set_inference_dtype(dtype, manual, device=load_device)
        model = model_config.get_model(state, "")
        patcher = comfy.model_patcher.ModelPatcher(
            model, load_device=load_device, offload_device=model_management.unet_offload_device()
        )
        model.load_model_weights(state, "")
    patcher.set_attachments(BASE_ATTACHMENT, BaseInfo(config, False))
    patcher.cached_patcher_init = (_fp8_patcher, (path, config))
    return patcher
