"""Flow-matching Euler sampling with Z-Image's shifted sigmas (ComfyUI's `simple` schedule, shift 3).

Conventions (written once, used everywhere): sigma = 1 is pure noise; x_sigma = (1 − sigma)·x0 + sigma·noise;
the model returns v = noise − x0 (ComfyUI's model output), so an Euler step is x ← x + (sigma_next − sigma)·v.
`cfg` follows ComfyUI: 1.0 means the conditional prediction alone (Turbo; diffusers' guidance_scale 0), otherwise
v = v_uncond + cfg·(v_cond − v_uncond).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from ..common.limits import check_cfg


def time_shift(t: torch.Tensor, shift: float) -> torch.Tensor:
    return shift * t / (1 + (shift - 1) * t)


def shifted_sigmas(steps: int, shift: float = 3.0) -> torch.Tensor:
    """(steps + 1,) float32 sigmas from 1 to 0, identical to ComfyUI's `simple` scheduler on
    ModelSamplingDiscreteFlow."""
    if steps < 1:
        raise ValueError(f"steps must be ≥ 1, got {steps}")
    table = time_shift(torch.arange(1, 1001, dtype=torch.float32) / 1000, shift)
    stride = len(table) / steps
    picked = [table[-(1 + int(index * stride))] for index in range(steps)]
    return torch.stack([*picked, torch.tensor(0.0)])


def initial_noise(shape, seed: int) -> torch.Tensor:
    """Noise drawn as ComfyUI's `prepare_noise` draws it (CPU generator seeded with `seed`)."""
    generator = torch.Generator(device="cpu").manual_seed(int(seed))
    return torch.randn(tuple(shape), dtype=torch.float32, generator=generator, device="cpu")


VelocityFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def guided_velocity(
    model, context, context_lengths=None, cfg: float = 1.0, uncond=None, uncond_lengths=None, **conditional_options
) -> VelocityFn:
    """A function (x, sigma (B,)) -> v for a DiT, with optional classifier-free guidance against `uncond`.
    `model(x, sigma, context, lengths, **options)`: `conditional_options` go to the conditional call only (e.g. the
    evaluation's `suppress_keys`). This is the one sampler of the project: generate, the evaluation, the node's
    preview and the x_t pool all step with `euler_sample` on it."""
    cfg = check_cfg(cfg)
    if cfg != 1.0 and uncond is None:
        raise ValueError(f"cfg={cfg} needs an unconditional context (the empty prompt's features)")

    def velocity(x, sigma):
        cond = model(x, sigma, context, context_lengths, **conditional_options)
        if cfg == 1.0:
            return cond.float()
        uncond_v = model(x, sigma, uncond, uncond_lengths).float()
        return uncond_v + cfg * (cond.float() - uncond_v)

    return velocity


@torch.no_grad()
def euler_sample(
    velocity: VelocityFn,
    noise: torch.Tensor,
    sigmas: torch.Tensor,
    start: int = 0,
    stop: int | None = None,
    callback=None,
) -> torch.Tensor:
    """Integrate from sigmas[start] to sigmas[stop] (default: the end) starting at `noise` scaled to sigmas[start].

    With start = 0 the input is pure noise (sigma 1); a partial run (stop < len − 1) returns x at sigmas[stop],
    which is how ESD-style training samples x_t with the frozen model.
    """
    stop = len(sigmas) - 1 if stop is None else stop
    x = noise.float() * sigmas[start] if start == 0 else noise.float()
    for index in range(start, stop):
        sigma = sigmas[index].expand(x.shape[0]).to(x.device)
        v = velocity(x, sigma)
        x = x + (sigmas[index + 1] - sigmas[index]) * v
        if callback is not None:
            callback(index, x)
    return x
