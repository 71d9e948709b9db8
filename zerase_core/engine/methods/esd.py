"""ESD: L_erase only, the teacher's negatively guided velocity as target (Gandikota et al. 2023)."""

from __future__ import annotations

from .base import Method, register


@register
class Esd(Method):
    name = "esd"
    order = 1
