"""The CLI's options that name a real Z-Image (`--model`, or `--dit/--text-encoder/--vae/--tokenizer`, and
`--device`), and the check that an erasure file was made for that model."""

from __future__ import annotations

from pathlib import Path

import torch

from ..formats.erasure_file import ErasureFileError, read_erasure
from ..model.checkpoint import fingerprint
from .sources import ModelSource, load_transformer
from .world import parts

MODEL_OPTIONS = ("model", "dit", "text_encoder", "vae", "tokenizer")
# the help of each option in MODEL_OPTIONS, all paths
_MODEL_HELP = {
    "model": "a diffusers Z-Image or Lumina-Image-2.0 folder (model_index.json) or a ComfyUI diffusion-model file"
    " (e.g. z_image_turbo_bf16.safetensors, lumina_2_model_bf16.safetensors)",
    "dit": "the ComfyUI diffusion-model file (same as --model FILE)",
    "text_encoder": "ComfyUI text-encoder file (qwen_3_4b.safetensors; Lumina-2: gemma_2_2b_fp16.safetensors)"
    " or a diffusers text_encoder/ folder",
    "vae": "ComfyUI VAE file (ae.safetensors) or a diffusers vae/ folder",
    "tokenizer": "tokenizer folder (default: the diffusers folder's; Z-Image: else"
    " $COMFYUI_PATH/comfy/text_encoders/qwen25_tokenizer; Lumina-2 with single files: the one inside the Gemma"
    " file (ComfyUI's spiece_model), else the tokenizer/ folder of a diffusers Lumina-Image-2.0 download)",
}


def add_model_arguments(parser) -> None:
    """--model / --dit / --text-encoder / --vae / --tokenizer: a real Z-Image instead of the bundled nano model."""
    group = parser.add_argument_group("real model (instead of the bundled nano model)")
    for name in MODEL_OPTIONS:
        group.add_argument(f"--{name.replace('_', '-')}", type=Path, help=_MODEL_HELP[name])
    group.add_argument(
        "--device",
        default="cpu",
        help="where the DiT runs: cpu (default) or cuda[:N]; the text encoder and VAE run on the CPU",
    )


def device_of(args) -> torch.device:
    name = getattr(args, "device", None) or "cpu"
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ValueError(f"--device {name!r} is not a device; use cpu or cuda[:N]") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {name}: CUDA is not available to this torch {torch.__version__}; use --device cpu")
    if device.type not in ("cpu", "cuda"):
        raise ValueError(f"--device {name}: only cpu and cuda are supported")
    return device


def real_source(args) -> ModelSource | None:
    """The real model the options name, or None when none is given (the nano model)."""
    given = {name: getattr(args, name, None) for name in MODEL_OPTIONS}
    if given["model"] is None and given["dit"] is None:
        extra = [f"--{name.replace('_', '-')}" for name, value in given.items() if value is not None]
        if extra:
            raise ValueError(f"{' '.join(extra)} given without --model or --dit: name the diffusion model too")
        return None
    return parts(**given)


def check_base(args) -> None:
    """With --model/--dit: refuse an erasure file made for another base, naming both fingerprints."""
    source = real_source(args)
    if source is None:
        return
    info = read_erasure(args.file)[0]
    found = fingerprint(load_transformer(source))
    if found != info.base_fingerprint:
        raise ErasureFileError(
            f"{args.file} was trained on base model {info.base_fingerprint}, but {source.dit} has"
            f" fingerprint {found}; export it without --model, or use the matching base"
        )


__all__ = ["MODEL_OPTIONS", "add_model_arguments", "device_of", "real_source", "check_base"]
