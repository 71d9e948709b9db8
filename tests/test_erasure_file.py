"""Erasure files: round trips, validation of damaged / forged files, stacking, stock-LoRA export."""
from __future__ import annotations

import dataclasses
import json
import re

import pytest
import torch
from safetensors.torch import load_file, save_file
from zerase_fixtures import TINY_CONFIG, dit_output, randomized_dit

from zerase_core.adapters.gated import AdapterConfig, AdapterSet
from zerase_core.formats.erasure_file import (
    METADATA_KEY,
    STOCK_LORA_SUFFIXES,
    UCE_DELTA_KEY,
    ErasureFileError,
    ErasureInfo,
    adapter_dict,
    apply_erasures,
    export_stock_lora,
    load_erasure,
    read_erasure,
    save_erasure,
)
from zerase_core.model.checkpoint import fingerprint
from zerase_core.model.dit import ZImageDiT

JOINT = AdapterConfig(rank=8, alpha=8.0, slices=("q", "k"), families=("layers",))
CONTEXT = AdapterConfig(rank=4, alpha=2.0, slices=("q", "k", "v"), families=("context_refiner",))


def make_adapters(model: ZImageDiT, config: AdapterConfig = JOINT, seed: int = 1) -> AdapterSet:
    torch.manual_seed(seed)
    adapters = AdapterSet(model, config)
    with torch.no_grad():
        for adapter in adapters.adapters.values():
            for up in adapter.up.values():         # zero at init would make every test trivially pass
                up.copy_(torch.randn_like(up) * 0.05)
    return adapters


def make_info(model: ZImageDiT, config: AdapterConfig = JOINT, **overrides) -> ErasureInfo:
    values = dict(method="z-erase", concepts=("cat",), keywords=("cat",), anchors=("a dog",),
                  adapter=adapter_dict(config), recommended_strength=1.5, steps_done=10, steps_total=10, seed=3,
                  summary={"lambda": 0.25}, base_fingerprint=fingerprint(model), base_config=model.config.to_dict(),
                  training={"lr": 1e-3})
    values.update(overrides)
    return ErasureInfo(**values)


def saved(tmp_path, config: AdapterConfig = JOINT, seed: int = 1, name: str = "cat.safetensors", **overrides):
    model = randomized_dit()
    adapters = make_adapters(model, config, seed)
    info = make_info(model, config, **overrides)
    path = save_erasure(tmp_path / name, adapters, info)
    return model, adapters, info, path


def rewrite(path, out, metadata_change=None, tensor_change=None):
    """A hand-edited copy of an erasure file (a forged or damaged file)."""
    tensors = load_file(str(path))
    data = json.loads(read_metadata(path)[METADATA_KEY])
    if metadata_change:
        metadata_change(data)
    if tensor_change:
        tensor_change(tensors)
    save_file(tensors, str(out), metadata={METADATA_KEY: json.dumps(data)})
    return out


def read_metadata(path):
    from safetensors import safe_open
    with safe_open(str(path), framework="pt") as handle:
        return handle.metadata()


def test_round_trip_reproduces_outputs_bit_for_bit(tmp_path):
    model, adapters, info, path = saved(tmp_path)
    adapters.set_strength(info.recommended_strength)
    with torch.no_grad():
        adapters.attach(model)
        expected = dit_output(model)
        adapters.detach()
    loaded, loaded_info = load_erasure(path, model)
    assert loaded_info == info and not loaded.attached
    loaded.attach(model)
    assert torch.equal(dit_output(model), expected)
    loaded.detach()


def test_keys_are_never_read_by_stock_lora_loaders(tmp_path):
    *_, path = saved(tmp_path)
    keys = list(load_file(str(path)))
    assert keys and all(key.startswith("zerase.") for key in keys)
    assert not any(key.endswith(STOCK_LORA_SUFFIXES) for key in keys)


def test_partial_file_round_trips_resume_state(tmp_path):
    model = randomized_dit()
    adapters = make_adapters(model)
    state = {"optimizer.exp_avg.0": torch.randn(3, 4), "rng.cpu": torch.randint(0, 255, (16,), dtype=torch.uint8)}
    path = save_erasure(tmp_path / "part.safetensors", adapters, make_info(model, partial=True, steps_done=4),
                        extra_tensors=state)
    info, tensors, loaded_state = read_erasure(path)
    assert info.partial and info.steps_done == 4
    assert set(loaded_state) == set(state) and all(torch.equal(loaded_state[k], state[k]) for k in state)
    assert set(tensors) == set(adapters.export_tensors())
    with pytest.raises(ErasureFileError, match="partial"):
        save_erasure(tmp_path / "done.safetensors", adapters, make_info(model), extra_tensors=state)


def test_other_base_is_refused_unless_overridden(tmp_path):
    *_, path = saved(tmp_path)
    other = randomized_dit(seed=5)
    with pytest.raises(ErasureFileError, match="allow_other_base") as error:
        load_erasure(path, other)
    assert fingerprint(other) in str(error.value)
    adapters, _ = load_erasure(path, other, allow_other_base=True)
    assert adapters.paths == ["layers.0.attention.qkv", "layers.1.attention.qkv"]


def test_other_shape_is_refused_even_with_override(tmp_path):
    *_, path = saved(tmp_path)
    wider = randomized_dit(dataclasses.replace(TINY_CONFIG, dim=384, n_heads=12))
    with pytest.raises(ErasureFileError, match="dim 256 .file. vs 384"):
        load_erasure(path, wider, allow_other_base=True)


@pytest.mark.parametrize("damage", ["truncated", "text", "empty", "missing"])
def test_unreadable_files_raise_with_the_file_name(tmp_path, damage):
    *_, path = saved(tmp_path)
    data = path.read_bytes()
    if damage == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif damage == "text":
        path.write_text("not a tensor file\n" * 10)
    elif damage == "empty":
        path.write_bytes(b"")
    else:
        path.unlink()
    with pytest.raises(ErasureFileError, match=re.escape(str(path))):
        read_erasure(path)


def test_missing_metadata_says_not_an_erasure_and_spots_stock_loras(tmp_path):
    plain = tmp_path / "plain.safetensors"
    save_file({"weight": torch.zeros(2)}, str(plain))
    with pytest.raises(ErasureFileError, match="not a ZErase erasure file"):
        read_erasure(plain)
    lora = tmp_path / "lora.safetensors"
    save_file({"diffusion_model.layers.0.attention.qkv.lora_up.weight": torch.zeros(6, 2),
               "diffusion_model.layers.0.attention.qkv.lora_down.weight": torch.zeros(2, 2)}, str(lora))
    with pytest.raises(ErasureFileError, match="stock LoRA"):
        read_erasure(lora)


@pytest.mark.parametrize("change, message", [
    (lambda data: data["adapter"].update(rank=4), r"has shape \(8, 256\) but the metadata .rank 4"),
    (lambda data: data.update(format_version=2), "unsupported erasure format_version 2"),
    (lambda data: data.update(colour="red"), r"unknown erasure metadata fields \['colour'\]"),
    (lambda data: data.update(steps_done="ten"), "'steps_done' must be an integer ≥ 0, got 'ten'"),
    (lambda data: data.pop("seed"), r"lacks the fields \['seed'\]"),
    (lambda data: data["adapter"].update(slices=["q", "k", "v"]), "missing"),
    (lambda data: data["adapter"].update(gate="sometimes"), "gate 'sometimes'"),
])
def test_forged_or_inconsistent_metadata_is_refused(tmp_path, change, message):
    *_, path = saved(tmp_path)
    forged = rewrite(path, tmp_path / "forged.safetensors", metadata_change=change)
    with pytest.raises(ErasureFileError, match=message):
        read_erasure(forged)


def test_non_finite_tensor_is_refused(tmp_path):
    *_, path = saved(tmp_path)
    key = "zerase.layers.1.attention.qkv.k.up"

    def poison(tensors):
        tensors[key][0, 0] = float("nan")
    forged = rewrite(path, tmp_path / "nan.safetensors", tensor_change=poison)
    with pytest.raises(ErasureFileError, match=f"{re.escape(key)} contains NaN"):
        read_erasure(forged)


def test_stacked_erasures_add_at_one_over_n_and_detach_restores_base():
    model = randomized_dit()
    base = dit_output(model)
    first, second = make_adapters(model, seed=1), make_adapters(model, seed=2)
    first.set_strength(1.0)
    second.set_strength(3.0)                        # as load_erasure leaves them: recommended strengths
    qkv = model.layers[0].attention.qkv            # its input is unaffected by any adapter: deltas add exactly
    outputs = []
    hook = qkv.register_forward_hook(lambda module, inputs, output: outputs.append(output))
    dit_output(model)
    for adapters in (first, second):
        with torch.no_grad():
            adapters.attach(model)
            dit_output(model)
            adapters.detach()
    with apply_erasures(model, [(first, None), (second, None)]) as stack:
        assert stack.strengths == [0.5, 1.5]
        dit_output(model)
    hook.remove()
    plain, only_first, only_second, both = outputs
    torch.testing.assert_close(both - plain, (only_first - plain) / 2 + (only_second - plain) / 2,
                               rtol=1e-5, atol=1e-6)
    assert (only_first - plain).abs().max() > 1e-3 and (only_second - plain).abs().max() > 1e-3
    assert torch.equal(dit_output(model), base)
    path = "layers.0.attention.qkv"
    assert [first.adapter(path).strength, second.adapter(path).strength] == [1.0, 3.0]    # strengths restored


def test_explicit_strength_is_used_as_is():
    model = randomized_dit()
    first, second = make_adapters(model, seed=1), make_adapters(model, seed=2)
    with apply_erasures(model, [(first, 2.0), (second, None)]) as stack:
        assert stack.strengths == [2.0, 0.5]
        assert first.adapter("layers.1.attention.qkv").strength == 2.0


def test_export_refuses_joint_layer_erasures(tmp_path):
    *_, path = saved(tmp_path)
    with pytest.raises(ErasureFileError, match="every token"):
        export_stock_lora(path)
    noise = AdapterConfig(rank=4, alpha=4.0, families=("noise_refiner",), gate="image")
    *_, noise_path = saved(tmp_path, noise, name="noise.safetensors")
    with pytest.raises(ErasureFileError, match="noise_refiner"):
        export_stock_lora(noise_path)


def test_context_refiner_export_matches_comfyui_math(tmp_path):
    model, _, info, path = saved(tmp_path, CONTEXT)
    out = export_stock_lora(path)
    assert out.name == "cat.stock-lora.safetensors"
    stock = load_file(str(out))
    pattern = r"diffusion_model\.context_refiner\.0\.attention\.to_[qkv]\.(lora_A\.weight|lora_B\.weight|alpha)"
    assert len(stock) == 9 and all(re.fullmatch(pattern, key) for key in stock)
    adapters, _ = load_erasure(path, model)
    with torch.no_grad():
        adapters.attach(model)
        expected = dit_output(model)
        adapters.detach()
        # What ComfyUI's LoRA patch does: qkv rows [offset, offset + dim) += (alpha / rank) · B·A.
        weight = model.context_refiner[0].attention.qkv.weight
        for index, name in enumerate("qkv"):
            prefix = f"diffusion_model.context_refiner.0.attention.to_{name}"
            up, down = stock[f"{prefix}.lora_B.weight"], stock[f"{prefix}.lora_A.weight"]
            scale = stock[f"{prefix}.alpha"].item() / down.shape[0]
            weight[index * TINY_CONFIG.dim:(index + 1) * TINY_CONFIG.dim] += scale * (up @ down)
        patched = dit_output(model)
    assert not torch.allclose(expected, dit_output(randomized_dit()), atol=1e-4)   # the erasure does change the output
    torch.testing.assert_close(patched, expected, rtol=1e-4, atol=1e-5)
    with pytest.raises(ErasureFileError, match="stock-lora.safetensors"):
        export_stock_lora(path, tmp_path / "cat-lora.safetensors")


def test_uce_text_exports_as_a_diff_patch(tmp_path):
    model = randomized_dit()
    delta = torch.randn(TINY_CONFIG.dim, TINY_CONFIG.cap_feat_dim) * 0.01
    info = make_info(model, method="uce-text", adapter={}, recommended_strength=2.0)
    path = save_erasure(tmp_path / "uce.safetensors", {UCE_DELTA_KEY: delta}, info)
    with pytest.raises(ErasureFileError, match="uce-text"):
        load_erasure(path, model)
    stock = load_file(str(export_stock_lora(path)))
    assert list(stock) == ["diffusion_model.cap_embedder.1.diff"]
    torch.testing.assert_close(stock["diffusion_model.cap_embedder.1.diff"], 2.0 * delta)
    with pytest.raises(ErasureFileError, match=r"shape \(32, 256\)"):
        save_erasure(tmp_path / "bad.safetensors", {UCE_DELTA_KEY: delta.t()}, info)
