"""The nano evaluator (judge): a small CNN that names the shape, colour, pattern and background of an image.

Four conv layers (receptive field 33 px at 64 px), a global max-pool (position-invariant: a shape anywhere counts),
one hidden layer whose output is `features` (for a Fréchet distance), and one linear head per attribute. Each head
has the attribute's values in vocabulary order plus a last `none` class, meaning "no clean single shape / colour /
pattern" (see `none_renders.render_none`). It is trained on renders and on codec reconstructions, so it can judge
decoded DiT samples. Images follow the project convention: float (B, 3, H, W) in [0, 1].
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import ClassVar, TypeVar

import torch
from torch import nn

from .codec import WEIGHTS_DIR, WidthsConfig, check_images, load_module_file, save_module
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
class EvaluatorConfig(WidthsConfig):
    widths: tuple[int, int, int, int] = (32, 64, 128, 256)
    feature_dim: int = 256

    def __post_init__(self) -> None:
        if len(self.widths) != 4 or min(self.widths) < 8 or self.feature_dim < 1:
            raise ValueError(f"EvaluatorConfig needs 4 widths ≥ 8 and feature_dim ≥ 1, got {self}")


def attribute_heads(feature_dim: int) -> nn.ModuleDict:
    """One linear head per attribute over its `CLASSES` (values, then `none`)."""
    return nn.ModuleDict({attribute: nn.Linear(feature_dim, len(names)) for attribute, names in CLASSES.items()})


class AttributeClassifier(nn.Module):
    """A judge of nano images: its own `features`, then `attribute_heads`; `predict` names a value (or "none") per
    attribute and image. Its weights file holds its `kind`, config and classes."""

    kind: ClassVar[str]
    default_path: ClassVar[Path]
    config_class: ClassVar[type[WidthsConfig]]
    heads: nn.ModuleDict

    def __init__(self, config: WidthsConfig) -> None:
        super().__init__()
        self.config = config

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) in [0, 1] -> penultimate features (B, feature_dim)."""
        raise NotImplementedError

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
        save_module(self, path, {"kind": self.kind, "config": asdict(self.config), "classes": CLASSES})

    @classmethod
    def load(cls: type[Classifier], path: str | os.PathLike | None = None) -> Classifier:
        """The judge from a safetensors file (default: the shipped weights), in eval mode."""
        tensors, metadata = load_module_file(path or cls.default_path, cls.kind)
        stored = {attribute: tuple(names) for attribute, names in metadata.get("classes", {}).items()}
        if stored != CLASSES:
            raise ValueError(f"{path} was trained for classes {stored}, but this vocabulary has {CLASSES}")
        judge = cls(cls.config_class.from_dict(metadata["config"]))
        judge.load_state_dict(tensors)
        return judge.eval()


Classifier = TypeVar("Classifier", bound=AttributeClassifier)


def _conv_block(inputs: int, outputs: int, kernel: int, stride: int) -> list[nn.Module]:
    return [nn.Conv2d(inputs, outputs, kernel, stride=stride, padding=kernel // 2), nn.GroupNorm(8, outputs), nn.SiLU()]


class Evaluator(AttributeClassifier):
    """Four-headed image classifier; `predict` returns canonical value names or "none"."""

    kind = "nano-evaluator"
    default_path = DEFAULT_EVALUATOR_PATH
    config_class = EvaluatorConfig
    config: EvaluatorConfig

    def __init__(self, config: EvaluatorConfig | None = None) -> None:
        super().__init__(config or EvaluatorConfig())
        first, second, third, fourth = self.config.widths
        self.trunk = nn.Sequential(
            *_conv_block(3, first, 5, 2),  # 64 -> 32
            *_conv_block(first, second, 3, 2),  # -> 16
            *_conv_block(second, third, 3, 2),  # -> 8
            *_conv_block(third, fourth, 3, 1),
        )
        self.hidden = nn.Sequential(nn.Linear(fourth, self.config.feature_dim), nn.SiLU())
        self.heads = attribute_heads(self.config.feature_dim)

    def features(self, images: torch.Tensor) -> torch.Tensor:
        check_images(images)
        pooled = self.trunk(images * 2 - 1).amax(dim=(2, 3))  # (B, C): global max-pool
        return self.hidden(pooled)
