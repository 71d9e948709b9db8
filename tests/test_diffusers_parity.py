"""The core's DiT against diffusers' own ZImageTransformer2DModel on the same tiny random weights (both key-mapping
directions, fp32). Skips only when diffusers is not installed (the `real` extra; CI's `test` extra has it)."""
from __future__ import annotations

import dataclasses

import pytest
import torch

from zerase_core.model.checkpoint import load_dit
from zerase_core.model.dit import ZImageDiT
from zerase_core.real.diffusers_format import (
    config_from_diffusers,
    diffusers_config,
    diffusers_state_dict,
)

diffusers = pytest.importorskip("diffusers", reason="diffusers is not installed; the real-model parity tests need the `real` extra: pip install -e \".[real]\"")

# head dim 128 (axes 32/48/48 as Z-Image), dim 256: the smallest shape family both implementations share
TINY = dict(dim=256, n_layers=2, n_refiner_layers=1, n_heads=2, n_kv_heads=2, cap_feat_dim=32, in_channels=4,
            axes_dims=[32, 48, 48], axes_lens=[256, 64, 64])


def random_diffusers(seed: int = 0, **overrides):
    torch.manual_seed(seed)
    model = diffusers.ZImageTransformer2DModel(**{**TINY, **overrides})
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            parameter.normal_(0.0, 0.05)
            if parameter.dim() == 1 and "norm" in name:
                parameter.add_(1.0)
    return model.eval().requires_grad_(False)


def random_core(seed: int = 0) -> ZImageDiT:
    torch.manual_seed(seed)
    model = ZImageDiT(config_from_diffusers(TINY))
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            parameter.normal_(0.0, 0.05)
            if parameter.dim() == 1 and "norm" in name:
                parameter.add_(1.0)
    return model.eval().requires_grad_(False)


def inputs(seed: int, batch: int, text_length: int, height: int = 6, width: int = 8):
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, TINY["in_channels"], height, width, generator=generator)
    context = torch.randn(batch, text_length, TINY["cap_feat_dim"], generator=generator)
    sigma = torch.rand(batch, generator=generator)
    return x, sigma, context


def diffusers_velocity(model, x, sigma, context) -> torch.Tensor:
    """diffusers' forward in the core's conventions: t = 1 − sigma in, x0 − noise out, negated to noise − x0."""
    out = model([sample[:, None] for sample in x], 1.0 - sigma, list(context), return_dict=False)[0]
    return -torch.stack([sample[:, 0] for sample in out])


def relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).norm() / b.norm()).item()


@pytest.mark.parametrize("text_length, batch", [(5, 1), (32, 2), (40, 1)])
def test_core_loads_diffusers_weights_and_matches_its_forward(text_length, batch):
    theirs = random_diffusers()
    ours = load_dit(theirs.state_dict(), metadata=config_from_diffusers(dict(theirs.config)).to_metadata())
    x, sigma, context = inputs(1, batch, text_length)
    with torch.no_grad():
        expected = diffusers_velocity(theirs, x, sigma, context)
        got = ours(x, sigma, context)
    assert got.shape == expected.shape
    assert relative(got, expected) <= 1e-5


def test_diffusers_loads_core_weights_and_matches_the_core():
    ours = random_core(3)
    theirs = diffusers.ZImageTransformer2DModel(**diffusers_config(ours.config)).eval()
    missing, unexpected = theirs.load_state_dict(diffusers_state_dict(ours.state_dict()), strict=True)
    assert not missing and not unexpected
    x, sigma, context = inputs(2, 2, 9, height=4, width=10)
    with torch.no_grad():
        assert relative(ours(x, sigma, context), diffusers_velocity(theirs, x, sigma, context)) <= 1e-5


def test_config_round_trip_and_the_default_config_is_turbo_shaped():
    config = config_from_diffusers(TINY)
    assert config_from_diffusers(diffusers_config(config)) == config
    turbo = config_from_diffusers({})
    assert (turbo.dim, turbo.n_layers, turbo.ffn_hidden, turbo.head_dim) == (3840, 30, 10240, 128)


def test_eps_matters_so_the_parity_is_not_vacuous():
    """The same weights with ComfyUI's Q/K norm eps (torch's default) are measurably further from diffusers."""
    theirs = random_diffusers()
    config = config_from_diffusers(dict(theirs.config))
    x, sigma, context = inputs(1, 1, 5)
    errors = []
    for eps in (config.qk_norm_eps, None):
        ours = load_dit(theirs.state_dict(), metadata=dataclasses.replace(config, qk_norm_eps=eps).to_metadata())
        with torch.no_grad():
            errors.append(relative(ours(x, sigma, context), diffusers_velocity(theirs, x, sigma, context)))
    assert errors[1] > 10 * errors[0]
