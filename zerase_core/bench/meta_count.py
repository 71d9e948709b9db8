"""Counting FLOPs on shapes only: meta tensors that run the real engine without memory (`MetaTensors`, `to_meta`),
and a FLOP counter that also knows the CPU's fused attention kernel (`Counter`). Used by perf_flops.py and
scripts/comfy_flops.py."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.utils import flop_counter
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves, tree_map_only
from torch.utils.flop_counter import FlopCounterMode

META = torch.device("meta")


class MetaTensors(TorchDispatchMode):
    """Shapes only: an op that touches a meta tensor runs on meta copies of all its tensors (so CPU inputs such as
    noise, sigmas and captions meet meta weights), and a meta result stays meta even when moved to the CPU. A value
    read from a meta tensor (`.item()`, `bool()`) is 1 / True: losses count as finite, so the step takes its normal
    path. Tensors that never meet a meta tensor (caption lengths, keyword columns) are computed for real. Attention
    takes the fused kernel it takes on a CPU or GPU (`FusedAttention`), not the math fallback that meta tensors
    would get, whose backward keeps the probabilities instead of recomputing them."""

    def __enter__(self):
        self._attention = FusedAttention()
        self._attention.__enter__()
        return super().__enter__()

    def __exit__(self, *exc):
        try:
            return super().__exit__(*exc)
        finally:
            self._attention.__exit__(*exc)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is torch.ops.aten._local_scalar_dense.default and args[0].is_meta:
            dtype = args[0].dtype
            return True if dtype == torch.bool else 1.0 if dtype.is_floating_point or dtype.is_complex else 1
        if any(isinstance(leaf, torch.Tensor) and leaf.is_meta for leaf in tree_leaves((args, kwargs))):
            args, kwargs = tree_map_only(
                torch.Tensor, lambda tensor: tensor if tensor.is_meta else tensor.to(META), (args, kwargs)
            )
            if kwargs.get("device") is not None:
                kwargs["device"] = META
        return func(*args, **kwargs)


class FusedAttention:
    """While entered, `F.scaled_dot_product_attention` on meta tensors is the fused (flash) kernel that real CPUs run,
    with a boolean key mask made the additive float mask, as torch makes it; other tensors take torch's own function.
    Its FLOPs are those of the GPU kernels. (A function attribute, not a TorchFunctionMode: the checkpointed blocks'
    recomputation in the backward must see it too.)"""

    def __enter__(self):
        self._original = F.scaled_dot_product_attention
        original = self._original

        def attention(query, *args, **kwargs):
            return _flash(query, *args, **kwargs) if query.is_meta else original(query, *args, **kwargs)

        F.scaled_dot_product_attention = attention
        return self

    def __exit__(self, *exc):
        F.scaled_dot_product_attention = self._original


def _flash(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, enable_gqa=False):
    if enable_gqa and key.shape[-3] != query.shape[-3]:
        repeat = query.shape[-3] // key.shape[-3]
        key, value = key.repeat_interleave(repeat, -3), value.repeat_interleave(repeat, -3)
    if attn_mask is not None and attn_mask.dtype == torch.bool:
        attn_mask = torch.zeros(attn_mask.shape, dtype=query.dtype, device=META).masked_fill(
            ~attn_mask.to(META), float("-inf")
        )
    return torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(
        query, key, value, dropout_p, is_causal, attn_mask=attn_mask, scale=scale
    )[0]


def to_meta(module: torch.nn.Module) -> None:
    """Move a module's parameters to meta in place, keeping the Parameter objects (the optimizer holds them)."""
    previous = torch.__future__.get_swap_module_params_on_conversion()
    torch.__future__.set_swap_module_params_on_conversion(True)
    try:
        module.to(META)
    finally:
        torch.__future__.set_swap_module_params_on_conversion(previous)


def _cpu_attention(query, key, value, *args, out_shape=None, **kwargs) -> int:
    return flop_counter.sdpa_flop_count(query, key, value)


def _cpu_attention_backward(grad_out, query, key, value, *args, out_shape=None, **kwargs) -> int:
    return flop_counter.sdpa_backward_flop_count(grad_out, query, key, value)


# torch's counter has no formula for the CPU's fused attention kernel (meta tensors take the math path, counted as
# its matmuls): the same formulas as the GPU kernels', so a step on real CPU tensors counts the same FLOPs.
CPU_ATTENTION = {
    torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _cpu_attention,
    torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward: _cpu_attention_backward,
}


class Counter:
    """A FlopCounterMode that can be read while it runs."""

    def __init__(self):
        self.mode = FlopCounterMode(display=False, custom_mapping=CPU_ATTENTION)

    def total(self) -> int:
        return int(self.mode.get_total_flops())
