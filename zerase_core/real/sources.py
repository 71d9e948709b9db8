"""What a model path holds, told from its files and weights: a ComfyUI single file (diffusion model, text encoder
or VAE) or a diffusers folder (model_index.json with its components), and loading its DiT memory-mapped.

Supported: Z-Image / Z-Image-Turbo (one architecture; the fingerprint tells the weights apart) and Lumina-Image-2.0.
Anything else is refused with an error naming what was found and what is supported.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import torch

from ..model.checkpoint import load_dit
from ..model.checkpoint_detect import detect_architecture
from ..model.checkpoint_keys import CheckpointError, UnsupportedModelError, strip_prefix
from ..model.dit import ZImageDiT
from ..model.lumina_keys import lumina_config_from_diffusers
from .diffusers_format import config_from_diffusers
from .mapped import mapped_folder, mapped_safetensors, read_header

SUPPORTED = (
    "Z-Image / Z-Image-Turbo: a ComfyUI diffusion-model file (e.g. z_image_turbo_bf16.safetensors) or a"
    " diffusers folder whose model_index.json names ZImagePipeline; Lumina-Image-2.0: a ComfyUI"
    " diffusion-model file (e.g. lumina_2_model_bf16.safetensors) or a diffusers folder whose model_index.json"
    " names Lumina2Pipeline"
)
PIPELINES = {"ZImagePipeline": "z-image", "Lumina2Pipeline": "lumina2", "Lumina2Text2ImgPipeline": "lumina2"}
TRANSFORMERS = {
    "ZImageTransformer2DModel": ("z-image", config_from_diffusers),
    "Lumina2Transformer2DModel": ("lumina2", lumina_config_from_diffusers),
}
KNOWN_OTHER_PIPELINES = {
    "FluxPipeline": "Flux",
    "StableDiffusion3Pipeline": "SD3",
    "QwenImagePipeline": "Qwen-Image",
    "StableDiffusionXLPipeline": "SDXL",
    "StableDiffusionPipeline": "Stable Diffusion 1.x/2.x",
}

# (pattern on prefix-stripped keys, component kind); first match wins
_COMPONENTS = (
    (r"^(?:model\.)?layers\.\d+\.self_attn\.q_norm\.", "qwen3-text-encoder"),
    (r"^(?:model\.)?layers\.\d+\.pre_feedforward_layernorm\.", "gemma2-text-encoder"),
    (r"^(?:model\.)?layers\.\d+\.self_attn\.", "text-encoder"),
    (
        r"^(?:first_stage_model\.|vae\.)?(?:encoder|decoder)\.(?:down|up|mid|conv_in|conv_out|down_blocks|up_blocks|"
        r"mid_block)",
        "vae",
    ),
)


@dataclass(frozen=True)
class ModelSource:
    """Where each part of one real model lives. `folder` is the diffusers root, when there is one."""

    kind: str  # "z-image" or "lumina2"
    dit: Path  # a .safetensors file, or a diffusers transformer/ folder
    text_encoder: Path | None = None
    tokenizer: Path | None = None
    vae: Path | None = None
    folder: Path | None = None


def component_kind(path: Path) -> str:
    """ "z-image" / "lumina2" for a DiT file, "qwen3-text-encoder", "gemma2-text-encoder", "text-encoder" or "vae"
    for the others; from the header only (no tensor is read). Unsupported diffusion models raise
    UnsupportedModelError naming them."""
    header, _, _ = read_header(Path(path))
    shapes = {name: torch.empty(0) for name in header}  # keys are all the detectors read
    keys = strip_prefix(shapes)
    for pattern, kind in _COMPONENTS:
        compiled = re.compile(pattern)
        if any(compiled.search(key) for key in keys):
            return kind
    try:
        return detect_architecture(_shaped(header))
    except UnsupportedModelError as error:
        raise UnsupportedModelError(f"{path}: {error}. Supported: {SUPPORTED}") from None


def _shaped(header: dict[str, dict]) -> dict[str, torch.Tensor]:
    return {name: torch.empty(entry["shape"], dtype=torch.float32, device="meta") for name, entry in header.items()}


def find_model(path: str | Path) -> ModelSource:
    """The ModelSource of a diffusers folder (its root or transformer/) or of a ComfyUI diffusion-model file."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"model path {path} does not exist")
    if path.is_dir():
        return _folder_source(path)
    kind = component_kind(path)
    if kind not in ("z-image", "lumina2"):
        raise UnsupportedModelError(
            f"{path} is a {kind.replace('-', ' ')} file, not a diffusion model; pass it as"
            f" --text-encoder/--vae and the DiT file as --dit or --model"
        )
    return ModelSource(kind=kind, dit=path)


def _folder_source(path: Path) -> ModelSource:
    if (path / "model_index.json").is_file():
        index = _json(path / "model_index.json")
        name = index.get("_class_name")
        if name not in PIPELINES:
            known = KNOWN_OTHER_PIPELINES.get(name) if isinstance(name, str) else None
            found = f"{name} ({known})" if known else repr(name)
            raise UnsupportedModelError(f"{path}/model_index.json names the pipeline {found}. Supported: {SUPPORTED}")
        parts = {part: path / part for part in ("transformer", "text_encoder", "tokenizer", "vae")}
        if not parts["transformer"].is_dir():
            raise CheckpointError(f"{path} has a model_index.json but no transformer/ folder")
        return ModelSource(
            kind=PIPELINES[name],
            dit=parts["transformer"],
            folder=path,
            **{part: folder if folder.is_dir() else None for part, folder in parts.items() if part != "transformer"},
        )
    if (path / "config.json").is_file():
        name = _json(path / "config.json").get("_class_name")
        if name not in TRANSFORMERS:
            raise UnsupportedModelError(
                f"{path}/config.json describes {name!r}, not ZImageTransformer2DModel or"
                f" Lumina2Transformer2DModel. Supported: {SUPPORTED}"
            )
        return ModelSource(kind=TRANSFORMERS[name][0], dit=path)
    raise CheckpointError(
        f"{path} is a folder without model_index.json or config.json; give a diffusers folder or"
        f" a .safetensors file. Supported: {SUPPORTED}"
    )


def _json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise CheckpointError(f"cannot read {path}: {error}") from None


def load_transformer(source: ModelSource | str | Path, dtype: torch.dtype | None = None) -> ZImageDiT:
    """The frozen DiT of a model source, memory-mapped: with the file's own dtype the weights are the file's pages.

    fp8 files are cast to bf16 unless `dtype` says otherwise (one tensor at a time)."""
    if not isinstance(source, ModelSource):
        source = find_model(source)
    path = source.dit
    if path.is_dir():
        tensors = mapped_folder(path)
        data = _json(path / "config.json")
        _, read_config = TRANSFORMERS.get(data.get("_class_name", ""), TRANSFORMERS["ZImageTransformer2DModel"])
        metadata = read_config(data).to_metadata()
    else:
        tensors, metadata = mapped_safetensors(path)
    try:
        return load_dit(tensors, metadata=metadata or None, dtype=dtype)
    except CheckpointError as error:
        raise type(error)(f"{path}: {error}") from None


__all__ = ["ModelSource", "SUPPORTED", "component_kind", "find_model", "load_transformer"]
