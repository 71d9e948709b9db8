"""uce-text: the closed-form edit of the caption projection `cap_embedder.1` (seconds, no sampling, no training)."""

from __future__ import annotations

from .base import Method, register


@register
class UceText(Method):
    name = "uce-text"
    order = 5
    trainable = False

    def solve(self, model, conditioner, prompts):
        from ...adapters.closed_form import uce_text

        return uce_text(model, conditioner, prompts)
