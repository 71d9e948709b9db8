"""ZEraseTrain's NextDiT keeps what the core model keeps for the backward: its norms and SwiGLU gate recomputed.

- Norms (zerase_core.model.layers.Recomputed): ComfyUI's RMSNorm ops call torch's rms_norm, which on the CPU is a
  composite of float32 ops: under autograd a bf16 block keeps a float32 copy of each norm's input (six per joint
  block: the four sandwich norms and the per-head Q/K norms). Each norm whose weights are frozen and whose input
  needs a gradient keeps only that input; its own forward reruns in the backward, with the cast, offload and
  interrupt checks of ComfyUI's op as in the forward.
- SwiGLU (layers.silu_gate, GatedSiLU): FeedForward._forward_silu_gating keeps w1·x and w3·x, not silu(w1·x) too (one
  FFN-wide tensor less per block); fp16 keeps ComfyUI's own (its clamp).
Gradients are the same bit for bit (tests/comfyui/test_comfyui_recomputed_ops.py).
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import contextmanager
from typing import cast

import torch
from torch import nn

import comfy.ldm.lumina.model

from zerase_core.model.layers import Recomputed, recomputes, silu_gate


def _recomputed_norm(module: nn.Module):
    original = module.forward

    def forward(x, *args, **kwargs):
        if args or kwargs or not recomputes(x, module):
            return original(x, *args, **kwargs)
        return Recomputed.apply(original, x)

    return forward


def _gated(module: nn.Module):
    original = cast(Callable, module._forward_silu_gating)

    def gating(gate, value):
        if gate.dtype == torch.float16:  # ComfyUI clamps fp16
            return original(gate, value)
        return silu_gate(gate, value)

    return gating


@contextmanager
def recomputed_ops(network: nn.Module):
    """Every RMSNorm and FeedForward gate of `network` (ComfyUI's NextDiT) recomputed in the backward; restored
    after."""
    replaced: list[tuple[nn.Module, str, object]] = []
    for module in network.modules():
        if isinstance(module, nn.RMSNorm):
            name, replacement = "forward", _recomputed_norm(module)
        elif isinstance(module, comfy.ldm.lumina.model.FeedForward):
            name, replacement = "_forward_silu_gating", _gated(module)
        else:
            continue
        replaced.append((module, name, module.__dict__.get(name)))  # set on the instance by someone else, or None
        setattr(module, name, replacement)
    try:
        yield len(replaced)
    finally:
        for module, name, own in replaced:
            if own is None:
                delattr(module, name)
            else:
                setattr(module, name, own)
