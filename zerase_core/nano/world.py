"""The bundled nano world: nano DiT + nano text encoder + latent codec + evaluator, and text-to-image with them."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch

from ..model.checkpoint import load_dit
from ..model.dit import ZImageDiT
from ..model.sampling import euler_sample, guided_velocity, initial_noise, shifted_sigmas
from . import paths
from .codec import LatentCodec
from .evaluator import Evaluator
from .text_encoder import NanoTextEncoder

DEFAULT_STEPS = 20
DEFAULT_CFG = 3.0
IMAGE_SIZE = 64


def check_image_size(size: int) -> None:
    if size < 64 or size % 16:
        raise ValueError(f"image size {size} must be a multiple of 16 and ≥ 64 (latent = size/8, patch 2)")


@dataclass
class NanoWorld:
    dit: ZImageDiT
    text_encoder: NanoTextEncoder
    codec: LatentCodec
    evaluator: Evaluator

    @classmethod
    def load(cls, folder: str | Path | None = None, dtype: torch.dtype = torch.float32) -> NanoWorld:
        """The shipped nano world, or one in `folder` (default: $ZERASE_NANO_WEIGHTS, else the package's weights)."""
        folder = Path(folder or os.environ.get("ZERASE_NANO_WEIGHTS") or paths.WEIGHTS)
        files = {
            name: folder / path.name
            for name, path in (
                ("dit", paths.DIT),
                ("text", paths.TEXT_ENCODER),
                ("codec", paths.CODEC),
                ("evaluator", paths.EVALUATOR),
            )
        }
        missing = [path.name for path in files.values() if not path.exists()]
        if missing:
            raise FileNotFoundError(
                f"nano weights missing from {folder}: {missing}; reinstall the package or run "
                "`python -m zerase_core.nano.train ...` (see README)"
            )
        return cls(
            dit=load_dit(files["dit"], dtype=dtype),
            text_encoder=NanoTextEncoder.load(files["text"]),
            codec=LatentCodec.load(files["codec"]).eval().requires_grad_(False),
            evaluator=Evaluator.load(files["evaluator"]).eval().requires_grad_(False),
        )

    @torch.no_grad()
    def encode(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        return self.text_encoder.encode(prompts)

    def noise(self, seeds: list[int], size: int = IMAGE_SIZE) -> torch.Tensor:
        """One noise tensor per seed (batch-invariant: an image depends only on its own seed)."""
        check_image_size(size)
        channels = self.dit.config.in_channels
        return torch.cat([initial_noise((1, channels, size // 8, size // 8), seed) for seed in seeds])

    @torch.no_grad()
    def generate(
        self,
        prompts: list[str],
        seeds: list[int],
        steps: int = DEFAULT_STEPS,
        cfg: float = DEFAULT_CFG,
        size: int = IMAGE_SIZE,
        model: torch.nn.Module | None = None,
        batch_size: int = 64,
    ) -> torch.Tensor:
        """Images (B, 3, size, size) in [0, 1]; `model` overrides the DiT (e.g. one carrying erasure adapters)."""
        images = []
        for start in range(0, len(prompts), batch_size):
            batch, batch_seeds = prompts[start : start + batch_size], seeds[start : start + batch_size]
            if len(batch) != len(batch_seeds):
                raise ValueError(f"got {len(batch)} prompts but {len(batch_seeds)} seeds; give one seed per prompt")
            context, lengths = self.encode(batch)
            uncond, uncond_lengths = self.encode([""] * len(batch))
            velocity = guided_velocity(model or self.dit, context, lengths, cfg, uncond, uncond_lengths)
            latents = euler_sample(
                velocity, self.noise(batch_seeds, size), shifted_sigmas(steps, self.dit.config.shift)
            )
            images.append(self.codec.decode(latents))
        return torch.cat(images)
