"""The λ probe's prefix kept on ComfyUI's NextDiT: embeddings and refiners computed once, the joint layers each time.

The probe measures L_pr on fixed (x_t, σ, prompt) rows before and after each step. NextDiT computes its embeddings,
context refiner and noise refiner in `patchify_and_embed`, which no ZErase adapter touches (they sit on the joint
layers), so for those rows its result is the same at every probe. While `KeptPrefix.repeating(name)` is active
(no gradients), the n-th NextDiT forward of the block returns the result that the n-th forward of the first such
block computed, provided its call looks the same (shapes, dtypes, caption length); any difference computes afresh.
The core engine does the same with `ZImageDiT.prefix` (engine/forwards.py).
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn


@dataclass
class _Entry:
    signature: tuple
    outputs: tuple


def _signature(tensors: tuple[torch.Tensor, ...], num_tokens, kwargs: dict) -> tuple | None:
    """What a repeated call must share with the first one; None when it must never be kept (reference latents)."""
    if any(kwargs.get(name) for name in ("ref_latents", "ref_contexts", "siglip_feats")):
        return None
    return (num_tokens, *((tuple(tensor.shape), tensor.dtype, tensor.device) for tensor in tensors))


class KeptPrefix:
    """Per NextDiT: `repeating(name)` around calls whose inputs repeat; `around_forward()` around each forward."""

    def __init__(self, network: nn.Module):
        self.network: Any = network  # ComfyUI's NextDiT
        self._name: str | None = None
        self._calls = 0
        self._entries: dict[tuple[str, int], _Entry] = {}
        self.computed = 0  # patchify_and_embed runs while repeating (tests count them)

    @contextmanager
    def repeating(self, name: str):
        previous, self._name, self._calls = self._name, name, 0
        try:
            yield
        finally:
            self._name = previous

    @contextmanager
    def around_forward(self):
        """While `repeating` without gradients: this forward's patchify_and_embed kept or taken from the kept."""
        if self._name is None or torch.is_grad_enabled():
            yield
            return
        key = (self._name, self._calls)
        self._calls += 1
        own = self.network.__dict__.get("patchify_and_embed")  # set by someone else on this instance, or None
        original = self.network.patchify_and_embed

        def patchify_and_embed(x, cap_feats, cap_mask, t, num_tokens, *args: Any, **kwargs: Any):
            signature = _signature((x, cap_feats, t), num_tokens, kwargs)
            entry = self._entries.get(key)
            if signature is not None and entry is not None and entry.signature == signature:
                return entry.outputs
            outputs = original(x, cap_feats, cap_mask, t, num_tokens, *args, **kwargs)
            self.computed += 1
            if signature is not None:
                self._entries[key] = _Entry(signature, outputs)
            return outputs

        self.network.patchify_and_embed = patchify_and_embed
        try:
            yield
        finally:
            if own is None:
                del self.network.patchify_and_embed  # the class's method again
            else:
                self.network.patchify_and_embed = own
