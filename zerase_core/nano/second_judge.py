"""A second, independent judge of nano images (`weights/judge2.safetensors`), for reporting erasure results.

The strength search scores with the nano evaluator; a result is only trustworthy if a judge that played no part in
choosing it agrees. This one differs from the evaluator in every choice that could share a blind spot: a five-layer
3×3 trunk with batch-free group norms and mean+max pooling (the evaluator: four layers, max pool), its own seed, a
larger share of `none` renders, stronger codec and pixel noise, and random brightness. It is trained on the
renderer only (renders and codec reconstructions, never DiT samples), like the evaluator, and has the same heads:
the attribute values in vocabulary order plus `none` (no clean single shape / colour / pattern).
Train it with `python -m zerase_core.nano.train judge2`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
from torch import nn

from .codec import WEIGHTS_DIR, WidthsConfig, check_images
from .evaluator import AttributeClassifier, attribute_heads

DEFAULT_JUDGE2_PATH = WEIGHTS_DIR / "judge2.safetensors"
KIND = "nano-judge2"


@dataclass(frozen=True)
class SecondJudgeConfig(WidthsConfig):
    widths: tuple[int, int, int, int, int] = (24, 48, 64, 96, 128)
    feature_dim: int = 128

    def __post_init__(self) -> None:
        if len(self.widths) != 5 or min(self.widths) < 4 or self.feature_dim < 1:
            raise ValueError(f"SecondJudgeConfig needs 5 widths ≥ 4 and feature_dim ≥ 1, got {self}")


def _block(inputs: int, outputs: int, stride: int) -> list[nn.Module]:
    return [nn.Conv2d(inputs, outputs, 3, stride=stride, padding=1), nn.GroupNorm(4, outputs), nn.ReLU()]


class SecondJudge(AttributeClassifier):
    """Four-headed classifier with the evaluator's classes; `predict` returns value names or "none"."""

    kind = KIND
    default_path = DEFAULT_JUDGE2_PATH
    config_class = SecondJudgeConfig
    config: SecondJudgeConfig

    def __init__(self, config: SecondJudgeConfig | None = None) -> None:
        super().__init__(config or SecondJudgeConfig())
        w = self.config.widths
        self.trunk = nn.Sequential(
            *_block(3, w[0], 1),
            *_block(w[0], w[1], 2),
            *_block(w[1], w[2], 2),
            *_block(w[2], w[3], 2),
            *_block(w[3], w[4], 1),
        )
        self.hidden = nn.Sequential(nn.Linear(2 * w[4], self.config.feature_dim), nn.ReLU())
        self.heads = attribute_heads(self.config.feature_dim)

    def features(self, images: torch.Tensor) -> torch.Tensor:
        check_images(images)
        maps = self.trunk(images - 0.5)
        return self.hidden(torch.cat([maps.mean(dim=(2, 3)), maps.amax(dim=(2, 3))], dim=1))

    @classmethod
    def load(cls, path: str | os.PathLike | None = None) -> SecondJudge:
        """The judge in eval mode, frozen: it only scores."""
        return super().load(path).requires_grad_(False)
