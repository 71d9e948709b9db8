"""Lumina-Image-2.0 in the core: kind detected from the weights, config from shapes, GQA adapters and erasure files,
and a file made for one family refused on the other naming both fingerprints."""
from __future__ import annotations

import re

import pytest
import torch

from zerase_core.adapters.gated import AdapterConfig, AdapterSet
from zerase_core.model.checkpoint import (UnsupportedModelError, detect_architecture, fingerprint, infer_config, load_dit,
                                    save_dit)
from zerase_core.model.config import DiTConfig
from zerase_core.formats.erasure_file import ErasureFileError, load_erasure, save_erasure
from zerase_core.formats.erasure_info import ErasureInfo, adapter_dict
from zerase_core.model.dit import ZImageDiT
from zerase_fixtures import TINY_CONFIG, randomized_dit

LUMINA = DiTConfig.lumina2(dim=256, n_layers=2, n_refiner_layers=1, n_heads=8, n_kv_heads=4, axes_dims=(8, 12, 12),
                           cap_feat_dim=32, axes_lens=(300, 64, 64))
ADAPTER = AdapterConfig(rank=4, alpha=4.0, slices=("q", "k", "v"), families=("layers", "context_refiner"))


def _info(model, config=ADAPTER) -> ErasureInfo:
    return ErasureInfo(method="z-erase", concepts=("cat",), keywords=("cat",), anchors=("a dog",),
                       adapter=adapter_dict(config), recommended_strength=1.0, steps_done=1, steps_total=1, seed=0,
                       summary={}, base_fingerprint=fingerprint(model), base_config=model.config.to_dict(), training={})


def _adapters(model, seed=1) -> AdapterSet:
    torch.manual_seed(seed)
    adapters = AdapterSet(model, ADAPTER)
    with torch.no_grad():
        for adapter in adapters.adapters.values():
            for up in adapter.up.values():
                up.normal_(0.0, 0.05)
    return adapters


def test_lumina_structure_and_detection_from_the_weights():
    model = randomized_dit(LUMINA)
    state = model.state_dict()
    assert detect_architecture(state) == "lumina2"
    assert detect_architecture(randomized_dit().state_dict()) == "z-image"
    assert "cap_pad_token" not in state and "layers.0.adaLN_modulation.1.weight" in state
    assert state["layers.0.attention.qkv.weight"].shape == (256 + 2 * 4 * 32, 256)      # GQA: 4 kv heads of 32
    assert state["t_embedder.mlp.2.weight"].shape == (256, 256)                         # min(dim, 1024) wide
    with pytest.raises(ValueError, match="Lumina-2 with dim 256, head dim 32; only head dim 96"):
        infer_config(state)                                 # without metadata only Lumina-2's own head dim is known


def test_config_from_shapes_alone_is_lumina_image_2_at_head_dim_96():
    config = DiTConfig.lumina2(dim=384, n_heads=4, n_kv_heads=2, n_layers=1, n_refiner_layers=1, cap_feat_dim=48,
                               in_channels=4, ffn_multiple_of=256)
    state = ZImageDiT(config, device="meta").state_dict()
    assert infer_config(state) == config


def test_mixed_families_are_refused_naming_what_was_found():
    state = randomized_dit(LUMINA).state_dict()
    state["cap_pad_token"] = torch.zeros(1, 256)
    state["x_pad_token"] = torch.zeros(1, 256)
    expected = "mixes.*adaLN_modulation.1.*pad tokens.*Supported: Z-Image.*Lumina"
    with pytest.raises(UnsupportedModelError, match=expected):
        detect_architecture(state)


def test_save_load_round_trip_keeps_the_kind_and_the_output(tmp_path):
    model = randomized_dit(LUMINA)
    path = tmp_path / "lumina.safetensors"
    save_dit(model, path)
    loaded = load_dit(path)
    assert loaded.config == LUMINA
    x, context = torch.randn(2, 16, 6, 4), torch.randn(2, 5, 32)
    sigma = torch.tensor([0.3, 0.9])
    with torch.no_grad():
        assert torch.equal(loaded(x, sigma, context), model(x, sigma, context))


def test_gqa_adapters_save_load_and_change_the_output(tmp_path):
    model = randomized_dit(LUMINA)
    adapters = _adapters(model)
    assert adapters.adapters[next(iter(adapters.adapters))].up["k"].shape == (4 * 32, 4)
    path = save_erasure(tmp_path / "cat.safetensors", adapters, _info(model))
    x, context, sigma = torch.randn(1, 16, 4, 4), torch.randn(1, 6, 32), torch.tensor([0.5])
    with torch.no_grad():
        plain = model(x, sigma, context)
        loaded, _ = load_erasure(path, model)
        loaded.attach(model)
        erased = model(x, sigma, context)
        loaded.detach()
        adapters.attach(model)
        expected = model(x, sigma, context)
        adapters.detach()
    assert not torch.allclose(erased, plain)
    assert torch.allclose(erased, expected, atol=1e-6)


@pytest.mark.parametrize("made_for, applied_to", [(LUMINA, TINY_CONFIG), (TINY_CONFIG, LUMINA)])
def test_a_file_for_one_family_is_refused_on_the_other_naming_both_fingerprints(tmp_path, made_for, applied_to):
    source, target = randomized_dit(made_for), randomized_dit(applied_to)
    path = save_erasure(tmp_path / "cat.safetensors", _adapters(source), _info(source))
    names = {"lumina2": "Lumina-Image-2.0", "z-image": "Z-Image"}
    pattern = (f"made for {names[made_for.kind]}.*{fingerprint(source)}.*this model is {names[applied_to.kind]}"
               f".*{fingerprint(target)}")
    for allow in (False, True):
        with pytest.raises(ErasureFileError, match=re.compile(pattern)):
            load_erasure(path, target, allow_other_base=allow)


def test_stock_export_of_a_lumina_erasure_takes_q_slices_only(tmp_path):
    """ComfyUI's LoRA key map places to_k / to_v as dim-wide qkv blocks; Lumina-2's GQA k and v are narrower."""
    from safetensors.torch import load_file
    from zerase_core.formats.erasure_file import export_stock_lora
    model = randomized_dit(LUMINA)
    context_qkv = AdapterConfig(rank=4, alpha=4.0, slices=("q", "k", "v"), families=("context_refiner",))
    adapters = AdapterSet(model, context_qkv)
    path = save_erasure(tmp_path / "qkv.safetensors", adapters, _info(model, context_qkv))
    with pytest.raises(ErasureFileError, match="k/v rows of a Lumina-Image-2.0 model.*4 key/value heads.*8 query"):
        export_stock_lora(path)
    context_q = AdapterConfig(rank=4, alpha=4.0, slices=("q",), families=("context_refiner",))
    path = save_erasure(tmp_path / "q.safetensors", AdapterSet(model, context_q), _info(model, context_q))
    exported = load_file(str(export_stock_lora(path)))
    assert exported["diffusion_model.context_refiner.0.attention.to_q.lora_B.weight"].shape == (256, 4)
