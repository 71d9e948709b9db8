"""The interface every training method implements, and the registry that finds a method by its name."""

from __future__ import annotations

from typing import ClassVar

import torch

# (L_er, L_pr or None, named parts) of one step, as means over this process's rows
StepLosses = tuple[torch.Tensor, "torch.Tensor | None", dict[str, torch.Tensor]]

_REGISTRY: dict[str, type[Method]] = {}


class Method:
    """One way to erase a concept. A trainable method says which losses one step computes from the trainer's parts
    (`EraseTrainer.erase_parts`, `EraseTrainer.preservation_loss`); the trainer adds λ·L_pr when L_pr is returned.
    A closed-form method (`trainable = False`) implements `solve` instead and never enters the training loop."""

    name: ClassVar[str] = ""
    order: ClassVar[int] = 100  # position in lists of methods (CLI choices, messages)
    trainable: ClassVar[bool] = True
    shuffles: ClassVar[bool] = False  # trains on word-shuffled erase prompts (Z-Erase §2.4)
    attention: ClassVar[bool] = False  # adds L_attn, image→keyword attention suppression (× attention_weight)
    constrained: ClassVar[bool] = False  # λ from the controller (adaptive mode) and the stationarity check
    gate: ClassVar[str] = "text"  # which token rows the adapters' delta reaches (AdapterConfig.gate)
    erase_target: ClassVar[str] = "empty"  # L_erase's target when EraseConfig.erase_target is None
    # its losses come from erase_parts(preserve=True), whose terms the trainer can release one forward at a time
    # (engine/gradients.StagedBackward)
    releases_terms: ClassVar[bool] = False

    def reference(
        self, trainer, states: torch.Tensor, sigma: torch.Tensor, picks, target: torch.Tensor
    ) -> torch.Tensor:
        """What the student's velocity on the erase prompt is regressed onto (default: the teacher's ESD target)."""
        return target

    def losses(self, trainer, picks, teacher: dict) -> StepLosses:
        """L_erase (+ weighted L_attn) on the erase prompts; no preservation term."""
        parts = trainer.erase_parts(picks, teacher, shuffle=self.shuffles, preserve=False)
        return erase_total(trainer, parts), None, parts

    def solve(self, model, conditioner, prompts):
        raise NotImplementedError(f"{self.name} is trained, not solved")


def erase_total(trainer, parts: dict[str, torch.Tensor]) -> torch.Tensor:
    """L_er = L_erase + w·L_attn (w = EraseConfig.attention_weight; L_attn only where it was computed)."""
    return parts["erase"] + trainer.config.attention_weight * parts.get("attention", 0.0)


def register(cls: type[Method]) -> type[Method]:
    """Class decorator: make `cls` known by its `name`."""
    if not cls.name or cls.name in _REGISTRY:
        raise ValueError(f"method name {cls.name!r} is empty or already registered")
    _REGISTRY[cls.name] = cls
    return cls


def method(name: str) -> Method:
    """The method registered as `name`."""
    if name not in _REGISTRY:
        raise ValueError(f"unknown method {name!r}; known methods: {method_names()}")
    return _REGISTRY[name]()


def shuffles(name: str) -> bool:
    """Whether method `name` trains on word-shuffled erase prompts (so a shuffle bank applies to it)."""
    return name in _REGISTRY and _REGISTRY[name].shuffles


def method_names(trainable: bool | None = None) -> tuple[str, ...]:
    """Registered names in their list order; only trainable (or only closed-form) ones when `trainable` is given."""
    chosen = [cls for cls in _REGISTRY.values() if trainable is None or cls.trainable == trainable]
    return tuple(cls.name for cls in sorted(chosen, key=lambda cls: cls.order))
