"""GatedSiLU: the SwiGLU's silu(w1·x) recomputed in the backward instead of kept; the same gradients bit for bit."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from zerase_fixtures import kept_bytes

from zerase_core.model.config import DiTConfig
from zerase_core.model.layers import FeedForward


CONFIG = DiTConfig(dim=256, n_heads=2, ffn_multiple_of=32)


def _plain(self, x):  # the SwiGLU as autograd alone would keep it
    return self.w2(F.silu(self.w1(x)) * self.w3(x))


def _run(feed_forward, x, forward=None):
    """(output, input gradient, bytes autograd keeps outside the weights)."""
    x = x.clone().requires_grad_(True)
    with kept_bytes(feed_forward) as kept:
        output = feed_forward(x) if forward is None else forward(feed_forward, x)
    output.float().square().sum().backward()
    return output.detach(), x.grad, sum(kept.values())


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_gated_silu_gives_the_same_gradients_and_keeps_one_ffn_wide_tensor_less(dtype):
    torch.manual_seed(0)
    config = CONFIG
    feed_forward = FeedForward(config, dtype=dtype).requires_grad_(False)
    x = torch.randn(2, 9, config.dim, dtype=dtype)
    output, grad, kept = _run(feed_forward, x)
    plain_output, plain_grad, plain_kept = _run(feed_forward, x, _plain)
    assert torch.equal(output, plain_output) and torch.equal(grad, plain_grad)
    hidden = 2 * 9 * config.ffn_hidden * x.element_size()  # one (batch, tokens, ffn) tensor
    assert plain_kept - kept == hidden


def test_without_gradients_the_plain_ops_run():
    config = CONFIG
    feed_forward = FeedForward(config).requires_grad_(False)
    x = torch.randn(1, 3, config.dim)
    with torch.no_grad():
        assert torch.equal(feed_forward(x), _plain(feed_forward, x))
