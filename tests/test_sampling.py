"""Flow-matching sampling: the shifted schedule, Euler integration against closed-form flows, guidance call counts
and seeded noise."""
from __future__ import annotations

import pytest
import torch
from zerase_fixtures import fresh_dit

from zerase_core.model.sampling import (
    euler_sample,
    guided_velocity,
    initial_noise,
    shifted_sigmas,
    time_shift,
)


def test_turbo_schedule_matches_z_image():
    expected = torch.tensor([1.0, 0.9545, 0.9, 0.8333, 0.75, 0.6429, 0.5, 0.3, 0.0])
    sigmas = shifted_sigmas(8, 3.0)
    assert sigmas.dtype == torch.float32
    torch.testing.assert_close(sigmas, expected, rtol=0, atol=1e-4)


@pytest.mark.parametrize("steps", [1, 2, 3, 7, 8, 9, 20, 50, 1000])
@pytest.mark.parametrize("shift", [1.0, 3.0, 6.0])
def test_sigmas_run_from_one_to_zero_strictly_decreasing(steps, shift):
    sigmas = shifted_sigmas(steps, shift)
    assert sigmas.shape == (steps + 1,)
    assert sigmas[0] == 1.0 and sigmas[-1] == 0.0
    assert (sigmas[1:] < sigmas[:-1]).all()


@pytest.mark.parametrize("steps", [4, 8, 20])
def test_shift_one_is_the_linear_schedule_and_larger_shifts_stay_noisier(steps):
    linear = shifted_sigmas(steps, 1.0)
    torch.testing.assert_close(linear, torch.linspace(1.0, 0.0, steps + 1), rtol=0, atol=1e-6)
    assert (shifted_sigmas(steps, 3.0)[1:-1] > linear[1:-1]).all()
    torch.testing.assert_close(time_shift(linear, 3.0), shifted_sigmas(steps, 3.0), rtol=0, atol=1e-6)


@pytest.mark.parametrize("steps", [0, -3])
def test_non_positive_step_counts_raise_with_the_value(steps):
    with pytest.raises(ValueError, match=f"got {steps}"):
        shifted_sigmas(steps)


def _field(seed=0, shape=(2, 4, 3, 5)):
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=generator), torch.randn(shape, generator=generator)


@pytest.mark.parametrize("steps", [1, 4, 9])
def test_euler_with_the_constant_flow_velocity_lands_on_x0(steps):
    """x_sigma = (1 − sigma)·x0 + sigma·noise has the constant velocity v = noise − x0: Euler is exact."""
    x0, noise = _field()
    visited = []
    sample = euler_sample(lambda x, sigma: noise - x0, noise, shifted_sigmas(steps),
                          callback=lambda index, x: visited.append((index, x)))
    torch.testing.assert_close(sample, x0, rtol=0, atol=1e-5)
    sigmas = shifted_sigmas(steps)
    assert [index for index, _ in visited] == list(range(steps))
    for index, x in visited:
        sigma = sigmas[index + 1]
        torch.testing.assert_close(x, (1 - sigma) * x0 + sigma * noise, rtol=0, atol=1e-5)


@pytest.mark.parametrize("steps", [2, 8])
def test_euler_with_the_state_dependent_flow_velocity_lands_on_x0(steps):
    """v(x, sigma) = (x − x0)/sigma is the same flow written through the state: still exact at every sigma."""
    x0, noise = _field(1)
    sigmas = shifted_sigmas(steps)

    def velocity(x, sigma):
        assert sigma.shape == (x.shape[0],) and (sigma > 0).all()
        return (x - x0) / sigma[:, None, None, None]

    torch.testing.assert_close(euler_sample(velocity, noise, sigmas), x0, rtol=0, atol=1e-5)
    stop = steps // 2
    partial = euler_sample(velocity, noise, sigmas, stop=stop)
    torch.testing.assert_close(partial, (1 - sigmas[stop]) * x0 + sigmas[stop] * noise, rtol=0, atol=1e-5)
    resumed = euler_sample(velocity, partial, sigmas, start=stop)
    torch.testing.assert_close(resumed, x0, rtol=0, atol=1e-5)


class CountingModel(torch.nn.Module):
    """A tiny real DiT that counts its forwards."""

    def __init__(self):
        super().__init__()
        self.dit = fresh_dit()
        self.calls = 0

    def forward(self, x, sigma, context, context_lengths=None):
        self.calls += 1
        return self.dit(x, sigma, context, context_lengths)


@pytest.mark.parametrize("cfg, calls_per_step", [(1.0, 1), (3.0, 2), (0.0, 2)])
@pytest.mark.parametrize("steps", [1, 3])
def test_guidance_calls_the_model_once_or_twice_per_step(cfg, calls_per_step, steps, word_conditioner):
    model = CountingModel()
    context, lengths = word_conditioner.encode(["a red circle", "a blue square on white background"])
    uncond, uncond_lengths = word_conditioner.encode(["", ""])
    velocity = guided_velocity(model, context, lengths, cfg=cfg, uncond=uncond, uncond_lengths=uncond_lengths)
    euler_sample(velocity, initial_noise((2, 16, 4, 4), 0), shifted_sigmas(steps))
    assert model.calls == calls_per_step * steps


def test_guidance_combines_conditional_and_unconditional(word_conditioner):
    model = fresh_dit()
    context, lengths = word_conditioner.encode(["a red circle"])
    uncond, uncond_lengths = word_conditioner.encode([""])
    x, sigma = initial_noise((1, 16, 4, 4), 3), torch.tensor([0.7])
    with torch.no_grad():
        cond = model(x, sigma, context, lengths)
        empty = model(x, sigma, uncond, uncond_lengths)
        guided = guided_velocity(model, context, lengths, cfg=4.0, uncond=uncond, uncond_lengths=uncond_lengths)(x, sigma)
        plain = guided_velocity(model, context, lengths)(x, sigma)
    torch.testing.assert_close(guided, empty + 4.0 * (cond - empty))
    assert torch.equal(plain, cond)


def test_guidance_without_an_unconditional_context_raises():
    with pytest.raises(ValueError, match="cfg=2.5"):
        guided_velocity(fresh_dit(), torch.zeros(1, 1, 32), cfg=2.5)


@pytest.mark.parametrize("latent_hw", [(8, 8), (5, 7), (3, 3)])
@pytest.mark.parametrize("batch", [2, 5])
def test_initial_noise_of_a_seed_does_not_depend_on_the_batch(latent_hw, batch):
    alone = initial_noise((1, 16, *latent_hw), 42)
    batched = initial_noise((batch, 16, *latent_hw), 42)
    assert torch.equal(batched[:1], alone)
    assert torch.equal(initial_noise((1, 16, *latent_hw), 42), alone)     # reproducible
    assert not torch.equal(initial_noise((1, 16, *latent_hw), 43), alone)  # seeded
    assert alone.dtype == torch.float32 and alone.device.type == "cpu"


def test_initial_noise_ignores_the_global_rng():
    torch.manual_seed(0)
    first = initial_noise((1, 16, 4, 4), 7)
    torch.manual_seed(123)
    torch.randn(10)
    assert torch.equal(initial_noise((1, 16, 4, 4), 7), first)
