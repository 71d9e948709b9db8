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


def _keyword_step(block, x, cos, sin, adaln, columns, recompute: bool):
    """(output, maps, input gradient, bytes kept) of a block that captures keyword attention, L = output² + maps."""
    from zerase_core.model import keyword_attention as module

    capture = module.AttentionCapture(columns=columns)
    probe = capture.probe(4, 20, None)
    maps = []
    x = x.clone().requires_grad_(True)
    original = module.Recomputed.apply
    if not recompute:  # what autograd alone keeps: the capture's float32 tensors
        module.Recomputed.apply = lambda function, *inputs: function(*inputs)
    try:
        with kept_bytes(block) as kept:
            output = block(x, cos, sin, adaln, probe=lambda query, key: maps.append(probe(query, key)))
    finally:
        module.Recomputed.apply = original
    (output.float().square().sum() + 10 * maps[0].sum()).backward()
    return output.detach(), maps[0].detach(), x.grad, sum(kept.values())


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_the_keyword_capture_is_recomputed_with_the_same_gradients_and_keeps_less(dtype):
    torch.manual_seed(1)
    block = JointTransformerBlock(CONFIG, modulation=True, dtype=dtype).requires_grad_(False)
    with torch.no_grad():
        for parameter in block.parameters():
            parameter.normal_(1.0 if parameter.dim() == 1 else 0.0, 0.05)
    tokens = 24
    positions = torch.stack(torch.meshgrid(torch.arange(1), torch.arange(4), torch.arange(6), indexing="ij"), -1)
    cos, sin = rope_frequencies(positions.reshape(1, tokens, 3).expand(2, -1, -1), CONFIG.axes_dims, 256.0)
    x, adaln = torch.randn(2, tokens, CONFIG.dim, dtype=dtype), torch.randn(2, CONFIG.adaln_width, dtype=dtype)
    columns = torch.tensor([[1, 2], [3, 0]])
    ours = _keyword_step(block, x, cos, sin, adaln, columns, recompute=True)
    theirs = _keyword_step(block, x, cos, sin, adaln, columns, recompute=False)
    for one, other in zip(ours[:3], theirs[:3], strict=True):
        assert torch.equal(one, other)
    # no longer kept, for 2 samples: the float32 output (20 image queries × dim) and, from bf16 inputs, the float32
    # copies of the image queries (20 × dim) and keys (24 × dim); the CPU kernel keeps more than these
    copies = (2 * 20 + tokens) * CONFIG.dim * 4 if dtype == torch.bfloat16 else 0
    assert theirs[3] - ours[3] >= 2 * (copies + 20 * CONFIG.dim * 4)


@pytest.mark.parametrize("checkpointing", [False, True])
def test_a_checkpointed_block_reruns_its_capture_once(monkeypatch, checkpointing):
    """Kept blocks rerun the capture in the backward (forward + rerun); checkpointed ones do not add a rerun to the
    block's own recomputation (forward + recomputation), so the capture runs twice per block either way."""
    from zerase_fixtures import fresh_dit

    from zerase_core.model import keyword_attention as module

    model = fresh_dit().requires_grad_(False)
    model.gradient_checkpointing = checkpointing
    calls = []
    original = module._keyword_attention
    monkeypatch.setattr(module, "_keyword_attention", lambda *args: calls.append(1) or original(*args))
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(1, model.config.in_channels, 4, 4, generator=generator)
    context = torch.randn(1, 5, model.config.cap_feat_dim, generator=generator, requires_grad=True)
    capture = module.AttentionCapture(columns=torch.tensor([[1, 2]]))
    velocity = model(x, torch.tensor([0.6]), context, capture=capture)
    (velocity.square().sum() + torch.stack([maps.sum() for maps in capture.maps]).sum()).backward()
    assert len(calls) == 2 * model.config.n_layers and context.grad is not None
