"""Z-Erase: shuffled erase prompts, L_er = L_erase + w·L_attn, L = L_er + λ·L_pr with the adaptive λ."""

from __future__ import annotations

from .base import Method, StepLosses, erase_total, register


@register
class ZErase(Method):
    name = "zerase"
    order = 0
    shuffles = attention = constrained = True
    erase_target = "anchor"
    releases_terms = True

    def losses(self, trainer, picks, teacher: dict) -> StepLosses:
        parts = trainer.erase_parts(picks, teacher, shuffle=True, preserve=True)
        return erase_total(trainer, parts), parts.get("preserve"), parts
