"""Several erasures on one model, merged as in the paper (§2.9; "Simply summing the weights often leads to
over-erasure"): Δθ_mul = Σ_i w_i·Δθ_i with w_i = 1/N."""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from ..common.limits import check_strength
from .gated import AdapterSet


def _strength_of(adapters: AdapterSet) -> float:
    strengths = {adapter.strength for adapter in adapters.each()}
    if len(strengths) != 1:
        raise ValueError(f"adapter set has mixed strengths {sorted(strengths)}; pass an explicit strength")
    return strengths.pop()


class ErasureStack:
    """Several erasures on one model, Δθ = Σ_i s_i·Δθ_i; `detach()` (or leaving a `with`) removes them."""

    def __init__(self, model: nn.Module, entries: Sequence[tuple[AdapterSet, float | None]]):
        if not entries:
            raise ValueError("apply_erasures needs at least one (AdapterSet, strength) entry")
        count = len(entries)
        self.sets = [adapters for adapters, _ in entries]
        self._previous = [_strength_of(adapters) for adapters in self.sets]
        self.strengths = [
            check_strength(previous / count if strength is None else strength, f"strength of erasure {index + 1}")
            for index, (previous, (_, strength)) in enumerate(zip(self._previous, entries, strict=True))
        ]
        attached: list[AdapterSet] = []
        try:
            for adapters, strength in zip(self.sets, self.strengths, strict=True):
                adapters.set_strength(strength)
                attached.append(adapters.attach(model))
        except BaseException:
            for adapters in reversed(attached):
                adapters.detach()
            self._restore_strengths()
            raise

    def _restore_strengths(self) -> None:
        for adapters, previous in zip(self.sets, self._previous, strict=True):
            adapters.set_strength(previous)

    def detach(self) -> None:
        """Detach in reverse order of attaching and give each set back the strength it had before."""
        for adapters in reversed(self.sets):
            if adapters.attached:
                adapters.detach()
        self._restore_strengths()

    def __enter__(self) -> ErasureStack:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.detach()


def apply_erasures(model: nn.Module, entries: Sequence[tuple[AdapterSet, float | None]]) -> ErasureStack:
    """Attach N erasures to `model` at once, merged as in the paper (§2.9): Δθ = Σ_i w_i·Δθ_i, w_i = 1/N.

    A `None` strength means 1/N × the set's current strength, which `load_erasure` sets to the file's
    recommended strength: each file keeps its own calibration, and the sum stays a convex combination (summing at
    full strength over-erases). An explicit strength is used as-is, not divided by N.
    """
    return ErasureStack(model, entries)


__all__ = ["ErasureStack", "apply_erasures"]
