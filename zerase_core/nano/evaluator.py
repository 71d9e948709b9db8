"""The nano evaluator (judge): a small CNN that names the shape, colour, pattern and background of an image.

Four conv layers (receptive field 33 px at 64 px), a global max-pool (position-invariant: a shape anywhere counts),
one hidden layer whose output is `features` (for a Fréchet distance), and one linear head per attribute. Each head
has the attribute's values in vocabulary order plus a last `none` class, meaning "no clean single shape / colour /
pattern" (see `render.render_none`). It is trained on renders and on codec reconstructions, so it can judge
decoded DiT samples. Images follow the project convention: float (B, 3, H, W) in [0, 1].
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass

import torch
from torch import nn

from ..common.dataclass_dicts import config_from_dict
from .codec import WEIGHTS_DIR, load_module_file, save_module
from .render import NONE
from .vocab import ATTRIBUTES

DEFAULT_EVALUATOR_PATH = WEIGHTS_DIR / "evaluator.safetensors"
# Class names per head: vocabulary order, `none` last.
CLASSES: dict[str, tuple[str, ...]] = {attribute: (*values, NONE) for attribute, values in ATTRIBUTES.items()}


def class_index(attribute: str, value: str) -> int:
    if attribute not in CLASSES:
        raise ValueError(f"unknown attribute {attribute!r}; attributes: {list(CLASSES)}")
    if value not in CLASSES[attribute]:
        raise ValueError(f"{attribute} {value!r} is not one of {list(CLASSES[attribute])}")
    return CLASSES[attribute].index(value)


@dataclass(frozen=True)
class EvaluatorConfig:
    widths: tuple[int, int, int, int] = (32, 64, 128, 256)
    feature_dim: int = 256

    def __post_init__(self) -> None:
        if len(self.widths) != 4 or min(self.widths) < 8 or self.feature_dim < 1:
            raise ValueError(f"EvaluatorConfig needs 4 widths ≥ 8 and feature_dim ≥ 1, got {self}")

    @classmethod
    def from_dict(cls, values: dict) -> EvaluatorConfig:
        return config_from_dict(cls, values, tuple_fields=("widths",))


def _conv_block(inputs: int, outputs: int, kernel: int, stride: int) -> list[nn.Module]:
    return [nn.Conv2d(inputs, outputs, kernel, stride=stride, padding=kernel // 2), nn.GroupNorm(8, outputs), nn.SiLU()]


class Evaluator(nn.Module):
    """Four-headed image classifier; `predict` returns canonical value names or "none"."""

    def __init__(self, config: EvaluatorConfig | None = None) -> None:
        super().__init__()
        self.config = config or EvaluatorConfig()
        first, second, third, fourth = self.config.widths
        self.trunk = nn.Sequential(
            *_conv_block(3, first, 5, 2),  # 64 -> 32
            *_conv_block(first, second, 3, 2),  # -> 16
            *_conv_block(second, third, 3, 2),  # -> 8
            *_conv_block(third, fourth, 3, 1),
        )
        self.hidden = nn.Sequential(nn.Linear(fourth, self.config.feature_dim), nn.SiLU())
        self.heads = nn.ModuleDict(
            {attribute: nn.Linear(self.config.feature_dim, len(names)) for attribute, names in CLASSES.items()}
        )

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) in [0, 1] -> penultimate features (B, feature_dim)."""
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"images must be (B, 3, H, W) floats in [0, 1], got shape {tuple(images.shape)}")
        pooled = self.trunk(images * 2 - 1).amax(dim=(2, 3))  # (B, C): global max-pool
        return self.hidden(pooled)

    def logits(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """Per-attribute logits, each (B, classes) in `CLASSES` order."""
        features = self.features(images)
        return {attribute: head(features) for attribute, head in self.heads.items()}

    forward = logits

    @torch.no_grad()
    def predict(self, images: torch.Tensor) -> dict[str, list[str]]:
        """Per-attribute argmax class names (canonical values or "none") for each image."""
        return {
            attribute: [CLASSES[attribute][index] for index in scores.argmax(dim=1).tolist()]
            for attribute, scores in self.logits(images).items()
        }

    def save(self, path: str | os.PathLike) -> None:
        metadata = {"kind": "nano-evaluator", "config": asdict(self.config), "classes": CLASSES}
        save_module(self, path, metadata)

    @classmethod
    def load(cls, path: str | os.PathLike | None = None) -> Evaluator:
        """Evaluator from a safetensors file (default: the shipped weights), in eval mode."""
        tensors, metadata = load_module_file(path or DEFAULT_EVALUATOR_PATH, "nano-evaluator")
        stored = {attribute: tuple(names) for attribute, names in metadata.get("classes", {}).items()}
        if stored != CLASSES:
            raise ValueError(f"{path} was trained for classes {stored}, but this vocabulary has {CLASSES}")
        evaluator = cls(EvaluatorConfig.from_dict(metadata["config"]))
        evaluator.load_state_dict(tensors)
        return evaluator.eval()
