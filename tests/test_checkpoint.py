"""Checkpoint I/O: round trips, key formats, detection of other models, config inference, error messages."""
from __future__ import annotations

import dataclasses
import os

import pytest
import torch
from safetensors.torch import load_file, save_file
from zerase_fixtures import TINY_CONFIG, dit_output, randomized_dit

from zerase_core.model.checkpoint import (
    CheckpointError,
    UnsupportedModelError,
    detect_architecture,
    fingerprint,
    infer_config,
    load_dit,
    normalize_keys,
    read_state_dict,
    save_dit,
)
from zerase_core.model.config import METADATA_KEY, DiTConfig
from zerase_core.model.dit import ZImageDiT

TINY = dataclasses.replace(TINY_CONFIG, n_layers=1)
# head dim 128 and the default pad multiple: the only shape family inferable without metadata
INFERABLE = DiTConfig(dim=256, n_layers=2, n_refiner_layers=1, n_heads=2, axes_dims=(32, 48, 48), cap_feat_dim=32)


def make_model(config: DiTConfig = TINY, seed: int = 0) -> ZImageDiT:
    return randomized_dit(config, seed)   # all random: the training init zeroes adaLN and the output layer


def to_diffusers(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Inverse of the ComfyUI naming: official / diffusers Z-Image keys."""
    converted = {}
    for key, value in state_dict.items():
        if key.endswith(".attention.qkv.weight"):
            base = key[: -len("qkv.weight")]
            for name, part in zip(("to_q", "to_k", "to_v"), value.chunk(3, dim=0)):
                converted[f"{base}{name}.weight"] = part.clone()
            continue
        key = key.replace(".attention.out.", ".attention.to_out.0.")
        key = key.replace(".attention.q_norm.", ".attention.norm_q.")
        key = key.replace(".attention.k_norm.", ".attention.norm_k.")
        if key.startswith("x_embedder."):
            key = "all_x_embedder.2-1." + key[len("x_embedder."):]
        if key.startswith("final_layer."):
            key = "all_final_layer.2-1." + key[len("final_layer."):]
        converted[key] = value
    return converted


def assert_same_weights(model: ZImageDiT, other: ZImageDiT) -> None:
    ours, theirs = model.state_dict(), other.state_dict()
    assert list(ours) == list(theirs)
    for key in ours:
        assert ours[key].dtype == theirs[key].dtype, key
        assert torch.equal(ours[key], theirs[key]), key


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_save_load_round_trip_is_bit_exact(tmp_path, dtype):
    model = make_model()
    path = tmp_path / "dit.safetensors"
    save_dit(model, path, extra_metadata={"zerase.note": "hello"}, dtype=dtype)
    loaded = load_dit(path)
    reference = make_model().to(dtype)
    assert loaded.config == TINY
    assert_same_weights(reference, loaded)
    assert not loaded.training and not any(p.requires_grad for p in loaded.parameters())
    output = dit_output(loaded)
    assert output.abs().sum() > 0 and torch.equal(output, dit_output(reference))
    _, metadata = read_state_dict(path)
    assert metadata["zerase.note"] == "hello" and DiTConfig.from_metadata(metadata) == TINY
    # an independent reader sees ComfyUI's bare keys with the right dtype
    raw = load_file(str(path))
    assert set(raw) == set(model.state_dict()) and raw["layers.0.attention.qkv.weight"].dtype == dtype


def test_load_casts_to_requested_dtype(tmp_path):
    path = tmp_path / "dit.safetensors"
    save_dit(make_model(), path)
    loaded = load_dit(path, dtype=torch.bfloat16)
    assert {p.dtype for p in loaded.parameters()} == {torch.bfloat16}
    assert_same_weights(make_model().to(torch.bfloat16), loaded)


@pytest.mark.parametrize("prefix", ["model.diffusion_model.", "diffusion_model."])
def test_prefixed_keys_load_and_other_components_are_ignored(prefix):
    model = make_model()
    state_dict = {prefix + key: value for key, value in model.state_dict().items()}
    state_dict["first_stage_model.encoder.conv_in.weight"] = torch.zeros(4)   # a full checkpoint's VAE
    assert detect_architecture(state_dict) == "z-image"
    loaded = load_dit(state_dict, metadata=TINY.to_metadata())
    assert_same_weights(model, loaded)


def test_diffusers_format_loads_to_identical_weights_and_outputs():
    model = make_model()
    state_dict = to_diffusers(model.state_dict())
    state_dict["norm_final.weight"] = torch.ones(TINY.dim)          # stray Lumina-2 key, dropped
    assert "layers.0.attention.to_q.weight" in state_dict and "x_embedder.weight" not in state_dict
    assert detect_architecture(state_dict) == "z-image"
    loaded = load_dit(state_dict, metadata=TINY.to_metadata())
    assert_same_weights(model, loaded)
    assert torch.equal(dit_output(loaded), dit_output(model))
    assert fingerprint(state_dict) == fingerprint(model)


def test_partial_diffusers_attention_raises():
    state_dict = to_diffusers(make_model().state_dict())
    del state_dict["noise_refiner.0.attention.to_k.weight"]
    with pytest.raises(CheckpointError, match=r"noise_refiner\.0\.attention\.to_k\.weight missing"):
        normalize_keys(state_dict)


def test_mixed_formats_raise():
    state_dict = dict(make_model().state_dict())
    state_dict["all_x_embedder.2-1.weight"] = state_dict["x_embedder.weight"]
    with pytest.raises(CheckpointError, match="all_x_embedder.2-1.weight.*x_embedder.weight|x_embedder.weight.*all_x"):
        normalize_keys(state_dict)
    state_dict = dict(make_model().state_dict())
    for name in ("to_q", "to_k", "to_v"):
        state_dict[f"layers.0.attention.{name}.weight"] = torch.zeros(TINY.dim, TINY.dim)
    with pytest.raises(CheckpointError, match=r"both layers\.0\.attention\.qkv\.weight"):
        load_dit(state_dict, metadata=TINY.to_metadata())


def test_config_inferred_from_shapes_without_metadata(tmp_path):
    model = make_model(INFERABLE)
    path = tmp_path / "bare.safetensors"
    save_file({key: value.contiguous() for key, value in model.state_dict().items()}, str(path))   # no metadata
    assert read_state_dict(path)[1] == {}
    loaded = load_dit(path)
    assert loaded.config == INFERABLE
    assert torch.equal(dit_output(loaded), dit_output(model))


def test_uninferable_config_asks_for_metadata():
    state_dict = make_model().state_dict()                  # head dim 32
    with pytest.raises(CheckpointError, match=f"head dim 32.*{METADATA_KEY}|{METADATA_KEY}.*head dim 32"):
        load_dit(state_dict)
    assert load_dit(state_dict, metadata=TINY.to_metadata()).config == TINY


def test_metadata_that_contradicts_the_tensors_raises():
    state_dict = make_model().state_dict()
    wrong = dataclasses.replace(TINY, n_layers=3)
    with pytest.raises(CheckpointError, match="n_layers 3 in metadata but 1 in the tensors"):
        infer_config(state_dict, wrong.to_metadata())


def test_turbo_key_set_on_meta_is_detected_and_inferred():
    state_dict = ZImageDiT(DiTConfig.turbo(), device="meta").state_dict()
    assert len(state_dict) == 453
    assert detect_architecture(state_dict) == "z-image"
    assert infer_config(state_dict, {}) == DiTConfig.turbo()
    prefixed = {"model.diffusion_model." + key: value for key, value in state_dict.items()}
    assert load_dit(prefixed, device="meta").config == DiTConfig.turbo()
    official = to_diffusers(state_dict)
    normalized = normalize_keys(official)
    assert {k: v.shape for k, v in normalized.items()} == {k: v.shape for k, v in state_dict.items()}


def fake(*keys: str) -> dict[str, torch.Tensor]:
    return {key: torch.zeros(2) for key in keys}


def tiny_with(**changes) -> dict[str, torch.Tensor]:
    state_dict = dict(make_model().state_dict())
    for key, value in changes.items():
        key = key.replace("__", ".")
        if value is None:
            del state_dict[key]
        else:
            state_dict[key] = value
    return state_dict


@pytest.mark.parametrize("state_dict, expected", [
    (fake("double_blocks.0.img_attn.qkv.weight", "single_blocks.0.linear1.weight", "img_in.weight"), "Flux"),
    (fake(*[f"model.diffusion_model.input_blocks.{i}.0.weight" for i in range(6)]), "U-Net"),
    (fake("joint_blocks.0.x_block.attn.qkv.weight", "x_embedder.proj.weight"), "SD3"),
    (fake("transformer_blocks.0.img_mod.1.weight", "transformer_blocks.0.txt_mod.1.weight"), "Qwen-Image"),
    (fake("model.layers.0.self_attn.q_proj.weight", "model.embed_tokens.weight"), r"text encoder \(Qwen/LLM"),
    (fake("encoder.down.0.block.0.conv1.weight", "decoder.up.0.block.0.conv1.weight"), "VAE"),
    (fake("siglip_embedder.0.weight", "cap_embedder.1.weight", "cap_pad_token", "x_pad_token"), "Omni"),
    (fake("dec_net.0.weight", "cap_embedder.1.weight", "cap_pad_token", "x_pad_token"), "pixel-space"),
    (fake("clip_text_pooled_proj.0.weight", "cap_embedder.1.weight"), "NewBie"),
    (fake("foo.weight", "bar.bias", "baz"), "not a diffusion transformer.*foo.weight, bar.bias, baz"),
    (tiny_with(x_pad_token=None, cap_pad_token=None), "mixes the two known families.*no cap_pad_token / x_pad_token.*Supported: Z-Image.*Lumina-Image-2.0"),
    (tiny_with(layers__0__attention__qkv__weight=torch.zeros(256 + 2 * 64, 256)), "mixes the two known families.*GQA.*Supported"),
], ids=["flux", "sdxl", "sd3", "qwen-image", "text-encoder", "vae", "omni", "pixel", "newbie", "random", "lumina-pads",
        "lumina-gqa"])
def test_other_models_are_named(state_dict, expected):
    with pytest.raises(UnsupportedModelError, match=expected):
        detect_architecture(state_dict)
    with pytest.raises(UnsupportedModelError, match=f"^state dict: .*{expected}"):
        load_dit(state_dict, metadata=TINY.to_metadata())


def test_unreadable_files_raise_checkpoint_error(tmp_path):
    path = tmp_path / "dit.safetensors"
    save_dit(make_model(), path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=f"{path}.*truncated, damaged or not a safetensors file"):
        load_dit(path)
    pickled = tmp_path / "model.ckpt"
    pickled.write_bytes(b"PK\x03\x04" + bytes(64))
    with pytest.raises(CheckpointError, match="pickled PyTorch checkpoint"):
        read_state_dict(pickled)
    with pytest.raises(CheckpointError, match="does not exist"):
        read_state_dict(tmp_path / "absent.safetensors")


def test_missing_key_is_listed_with_its_shape():
    state_dict = tiny_with(layers__0__feed_forward__w2__weight=None)
    expected = r"1 missing: layers\.0\.feed_forward\.w2\.weight \(expected \[256, 768\]\)"
    with pytest.raises(CheckpointError, match=expected):
        load_dit(state_dict, metadata=TINY.to_metadata())


def test_wrong_shape_and_unexpected_key_are_listed():
    state_dict = tiny_with(layers__0__adaLN_modulation__0__bias=torch.zeros(1000),
                           layers__0__attention__extra__weight=torch.zeros(3))
    with pytest.raises(CheckpointError) as caught:
        load_dit(state_dict, metadata=TINY.to_metadata())
    message = str(caught.value)
    assert "layers.0.adaLN_modulation.0.bias (expected [1024], found [1000])" in message
    assert "1 unexpected: layers.0.attention.extra.weight (found [3])" in message
    many = dict(state_dict, **{f"extra.{i}": torch.zeros(1) for i in range(8)})
    with pytest.raises(CheckpointError, match="9 unexpected") as caught:
        load_dit(many, metadata=TINY.to_metadata())
    assert str(caught.value).count("(found") == 5          # at most five keys listed per kind


def test_shard_folder_loads(tmp_path):
    model = make_model()
    items = list(model.state_dict().items())
    half = len(items) // 2
    save_file(dict(items[:half]), str(tmp_path / "part-1.safetensors"), metadata=TINY.to_metadata())
    save_file(dict(items[half:]), str(tmp_path / "part-2.safetensors"))
    assert_same_weights(model, load_dit(tmp_path))


def test_failed_save_leaves_the_old_file_and_no_temporary(tmp_path, monkeypatch):
    path = tmp_path / "dit.safetensors"
    save_dit(make_model(seed=0), path)
    before = path.read_bytes()

    def failing_fsync(descriptor):
        raise OSError("disk full")

    monkeypatch.setattr(os, "fsync", failing_fsync)
    with pytest.raises(OSError, match="disk full"):
        save_dit(make_model(seed=1), path)
    assert path.read_bytes() == before and os.listdir(tmp_path) == ["dit.safetensors"]


def test_save_rejects_non_string_metadata(tmp_path):
    with pytest.raises(ValueError, match="must be str"):
        save_dit(make_model(), tmp_path / "dit.safetensors", extra_metadata={"steps": 5})
    assert not any(tmp_path.iterdir())


def test_fingerprint_tracks_weights_not_storage(tmp_path):
    model = make_model()
    value = fingerprint(model)
    assert len(value) == 16 and int(value, 16) >= 0
    path = tmp_path / "dit.safetensors"
    save_dit(model, path)
    assert fingerprint(load_dit(path)) == value
    assert fingerprint({"diffusion_model." + k: v for k, v in model.state_dict().items()}) == value
    assert fingerprint(make_model().to(torch.bfloat16)) == value      # documented: bf16 rounding before hashing
    assert fingerprint(make_model(seed=1)) != value
    changed = make_model()
    with torch.no_grad():
        changed.x_pad_token[0, 7] += 0.25
    assert fingerprint(changed) != value
    assert fingerprint(make_model(INFERABLE)) != value
