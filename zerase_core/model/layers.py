"""Building blocks of the Z-Image S3-DiT, with ComfyUI's module names (`attention.qkv`, `feed_forward.w1` ...).

Block math (Z-Image modulation, no shift terms, sandwich RMSNorms):
    scale_msa, gate_msa, scale_mlp, gate_mlp = adaLN_modulation(c).chunk(4)
    x = x + tanh(gate_msa) · attention_norm2(attention(attention_norm1(x) · (1 + scale_msa)))
    x = x + tanh(gate_mlp) · ffn_norm2(feed_forward(ffn_norm1(x) · (1 + scale_mlp)))
The context refiner's blocks are unmodulated: the same without scale and gate.
Lumina-2 (`config.kind == "lumina2"`): adaLN_modulation is SiLU→Linear over a min(dim, 1024)-wide time embedding
(keys `adaLN_modulation.1.*`), and attention has fewer key/value heads than query heads (GQA: qkv rows are
[q: H·D | k: H_kv·D | v: H_kv·D], each kv head serving H / H_kv consecutive query heads).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from .config import DiTConfig

# A probe receives the normalised, rotated queries and keys (B, H, L, D) of a block.
AttentionProbe = Callable[[torch.Tensor, torch.Tensor], None]


def rope_frequencies(positions: torch.Tensor, axes_dims: tuple[int, ...], theta: float):
    """cos/sin tables (B, L, 1, D/2) for 3-axis position ids (B, L, 3); float64 angles as ComfyUI's `rope`."""
    angles = []
    for axis, axis_dim in enumerate(axes_dims):
        exponent = torch.arange(0, axis_dim, 2, dtype=torch.float64, device=positions.device) / axis_dim
        omega = 1.0 / (theta**exponent)
        angles.append(positions[..., axis].to(torch.float64).unsqueeze(-1) * omega)
    angle = torch.cat(angles, dim=-1).unsqueeze(2)
    return torch.cos(angle).float(), torch.sin(angle).float()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate interleaved pairs (x0, x1) of x (B, L, H, D), in float32."""
    pairs = x.float().unflatten(-1, (-1, 2))
    even, odd = pairs[..., 0], pairs[..., 1]
    rotated = torch.stack((cos * even - sin * odd, sin * even + cos * odd), dim=-1)
    return rotated.flatten(-2).type_as(x)


def timestep_embedding(t: torch.Tensor, dim: int = 256, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal features [cos | sin] of (scaled) timesteps t (B,) -> (B, dim), float32."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t[:, None].float() * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


class TimestepEmbedder(nn.Module):
    def __init__(self, hidden: int, output: int, device=None, dtype=None):
        super().__init__()
        self.mlp = nn.Sequential(
            nn.Linear(256, hidden, device=device, dtype=dtype),
            nn.SiLU(),
            nn.Linear(hidden, output, device=device, dtype=dtype),
        )

    def forward(self, t: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        return self.mlp(timestep_embedding(t).to(dtype))


class Recomputed(torch.autograd.Function):
    """function(*inputs) that keeps only its inputs for the backward and reruns function there under autograd.

    For normalisations: on the CPU rms_norm is a composite of float32 ops, and for a bf16 input autograd keeps a
    float32 copy of it (4 bytes per element, six norms per block; CUDA's fused kernel keeps the input and the rstd).
    For the keyword capture (`keyword_attention`): its float32 queries, keys and outputs. Here only the inputs (often
    kept anyway) stay; the backward reruns the same ops and lets autograd differentiate them, so the inputs' gradients
    are the same bit for bit. `function`'s own parameters get no gradient: use it only where they are frozen.
    `Recomputed.apply(function, *inputs)`.
    """

    @staticmethod
    def forward(ctx, function, *inputs):
        ctx.save_for_backward(*inputs)
        ctx.function = function
        return function(*inputs)

    @staticmethod
    def backward(ctx, grad):
        pairs = zip(ctx.saved_tensors, ctx.needs_input_grad[1:], strict=True)
        inputs = [tensor.detach().requires_grad_(needs) for tensor, needs in pairs]
        wanted = [tensor for tensor in inputs if tensor.requires_grad]
        with torch.enable_grad():
            found = iter(torch.autograd.grad(ctx.function(*inputs), wanted, grad))
        return None, *(next(found) if tensor.requires_grad else None for tensor in inputs)


def recomputes(x: torch.Tensor, module: nn.Module) -> bool:
    """Whether a norm's call on x should go through Recomputed: gradients flow to x only, x below float32 (a
    float32 input has no copy to save, and autograd would sum its gradient's parts in another order)."""
    return (
        torch.is_grad_enabled()
        and x.requires_grad
        and x.dtype != torch.float32
        and not any(parameter.requires_grad for parameter in module.parameters())
    )


class RMSNorm(nn.RMSNorm):
    """nn.RMSNorm (same keys and math) that keeps only its input for the backward where `recomputes` says so."""

    def forward(self, x):
        if recomputes(x, self):
            return Recomputed.apply(super().forward, x)
        return super().forward(x)


class JointAttention(nn.Module):
    def __init__(self, config: DiTConfig, device=None, dtype=None):
        super().__init__()
        self.n_heads = config.n_heads
        self.n_kv_heads = config.kv_heads
        self.head_dim = config.head_dim
        self.widths = (config.dim, self.n_kv_heads * self.head_dim, self.n_kv_heads * self.head_dim)
        self.qkv = nn.Linear(config.dim, sum(self.widths), bias=False, device=device, dtype=dtype)
        self.out = nn.Linear(config.dim, config.dim, bias=False, device=device, dtype=dtype)
        # eps None by default, like ComfyUI's NextDiT (torch then uses the dtype's machine epsilon).
        self.q_norm = RMSNorm(self.head_dim, eps=config.qk_norm_eps, device=device, dtype=dtype)
        self.k_norm = RMSNorm(self.head_dim, eps=config.qk_norm_eps, device=device, dtype=dtype)

    def forward(self, x, cos, sin, key_mask=None, probe: AttentionProbe | None = None):
        """x (B, L, dim); cos/sin (B, L, 1, D/2); key_mask (B, L) bool of attendable keys or None."""
        batch, length, _ = x.shape
        query, key, value = self.qkv(x).split(self.widths, dim=-1)
        query = query.view(batch, length, self.n_heads, self.head_dim)
        key = key.view(batch, length, self.n_kv_heads, self.head_dim)
        value = value.view(batch, length, self.n_kv_heads, self.head_dim)
        query = apply_rope(self.q_norm(query), cos, sin).transpose(1, 2)  # (B, H, L, D)
        key = apply_rope(self.k_norm(key), cos, sin).transpose(1, 2)
        value = value.transpose(1, 2)
        if self.n_kv_heads != self.n_heads:
            repeat = self.n_heads // self.n_kv_heads
            key, value = key.repeat_interleave(repeat, dim=1), value.repeat_interleave(repeat, dim=1)
        if probe is not None:
            probe(query, key)
        mask = None if key_mask is None else key_mask[:, None, None, :]
        output = F.scaled_dot_product_attention(query, key, value, attn_mask=mask)
        return self.out(output.transpose(1, 2).reshape(batch, length, -1))


class GatedSiLU(torch.autograd.Function):
    """silu(gate) · value that keeps only gate and value for the backward and recomputes silu(gate) there.

    Autograd would also keep silu(gate), a third FFN-wide tensor per block. The backward runs the ops autograd's
    own would (mul's gradients, `silu_backward`) on the same tensors, so every gradient is the same bit for bit.
    """

    @staticmethod
    def forward(ctx, gate: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(gate, value)
        return F.silu(gate) * value

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        gate, value = ctx.saved_tensors
        grad_gate = grad_value = None
        if ctx.needs_input_grad[1]:
            grad_value = grad * F.silu(gate)
        if ctx.needs_input_grad[0]:
            grad_gate = torch.ops.aten.silu_backward(grad * value, gate)
        return grad_gate, grad_value


def silu_gate(gate: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    """silu(gate) · value: through GatedSiLU when a gradient flows, the plain ops otherwise."""
    if torch.is_grad_enabled() and (gate.requires_grad or value.requires_grad):
        return GatedSiLU.apply(gate, value)
    return F.silu(gate) * value


class FeedForward(nn.Module):
    """SwiGLU: w2(silu(w1 x) · w3 x); with gradients through GatedSiLU (one FFN-wide tensor less kept)."""

    def __init__(self, config: DiTConfig, device=None, dtype=None):
        super().__init__()
        hidden = config.ffn_hidden
        self.w1 = nn.Linear(config.dim, hidden, bias=False, device=device, dtype=dtype)
        self.w2 = nn.Linear(hidden, config.dim, bias=False, device=device, dtype=dtype)
        self.w3 = nn.Linear(config.dim, hidden, bias=False, device=device, dtype=dtype)

    def forward(self, x):
        return self.w2(silu_gate(self.w1(x), self.w3(x)))


class JointTransformerBlock(nn.Module):
    def __init__(self, config: DiTConfig, modulation: bool, device=None, dtype=None):
        super().__init__()
        self.attention = JointAttention(config, device, dtype)
        self.feed_forward = FeedForward(config, device, dtype)
        norm = dict(eps=config.norm_eps, device=device, dtype=dtype)
        self.attention_norm1 = RMSNorm(config.dim, **norm)
        self.ffn_norm1 = RMSNorm(config.dim, **norm)
        self.attention_norm2 = RMSNorm(config.dim, **norm)
        self.ffn_norm2 = RMSNorm(config.dim, **norm)
        self.modulation = modulation
        if modulation:
            # Z-Image: a Sequential holding one Linear (no SiLU), key `adaLN_modulation.0.*` as in ComfyUI and
            # diffusers; Lumina-2: SiLU then Linear, key `adaLN_modulation.1.*`.
            linear = nn.Linear(config.adaln_width, 4 * config.dim, device=device, dtype=dtype)
            stages = (linear,) if config.kind == "z-image" else (nn.SiLU(), linear)
            self.adaLN_modulation = nn.Sequential(*stages)

    def forward(self, x, cos, sin, adaln_input=None, key_mask=None, probe: AttentionProbe | None = None):
        if not self.modulation:
            x = x + self.attention_norm2(self.attention(self.attention_norm1(x), cos, sin, key_mask, probe))
            return x + self.ffn_norm2(self.feed_forward(self.ffn_norm1(x)))
        scale_msa, gate_msa, scale_mlp, gate_mlp = self.adaLN_modulation(adaln_input).unsqueeze(1).chunk(4, dim=-1)
        attended = self.attention(self.attention_norm1(x) * (1 + scale_msa), cos, sin, key_mask, probe)
        x = x + gate_msa.tanh() * self.attention_norm2(attended)
        return x + gate_mlp.tanh() * self.ffn_norm2(self.feed_forward(self.ffn_norm1(x) * (1 + scale_mlp)))


class FinalLayer(nn.Module):
    def __init__(self, config: DiTConfig, device=None, dtype=None):
        super().__init__()
        out = config.patch_size * config.patch_size * config.in_channels
        self.norm_final = nn.LayerNorm(config.dim, elementwise_affine=False, eps=1e-6, device=device, dtype=dtype)
        self.linear = nn.Linear(config.dim, out, device=device, dtype=dtype)
        self.adaLN_modulation = nn.Sequential(
            nn.SiLU(), nn.Linear(config.adaln_width, config.dim, device=device, dtype=dtype)
        )

    def forward(self, x, adaln_input):
        scale = self.adaLN_modulation(adaln_input).unsqueeze(1)
        return self.linear(self.norm_final(x) * (1 + scale))
