"""Recomputed norms: the block's RMSNorms keep only their input for the backward; the same gradients bit for bit."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from zerase_fixtures import kept_bytes

from zerase_core.model.config import DiTConfig
from zerase_core.model.layers import JointTransformerBlock, RMSNorm, rope_frequencies

CONFIG = DiTConfig(dim=256, n_heads=2, ffn_multiple_of=32, axes_dims=(32, 48, 48))


def _plain_norms(module: nn.Module) -> None:
    """Make every RMSNorm in module the stock nn.RMSNorm (what autograd alone keeps)."""
    for child in module.modules():
        if isinstance(child, RMSNorm):
            child.forward = nn.RMSNorm.forward.__get__(child)


def _run(block, x, cos, sin, adaln, weight_grad: bool):
    """(output, input gradient, norm weight gradient or None, bytes autograd keeps outside the parameters)."""
    block.zero_grad(set_to_none=True)
    x = x.clone().requires_grad_(True)
    with kept_bytes(block) as kept:
        output = block(x, cos, sin, adaln)
    output.float().square().sum().backward()
    norm_grad = block.attention_norm1.weight.grad.clone() if weight_grad else None
    return output.detach(), x.grad, norm_grad, sum(kept.values())


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
@pytest.mark.parametrize("weight_grad", [False, True])
def test_recomputed_norms_give_the_same_gradients_and_keep_less(dtype, weight_grad):
    torch.manual_seed(0)
    block = JointTransformerBlock(CONFIG, modulation=True, dtype=dtype).requires_grad_(False)
    block.attention_norm1.weight.requires_grad_(weight_grad)
    with torch.no_grad():
        for parameter in block.parameters():  # norm weights away from 1, so their gradients matter
            parameter.normal_(1.0 if parameter.dim() == 1 else 0.0, 0.05)
    tokens = 24
    positions = torch.stack(torch.meshgrid(torch.arange(1), torch.arange(4), torch.arange(6), indexing="ij"), -1)
    cos, sin = rope_frequencies(positions.reshape(1, tokens, 3).expand(2, -1, -1), CONFIG.axes_dims, 256.0)
    x = torch.randn(2, tokens, CONFIG.dim, dtype=dtype)
    adaln = torch.randn(2, CONFIG.adaln_width, dtype=dtype)
    output, grad, norm_grad, kept = _run(block, x, cos, sin, adaln, weight_grad)
    _plain_norms(block)
    plain_output, plain_grad, plain_norm_grad, plain_kept = _run(block, x, cos, sin, adaln, weight_grad)
    assert torch.equal(output, plain_output) and torch.equal(grad, plain_grad)
    if weight_grad:
        assert torch.equal(norm_grad, plain_norm_grad)
    if dtype == torch.float32:  # the stock path: no float32 copy to save
        assert kept == plain_kept
    else:  # the float32 copies of the norms' inputs (2·tokens·dim·4 bytes each) no longer kept; a norm whose
        # weight trains keeps the stock path
        assert plain_kept - kept >= (3 if weight_grad else 4) * 2 * tokens * CONFIG.dim * 4


def test_without_gradients_the_stock_norm_runs():
    norm = RMSNorm(16)
    x = torch.randn(3, 16)
    with torch.no_grad():
        assert torch.equal(norm(x), nn.RMSNorm.forward(norm, x))
    assert set(norm.state_dict()) == {"weight"}
