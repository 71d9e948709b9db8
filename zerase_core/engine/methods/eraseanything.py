"""EraseAnything: erase (shuffled prompts, L_attn) and preserve on alternating steps, as its official code does."""

from __future__ import annotations

from .base import Method, StepLosses, erase_total, register


@register
class EraseAnything(Method):
    name = "eraseanything"
    order = 3
    shuffles = attention = True

    def losses(self, trainer, picks, teacher: dict) -> StepLosses:
        if trainer.step % 2 == 1:
            parts = {"preserve": trainer.preservation_loss(trainer.parallel.local(picks), teacher)}
            return parts["preserve"], None, parts
        parts = trainer.erase_parts(picks, teacher, shuffle=True, preserve=False)
        return erase_total(trainer, parts), None, parts
