"""Reversible forward wrapping: how an edit (`AdapterSet.attach`, `WeightDelta.attach`) attaches to a model. The
module's `forward` is replaced by an instance attribute and restored on detach, so the model's own parameters and
state-dict keys never change."""

from __future__ import annotations

from torch import nn


def wrap_forward(module: nn.Module, make_forward) -> tuple:
    """Replace `module.forward` by `make_forward(current forward)` (an instance attribute); returns the record
    `unwrap_forwards` needs. Wrappers stack: another edit attached before this one stays underneath."""
    previous = module.__dict__.get("forward")
    mine = make_forward(module.forward)
    module.forward = mine
    return module, previous, mine


def unwrap_forwards(records: list[tuple]) -> None:
    """Undo `wrap_forward` records, newest first; refuses if another edit was stacked on top meanwhile."""
    for module, _, mine in reversed(records):
        if module.__dict__.get("forward") is not mine:
            raise RuntimeError("detach stacked adapter sets in the reverse order of attaching them")
    for module, previous, _ in reversed(records):
        if previous is None:
            del module.forward
        else:
            module.forward = previous


__all__ = ["wrap_forward", "unwrap_forwards"]
