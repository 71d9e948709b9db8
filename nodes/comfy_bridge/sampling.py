"""Sampling as KSampler + VAEDecode do it, for ErasureCompare's image grid."""

from __future__ import annotations

import torch

import comfy.model_management as model_management
import comfy.sample


def encode_prompt(clip, text: str, template: str | None = None):
    """Conditioning of `text`, wrapped in `template` when given (Lumina-2's system prompt: `prompt_template`)."""
    from .conditioners import prompt_text

    return clip.encode_from_tokens_scheduled(clip.tokenize(prompt_text(text, template)), show_pbar=False)


def sample_images(
    model,
    vae,
    positive,
    negative,
    seed: int,
    steps: int,
    cfg: float,
    size: int,
    sampler: str = "euler",
    scheduler: str = "simple",
) -> torch.Tensor:
    """One image (1, H, W, 3) as KSampler + VAEDecode make it (same noise for the same seed)."""
    latent = torch.zeros([1, 16, size // 8, size // 8], device=model_management.intermediate_device())
    latent = comfy.sample.fix_empty_latent_channels(model, latent, 8)
    noise = comfy.sample.prepare_noise(latent, seed)
    samples = comfy.sample.sample(
        model,
        noise,
        steps,
        cfg,
        sampler,
        scheduler,
        positive,
        negative,
        latent,
        denoise=1.0,
        disable_pbar=True,
        seed=seed,
    )
    images = vae.decode(samples)
    return images.reshape(-1, *images.shape[-3:])
