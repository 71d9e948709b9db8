"""Concept ablation (model-based): the erase prompt is regressed onto the current model's velocity for the anchor."""

from __future__ import annotations

import torch

from .base import Method, register


@register
class ConceptAblation(Method):
    name = "ac"
    order = 2

    def reference(self, trainer, states, sigma, picks, target):
        with torch.no_grad():
            return trainer.student(states, sigma, [trainer.pool.anchors[p] for p, _ in picks]).float()
