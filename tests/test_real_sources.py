"""Finding and loading real models: diffusers folders and ComfyUI single files, memory-mapped, bf16/fp16/fp8,
and clear refusals of everything else."""
from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file
from zerase_fixtures import dit_output, randomized_dit

from zerase_core.model.checkpoint import save_dit
from zerase_core.model.checkpoint_keys import CheckpointError, UnsupportedModelError
from zerase_core.model.config import DiTConfig
from zerase_core.real.mapped import read_header
from zerase_core.real.sources import component_kind, find_model, load_transformer

# head dim 128: inferable from shapes alone, as a ComfyUI file without metadata must be
SHAPES = DiTConfig(dim=256, n_layers=1, n_refiner_layers=1, n_heads=2, axes_dims=(32, 48, 48), cap_feat_dim=32)


def comfy_file(tmp_path, dtype=None, name="z_image_test.safetensors"):
    model = randomized_dit(SHAPES)
    path = tmp_path / name
    tensors = {f"model.diffusion_model.{key}": value.to(dtype or value.dtype).contiguous()
               for key, value in model.state_dict().items()}
    save_file(tensors, str(path))        # ComfyUI-style: prefixed keys, no zerase metadata
    return model, path


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float8_e4m3fn])
def test_comfy_single_file_loads_memory_mapped_in_each_dtype(tmp_path, dtype):
    model, path = comfy_file(tmp_path, dtype)
    assert component_kind(path) == "z-image"
    loaded = load_transformer(path)
    expected_dtype = torch.bfloat16 if dtype == torch.float8_e4m3fn else dtype
    assert loaded.dtype == expected_dtype
    assert loaded.config == SHAPES
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value.to(dtype).to(expected_dtype)), key
    if dtype != torch.float8_e4m3fn:
        # same dtype as the file: the weights are views of one memory map of the file, not copies: every
        # tensor lies at its own file offset from the first one
        header, _, _ = read_header(path)
        loaded_tensors = loaded.state_dict()
        first = "model.diffusion_model.x_embedder.weight"
        for key in ("layers.0.attention.qkv.weight", "final_layer.linear.weight", "cap_pad_token"):
            distance = header[f"model.diffusion_model.{key}"]["data_offsets"][0] - header[first]["data_offsets"][0]
            assert loaded_tensors[key].data_ptr() - loaded_tensors["x_embedder.weight"].data_ptr() == distance, key


def test_bf16_file_gives_the_models_output_in_bf16(tmp_path):
    model, path = comfy_file(tmp_path, torch.bfloat16)
    reference = dit_output(model.to(torch.bfloat16))
    assert torch.equal(dit_output(load_transformer(path)), reference)


def test_diffusers_transformer_folder_and_pipeline_folder(tmp_path):
    diffusers = pytest.importorskip("diffusers", reason="diffusers is not installed (pip install -e \".[real]\")")
    from zerase_core.real.diffusers_format import config_from_diffusers
    torch.manual_seed(0)
    transformer = diffusers.ZImageTransformer2DModel(dim=256, n_layers=1, n_refiner_layers=1, n_heads=2,
                                                     n_kv_heads=2, cap_feat_dim=32, in_channels=4)
    root = tmp_path / "Z-Image-Tiny"
    transformer.save_pretrained(root / "transformer", max_shard_size="1MB")     # several shards
    assert len(list((root / "transformer").glob("*.safetensors"))) > 1
    (root / "model_index.json").write_text(json.dumps({"_class_name": "ZImagePipeline"}))
    source = find_model(root)
    assert source.kind == "z-image" and source.dit == root / "transformer" and source.text_encoder is None
    for path in (root, root / "transformer"):
        loaded = load_transformer(path)
        assert loaded.config == config_from_diffusers(dict(transformer.config))
        assert loaded.dtype == torch.float32


def test_other_pipelines_and_components_are_refused_by_name(tmp_path):
    other = tmp_path / "flux-folder"
    other.mkdir()
    (other / "model_index.json").write_text(json.dumps({"_class_name": "FluxPipeline"}))
    with pytest.raises(UnsupportedModelError, match="FluxPipeline \\(Flux\\).*Supported: Z-Image.*Lumina-Image-2.0"):
        find_model(other)
    text_encoder = tmp_path / "qwen_3_4b.safetensors"
    save_file({"model.layers.0.self_attn.q_norm.weight": torch.ones(4), "model.embed_tokens.weight": torch.ones(8, 4)},
              str(text_encoder))
    assert component_kind(text_encoder) == "qwen3-text-encoder"
    with pytest.raises(UnsupportedModelError, match="qwen3 text encoder file, not a diffusion model"):
        find_model(text_encoder)
    flux = tmp_path / "flux.safetensors"
    save_file({f"double_blocks.{i}.img_attn.qkv.weight": torch.ones(2) for i in range(8)}, str(flux))
    with pytest.raises(UnsupportedModelError, match="Flux.*Supported: Z-Image"):
        find_model(flux)
    with pytest.raises(CheckpointError, match="without model_index.json"):
        find_model(tmp_path)
    pickle = tmp_path / "model.safetensors"
    pickle.write_bytes(b"\x80\x04" + b"\0" * 64)
    with pytest.raises(CheckpointError, match="never pickled|not a safetensors"):
        find_model(pickle)


def test_metadata_written_by_save_dit_is_used(tmp_path):
    model = randomized_dit(DiTConfig(dim=256, n_layers=1, n_refiner_layers=1, n_heads=8, axes_dims=(8, 12, 12),
                                     cap_feat_dim=32, pad_tokens_multiple=8))
    save_dit(model, tmp_path / "ours.safetensors")
    assert load_transformer(tmp_path / "ours.safetensors").config == model.config
