"""The core's Lumina-2 DiT against diffusers' own Lumina2Transformer2DModel on the same tiny random weights (both
key-mapping directions, fp32, GQA with 2 query heads per kv head). Skips only when diffusers is not installed."""
from __future__ import annotations

import dataclasses

import pytest
import torch

from zerase_core.model.checkpoint import detect_architecture, fingerprint, load_dit
from zerase_core.model.config import DiTConfig
from zerase_core.model.dit import ZImageDiT
from zerase_core.model.lumina_keys import (lumina_comfy_names, lumina_config_from_diffusers, lumina_diffusers_config,
                                     lumina_diffusers_state_dict)

diffusers = pytest.importorskip("diffusers", reason="diffusers is not installed; the real-model parity tests need"
                                                " the `real` extra: pip install -e \".[real]\"")

# head dim 96 (axes 32/32/32 as Lumina-Image-2.0), 4 query heads over 2 kv heads, dim 384
TINY = dict(hidden_size=384, num_layers=2, num_refiner_layers=1, num_attention_heads=4, num_kv_heads=2,
            cap_feat_dim=48, in_channels=4, multiple_of=64, axes_dim_rope=(32, 32, 32), axes_lens=(300, 64, 64))


def _randomize(model, seed):
    torch.manual_seed(seed)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            parameter.normal_(0.0, 0.05)
            if parameter.dim() == 1 and "norm" in name:
                parameter.add_(1.0)
    return model.eval().requires_grad_(False)


def random_diffusers(seed: int = 0):
    return _randomize(diffusers.Lumina2Transformer2DModel(**TINY), seed)


def inputs(seed: int, lengths: list[int], height: int = 6, width: int = 8, padded: int | None = None):
    """Latents, sigma, captions padded to `padded` tokens (filler is random: it must not matter) and their mask."""
    generator = torch.Generator().manual_seed(seed)
    batch, span = len(lengths), padded or max(lengths)
    x = torch.randn(batch, TINY["in_channels"], height, width, generator=generator)
    context = torch.randn(batch, span, TINY["cap_feat_dim"], generator=generator)
    mask = torch.arange(span)[None] < torch.tensor(lengths)[:, None]
    sigma = torch.rand(batch, generator=generator)
    return x, sigma, context, mask


def diffusers_velocity(model, x, sigma, context, mask) -> torch.Tensor:
    """diffusers' forward in the core's conventions: t = 1 − sigma in, output negated (as Lumina2Pipeline does)."""
    return -model(x, 1.0 - sigma, context, mask, return_dict=False)[0]


def relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).norm() / b.norm()).item()


@pytest.mark.parametrize("lengths, padded", [([5], None), ([7, 3], 12), ([20], 24), ([4, 4], None)])
def test_core_loads_diffusers_weights_and_matches_its_forward(lengths, padded):
    theirs = random_diffusers()
    state = theirs.state_dict()
    assert detect_architecture(state) == "lumina2"
    ours = load_dit(state, metadata=lumina_config_from_diffusers(dict(theirs.config)).to_metadata())
    assert ours.config.kind == "lumina2" and ours.config.kv_heads == 2
    x, sigma, context, mask = inputs(1, lengths, padded=padded)
    with torch.no_grad():
        expected = diffusers_velocity(theirs, x, sigma, context, mask)
        got = ours(x, sigma, context, context_lengths=mask.sum(1))
    assert got.shape == expected.shape
    assert relative(got, expected) <= 1e-5


def test_diffusers_loads_core_weights_and_matches_the_core():
    ours = _randomize(ZImageDiT(lumina_config_from_diffusers(TINY)), 3)
    theirs = diffusers.Lumina2Transformer2DModel(**lumina_diffusers_config(ours.config)).eval()
    missing, unexpected = theirs.load_state_dict(lumina_diffusers_state_dict(ours.state_dict(), ours.config),
                                                 strict=True)
    assert not missing and not unexpected
    x, sigma, context, mask = inputs(2, [9, 9], height=4, width=10)
    with torch.no_grad():
        assert relative(ours(x, sigma, context), diffusers_velocity(theirs, x, sigma, context, mask)) <= 1e-5


def test_key_mapping_round_trips_and_names_every_tensor():
    theirs = random_diffusers(5)
    config = lumina_config_from_diffusers(dict(theirs.config))
    comfy = lumina_comfy_names(dict(theirs.state_dict()))
    assert set(comfy) == set(ZImageDiT(config, device="meta").state_dict())
    back = lumina_diffusers_state_dict(comfy, config)
    assert set(back) == set(theirs.state_dict())
    assert all(torch.equal(back[key], value) for key, value in theirs.state_dict().items())
    assert fingerprint(theirs.state_dict()) == fingerprint(comfy)
    assert lumina_config_from_diffusers(lumina_diffusers_config(config)) == config


def test_default_config_is_lumina_image_2():
    config = lumina_config_from_diffusers({"cap_feat_dim": 2304})
    assert config == dataclasses.replace(DiTConfig.lumina2(), qk_norm_eps=1e-5)
    assert (config.dim, config.n_layers, config.ffn_hidden, config.head_dim, config.kv_heads) == (2304, 26, 9216, 96, 8)


def test_mask_and_gqa_matter_so_the_parity_is_not_vacuous():
    """Attending the random caption filler, or sharing kv heads the other way round, is measurably different."""
    theirs = random_diffusers()
    ours = load_dit(theirs.state_dict(), metadata=lumina_config_from_diffusers(dict(theirs.config)).to_metadata())
    x, sigma, context, mask = inputs(1, [7, 3], padded=12)
    with torch.no_grad():
        expected = diffusers_velocity(theirs, x, sigma, context, mask)
        assert relative(ours(x, sigma, context), expected) > 1e-2           # no lengths: filler attended
        block = ours.layers[0].attention
        widths = block.widths
        q, k, v = block.qkv.weight.split(widths)
        swapped = torch.cat([q.view(4, 96, -1)[[0, 2, 1, 3]].reshape(q.shape), k, v])  # heads tied differently
        block.qkv.weight.copy_(swapped)
        assert relative(ours(x, sigma, context, context_lengths=mask.sum(1)), expected) > 1e-2
