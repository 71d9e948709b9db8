"""How `ZImageDiT` calls one transformer block: directly, or under gradient checkpointing (the block's activations
are recomputed in the backward, inside the same token layout), optionally with a keyword-attention probe."""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from .layout import active_layout, current_layout

# (normalised, rotated queries, keys) of a joint block -> its keyword attention maps (`AttentionCapture.probe`)
AttentionMaps = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def run_block(block: nn.Module, inputs: tuple, checkpointed: bool) -> torch.Tensor:
    """`block(*inputs)`, inputs = (hidden, cos, sin, adaln_input, key_mask); checkpointed when asked."""
    if checkpointed:
        return checkpoint(block, *inputs, use_reentrant=False, context_fn=_layout_context)
    return block(*inputs)


def run_probed_block(
    block: nn.Module, inputs: tuple, checkpointed: bool, attention_maps: AttentionMaps
) -> tuple[torch.Tensor, torch.Tensor]:
    """(output, keyword attention maps) of a joint block: `run_block` with `attention_maps` probing its attention."""
    hidden, *rest = inputs

    def run(hidden_in):
        # The maps are an output of the (possibly checkpointed) function: recomputation never appends twice,
        # and only the keyword columns are kept between forward and backward.
        collected: list[torch.Tensor] = []
        out = block(hidden_in, *rest, lambda query, key: collected.append(attention_maps(query, key)))
        return out, collected[0]

    if checkpointed:
        return checkpoint(run, hidden, use_reentrant=False, context_fn=_layout_context)
    return run(hidden)


def _layout_context():
    # Recomputation runs in backward, after `active_layout` has exited: re-enter the same layout for gated adapters.
    layout = current_layout()
    recompute = active_layout(layout) if layout is not None else contextlib.nullcontext()
    return contextlib.nullcontext(), recompute


__all__ = ["AttentionMaps", "run_block", "run_probed_block"]
