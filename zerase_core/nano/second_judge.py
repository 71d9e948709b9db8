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
from dataclasses import asdict, dataclass

import torch
from torch import nn

from ..common.dataclass_dicts import config_from_dict
from .codec import WEIGHTS_DIR, load_module_file, save_module
from .evaluator import CLASSES

DEFAULT_JUDGE2_PATH = WEIGHTS_DIR / "judge2.safetensors"
KIND = "nano-judge2"


@dataclass(frozen=True)
class SecondJudgeConfig:
    widths: tuple[int, int, int, int, int] = (24, 48, 64, 96, 128)
    feature_dim: int = 128

    def __post_init__(self) -> None:
        if len(self.widths) != 5 or min(self.widths) < 4 or self.feature_dim < 1:
            raise ValueError(f"SecondJudgeConfig needs 5 widths ≥ 4 and feature_dim ≥ 1, got {self}")

    @classmethod
    def from_dict(cls, values: dict) -> SecondJudgeConfig:
        return config_from_dict(cls, values, tuple_fields=("widths",))


def _block(inputs: int, outputs: int, stride: int) -> list[nn.Module]:
    return [nn.Conv2d(inputs, outputs, 3, stride=stride, padding=1), nn.GroupNorm(4, outputs), nn.ReLU()]


class SecondJudge(nn.Module):
    """Four-headed classifier with the evaluator's classes; `predict` returns value names or "none"."""

    def __init__(self, config: SecondJudgeConfig | None = None) -> None:
        super().__init__()
        self.config = config or SecondJudgeConfig()
        w = self.config.widths
        self.trunk = nn.Sequential(
            *_block(3, w[0], 1),
            *_block(w[0], w[1], 2),
            *_block(w[1], w[2], 2),
            *_block(w[2], w[3], 2),
            *_block(w[3], w[4], 1),
        )
        self.hidden = nn.Sequential(nn.Linear(2 * w[4], self.config.feature_dim), nn.ReLU())
        self.heads = nn.ModuleDict(
            {attribute: nn.Linear(self.config.feature_dim, len(names)) for attribute, names in CLASSES.items()}
        )

    def features(self, images: torch.Tensor) -> torch.Tensor:
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"images must be (B, 3, H, W) floats in [0, 1], got shape {tuple(images.shape)}")
        maps = self.trunk(images - 0.5)
        return self.hidden(torch.cat([maps.mean(dim=(2, 3)), maps.amax(dim=(2, 3))], dim=1))

    def logits(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        features = self.features(images)
        return {attribute: head(features) for attribute, head in self.heads.items()}

    forward = logits

    @torch.no_grad()
    def predict(self, images: torch.Tensor) -> dict[str, list[str]]:
        return {
            attribute: [CLASSES[attribute][index] for index in scores.argmax(dim=1).tolist()]
            for attribute, scores in self.logits(images).items()
        }

    def save(self, path: str | os.PathLike) -> None:
        save_module(self, path, {"kind": KIND, "config": asdict(self.config), "classes": CLASSES})

    @classmethod
    def load(cls, path: str | os.PathLike | None = None) -> SecondJudge:
        tensors, metadata = load_module_file(path or DEFAULT_JUDGE2_PATH, KIND)
        stored = {attribute: tuple(names) for attribute, names in metadata.get("classes", {}).items()}
        if stored != CLASSES:
            raise ValueError(f"{path} was trained for classes {stored}, but this vocabulary has {CLASSES}")
        judge = cls(SecondJudgeConfig.from_dict(metadata["config"]))
        judge.load_state_dict(tensors)
        return judge.eval().requires_grad_(False)
