"""A real model's parts as the CLI uses them: where they are (`parts`), and text-to-image with them (`RealWorld`).

Sampling is the core's: Euler on ComfyUI's `simple` shifted sigmas, cfg in ComfyUI's convention (1 = the
conditional prediction alone, as Turbo). diffusers' ZImagePipeline computes the same for guidance_scale = cfg − 1
and sigmas = the unshifted schedule (`unshifted_sigmas`), which the parity test passes it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TypedDict

import torch

from ..common.prompts import TextConditioner
from ..model.dit import ZImageDiT
from ..model.sampling import euler_sample, guided_velocity, initial_noise, shifted_sigmas
from .sources import ModelSource, find_model
from .text_encoder import COMFY_TEMPLATE, QwenConditioner, load_qwen3, load_tokenizer
from .vae import decode, load_vae


class SamplerPreset(TypedDict):
    steps: int
    cfg: float


TURBO: SamplerPreset = {"steps": 8, "cfg": 1.0}  # Z-Image-Turbo: 8 steps, no guidance
BASE: SamplerPreset = {"steps": 50, "cfg": 5.0}  # Z-Image (base): diffusers' guidance_scale 4 = cfg 5
LUMINA2: SamplerPreset = {"steps": 25, "cfg": 4.0}  # Lumina-Image-2.0: ComfyUI's template (25 steps, cfg 4, shift 6);
#                                           Lumina2Pipeline's guidance_scale 4 is the same cfg (30 steps default)
PRESETS = {"turbo": TURBO, "base": BASE, "lumina2": LUMINA2}
PRESET_KINDS = {"turbo": "z-image", "base": "z-image", "lumina2": "lumina2"}
DEFAULT_PRESET = {"z-image": "turbo", "lumina2": "lumina2"}


def sampler_preset(kind: str, name: str | None) -> SamplerPreset:
    """{"steps", "cfg"} of a --preset for a model kind; None = the kind's default (Turbo's, Lumina-2's)."""
    name = name or DEFAULT_PRESET[kind]
    if PRESET_KINDS[name] != kind:
        fits = sorted(preset for preset, owner in PRESET_KINDS.items() if owner == kind)
        raise ValueError(
            f"--preset {name} is for {PRESET_KINDS[name]}, but the model is {kind}; use --preset"
            f" {' or '.join(fits)} (or leave it out)"
        )
    return PRESETS[name]


def unshifted_sigmas(steps: int) -> list[float]:
    """The schedule before the shift: what to pass a diffusers flow-match scheduler as `sigmas` to get
    `shifted_sigmas(steps)`."""
    return [(1000 - int(index * 1000 / steps)) / 1000 for index in range(steps)]


def comfy_tokenizer() -> Path | None:
    """ComfyUI's Qwen tokenizer folder (comfy/text_encoders/qwen25_tokenizer) under $COMFYUI_PATH, if there."""
    root = os.environ.get("COMFYUI_PATH")
    folder = Path(root) / "comfy" / "text_encoders" / "qwen25_tokenizer" if root else None
    return folder if folder is not None and folder.is_dir() else None


def parts(
    model: str | Path | None = None,
    dit: str | Path | None = None,
    text_encoder: str | Path | None = None,
    vae: str | Path | None = None,
    tokenizer: str | Path | None = None,
) -> ModelSource:
    """Every part of one real model: `model` (a diffusers folder or a DiT file), the others override or add."""
    main = model if model is not None else dit
    if main is None:
        raise ValueError(
            "give --model (a diffusers folder or a DiT .safetensors) or --dit with --text-encoder and --vae"
        )
    source = find_model(main)
    if model is not None and dit is not None:
        source = replace(source, dit=find_model(dit).dit)
    source = replace(
        source,
        text_encoder=_path_or(text_encoder, source.text_encoder),
        vae=_path_or(vae, source.vae),
        tokenizer=_path_or(tokenizer, source.tokenizer),
    )
    if source.tokenizer is None and source.kind == "z-image":
        source = replace(source, tokenizer=comfy_tokenizer())
    if source.tokenizer is None and source.kind == "lumina2":  # ComfyUI's Gemma file carries its tokenizer
        from .gemma_tokenizer import has_embedded_tokenizer

        if source.text_encoder is not None and has_embedded_tokenizer(source.text_encoder):
            source = replace(source, tokenizer=source.text_encoder)
    return source


def _path_or(given: str | Path | None, found: Path | None) -> Path | None:
    return Path(given) if given is not None else found


HINTS = {
    "text_encoder": "--text-encoder (e.g. qwen_3_4b.safetensors)",
    "vae": "--vae (e.g. ae.safetensors)",
    "tokenizer": "--tokenizer (a diffusers tokenizer/ folder or ComfyUI's comfy/text_encoders/qwen25_tokenizer;"
    " or set COMFYUI_PATH)",
}
LUMINA_HINTS = {
    **HINTS,
    "text_encoder": "--text-encoder (e.g. gemma_2_2b_fp16.safetensors)",
    "tokenizer": "--tokenizer (the tokenizer/ folder of the diffusers download"
    " Alpha-VLLM/Lumina-Image-2.0), or a --text-encoder file that carries Gemma's tokenizer"
    " (ComfyUI's gemma_2_2b_fp16.safetensors stores it as the tensor `spiece_model`; none was"
    " found)",
}


def missing_parts(source: ModelSource, needed: tuple[str, ...]) -> None:
    """One error naming every part in `needed` that `source` lacks, with the option and file that give it."""
    hints = LUMINA_HINTS if source.kind == "lumina2" else HINTS
    absent = [hints[name] for name in needed if getattr(source, name) is None]
    if absent:
        raise ValueError(f"{source.dit} needs {' and '.join(absent)}")


def required_part(source: ModelSource, name: str) -> Path:
    """The path of part `name` of `source`; the error of `missing_parts` when it has none."""
    path = getattr(source, name)
    if path is None:
        missing_parts(source, (name,))
    return path


def conditioner(source: ModelSource, dtype: torch.dtype | None = None) -> QwenConditioner:
    """The text encoder of `source` (loaded now) with its tokenizer: a diffusers folder's tokenizer brings its chat
    template; ComfyUI's tokenizer folder gets ComfyUI's Z-Image template."""
    missing_parts(source, ("text_encoder", "tokenizer"))
    if source.kind == "lumina2":
        from .gemma import gemma_conditioner

        return gemma_conditioner(source, dtype)
    tokenizer = load_tokenizer(required_part(source, "tokenizer"))
    own_template = (
        source.folder is not None
        and source.tokenizer == source.folder / "tokenizer"
        and getattr(tokenizer, "chat_template", None)
    )
    encoder = load_qwen3(required_part(source, "text_encoder"), dtype)
    return QwenConditioner(tokenizer, encoder, None if own_template else COMFY_TEMPLATE)


@dataclass
class RealWorld:
    dit: ZImageDiT
    conditioner: TextConditioner
    vae: Any = None  # a diffusers AutoencoderKL (diffusers ships no types); None without a VAE

    @property
    def latent_factor(self) -> int:
        return 2 ** (len(self.vae.config.block_out_channels) - 1) if self.vae is not None else 8

    def noise(self, seeds: list[int], height: int, width: int) -> torch.Tensor:
        factor = 2 * self.latent_factor
        if height % factor or width % factor:
            raise ValueError(
                f"image size {height}x{width} must be a multiple of {factor} (VAE {self.latent_factor}x, patch 2)"
            )
        shape = (1, self.dit.config.in_channels, height // self.latent_factor, width // self.latent_factor)
        return torch.cat([initial_noise(shape, seed) for seed in seeds])

    @torch.no_grad()
    def sample_latents(
        self,
        prompts: list[str],
        seeds: list[int],
        steps: int,
        cfg: float,
        height: int,
        width: int,
        model: torch.nn.Module | None = None,
        noise: torch.Tensor | None = None,
    ) -> torch.Tensor:
        if len(prompts) != len(seeds):
            raise ValueError(f"got {len(prompts)} prompts but {len(seeds)} seeds; give one seed per prompt")
        context, lengths = self.conditioner.encode(prompts)
        uncond, uncond_lengths = self.conditioner.encode([""] * len(prompts)) if cfg != 1.0 else (None, None)
        velocity = guided_velocity(model or self.dit, context, lengths, cfg, uncond, uncond_lengths)
        start = self.noise(seeds, height, width) if noise is None else noise
        return euler_sample(velocity, start, shifted_sigmas(steps, self.dit.config.shift))

    @torch.no_grad()
    def generate(self, *sampling, **options) -> torch.Tensor:
        """Images (B, 3, H, W) in [0, 1] of `sample_latents` (the same arguments: prompts, seeds, steps, cfg, height,
        width, model, noise); `model` overrides the DiT (e.g. one carrying erasure adapters)."""
        if self.vae is None:
            raise ValueError("this model has no VAE; give --vae (e.g. ae.safetensors)")
        return decode(self.vae, self.sample_latents(*sampling, **options))


def load_vae_of(source: ModelSource):
    return load_vae(required_part(source, "vae"))


__all__ = [
    "TURBO",
    "BASE",
    "LUMINA2",
    "PRESETS",
    "sampler_preset",
    "RealWorld",
    "parts",
    "conditioner",
    "load_vae_of",
    "unshifted_sigmas",
    "comfy_tokenizer",
    "missing_parts",
]
