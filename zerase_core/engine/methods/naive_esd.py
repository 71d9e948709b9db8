"""Naive ESD: ESD with the adapters' gate open on every token (image rows too); reproduces the collapse."""

from __future__ import annotations

from .base import Method, register


@register
class NaiveEsd(Method):
    name = "naive-esd"
    order = 4
    gate = "all"
