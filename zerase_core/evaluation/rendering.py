"""Renderers: prompts (+ optional caption-feature offset) and seeds -> images, for the model under test.

A renderer owns its text encoder, so a concept vector measured with `encode` lives in the same caption-feature
space that `render(..., offset=)` perturbs (the Ring-A-Bell attack adds it to the text encoder's output, before the
DiT's `cap_embedder`). `NanoRenderer` samples the nano world's DiT exactly as `NanoWorld.generate` does, plus two
things `generate` lacks: the offset, and token zeroing (`suppress_keywords`: those tokens are removed from the keys
of every joint layer for the conditional pass only; the unconditional empty prompt is left alone).
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import torch

from ..adapters.closed_form import keyword_suppression
from ..model.sampling import euler_sample, guided_velocity, shifted_sigmas
from ..nano.prompts import NanoConditioner
from ..nano.world import DEFAULT_CFG, DEFAULT_STEPS, IMAGE_SIZE, NanoWorld, check_image_size


class Renderer(Protocol):
    def encode(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """-> caption features (B, L, D), lengths (B,)"""

    def render(self, prompts: list[str], seeds: list[int], offset: torch.Tensor | None = None) -> torch.Tensor:
        """-> images (B, 3, H, W) in [0, 1]; `offset` (L', D) is added to the first L' caption positions."""


@dataclass(frozen=True)
class SamplingSettings:
    steps: int = DEFAULT_STEPS
    cfg: float = DEFAULT_CFG
    size: int = IMAGE_SIZE
    batch_size: int = 64

    def __post_init__(self) -> None:
        if self.steps < 1 or self.batch_size < 1:
            raise ValueError(f"sampling steps ({self.steps}) and batch_size ({self.batch_size}) must be ≥ 1")
        check_image_size(self.size)


def add_offset(features: torch.Tensor, offset: torch.Tensor | None) -> torch.Tensor:
    """features (B, L, D) + offset (L', D) on positions < min(L, L'); positions past a prompt's length are
    padding, which the DiT never reads."""
    if offset is None:
        return features
    if offset.dim() != 2 or offset.shape[1] != features.shape[2]:
        raise ValueError(f"offset must be (L, {features.shape[2]}), got {tuple(offset.shape)}")
    width = min(features.shape[1], offset.shape[0])
    shifted = features.clone()
    shifted[:, :width] += offset[:width].to(features.dtype)
    return shifted


class NanoRenderer:
    """The nano DiT (with whatever erasure is attached to `world.dit`) as a renderer."""

    def __init__(
        self, world: NanoWorld, sampling: SamplingSettings = SamplingSettings(), suppress_keywords: tuple[str, ...] = ()
    ):
        self.world, self.sampling, self.suppress_keywords = world, sampling, tuple(suppress_keywords)
        self.conditioner = NanoConditioner(world.text_encoder)

    def encode(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        return self.world.encode(prompts)

    def _suppression(self, prompts: list[str]) -> torch.Tensor | None:
        if not self.suppress_keywords:
            return None
        mask = keyword_suppression(self.conditioner, prompts, list(self.suppress_keywords))
        return mask if mask.any() else None

    @torch.no_grad()
    def _sample(self, prompts: list[str], seeds: list[int], offset: torch.Tensor | None) -> torch.Tensor:
        world, sampling = self.world, self.sampling
        context, lengths = self.encode(prompts)
        context = add_offset(context, offset)
        empty, empty_lengths = self.encode([""] * len(prompts))
        suppress = self._suppression(prompts)

        velocity = guided_velocity(
            world.dit, context, lengths, sampling.cfg, empty, empty_lengths, suppress_keys=suppress
        )
        noise = world.noise(seeds, sampling.size)
        latents = euler_sample(velocity, noise, shifted_sigmas(sampling.steps, world.dit.config.shift))
        return world.codec.decode(latents)

    def render(self, prompts: list[str], seeds: list[int], offset: torch.Tensor | None = None) -> torch.Tensor:
        if len(prompts) != len(seeds):
            raise ValueError(f"got {len(prompts)} prompts but {len(seeds)} seeds; give one seed per prompt")
        size = self.sampling.batch_size
        images = torch.cat(
            [
                self._sample(prompts[start : start + size], seeds[start : start + size], offset)
                for start in range(0, len(prompts), size)
            ]
        )
        return images.nan_to_num(nan=0.0)  # a model that outputs NaN is scored as black images, not crashed on


@contextmanager
def erasure_applied(
    world: NanoWorld,
    path: str | Path,
    strength: float | None = None,
    allow_other_base: bool = False,
    allow_partial: bool = False,
):
    """Attach an erasure file to `world.dit` for the `with` block; yields (info, strength used). A partial file is
    refused unless `allow_partial` (the benchmark scores a diverged run's last finite adapters)."""
    from ..nano.erasure_runs import attach_file

    edit, info = attach_file(world, Path(path), strength, allow_other_base, allow_partial)
    try:
        yield info, info.recommended_strength if strength is None else float(strength)
    finally:
        edit.detach()
