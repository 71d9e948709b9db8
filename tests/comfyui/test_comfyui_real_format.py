"""The real Z-Image format: Z-Image-Turbo's width (dim 3840) through the stock UNETLoader, Qwen3 tokenization.

A random dim-3840 file with one joint layer (`scripts/make_random_zimage.py`, ~0.9B parameters, 1.8 GB in bf16) and a
tiny Qwen3 CLIP built from ComfyUI's own Qwen3_4B class and ZImageTokenizer (hidden size 64).
The end-to-end run (2 training steps, ApplyErasedWeights, KSampler) takes minutes on 2 CPU cores: marked slow, as is
the check that LoadSingleStreamDiT builds the same MODEL as UNETLoader with the file's tensors as its weights.

    COMFYUI_PATH=... nice -n 19 comfyui-venv/bin/python -m pytest tests/comfyui/test_comfyui_real_format.py -m slow
"""
from __future__ import annotations

import importlib.util

import pytest
import torch
from comfy_support import REPO_ROOT

CAPTION_WIDTH = 64
PROMPT = "a painting by Van Gogh"


def tiny_qwen3_clip():
    """ComfyUI's Z-Image text-encoder classes at hidden size 64 (vocabulary and chat template unchanged)."""
    import comfy.sd
    import comfy.supported_models_base
    import comfy.text_encoders.llama
    import comfy.text_encoders.z_image
    from comfy import sd1_clip

    class TinyQwen3(sd1_clip.SDClipModel):
        def __init__(self, device="cpu", layer="hidden", layer_idx=-2, dtype=None, attention_mask=True,
                     model_options=None):
            super().__init__(device=device, layer=layer, layer_idx=layer_idx, dtype=dtype,
                             textmodel_json_config={"hidden_size": CAPTION_WIDTH, "intermediate_size": 128,
                                                    "num_hidden_layers": 3, "num_attention_heads": 2,
                                                    "num_key_value_heads": 1},
                             special_tokens={"pad": 151643}, layer_norm_hidden_state=False,
                             model_class=comfy.text_encoders.llama.Qwen3_4B, enable_attention_masks=attention_mask,
                             return_attention_masks=attention_mask, model_options=model_options or {})

    class TinyTE(sd1_clip.SD1ClipModel):
        def __init__(self, device="cpu", dtype=None, model_options=None):
            super().__init__(device=device, dtype=dtype, name="qwen3_4b", clip_model=TinyQwen3,
                             model_options=model_options or {})

    target = comfy.supported_models_base.ClipTarget(comfy.text_encoders.z_image.ZImageTokenizer, TinyTE)
    clip = comfy.sd.CLIP(target, model_options={"dtype": torch.float32})
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, parameter in clip.cond_stage_model.named_parameters():
            if parameter.dim() == 1:
                parameter.copy_(torch.ones_like(parameter))
            else:
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.02)
    return clip


@pytest.fixture(scope="module")
def clip(comfy):
    return tiny_qwen3_clip()


def test_multi_token_keyword_maps_to_its_token_rows(pack, clip):
    conditioner = pack["bridge"].ClipConditioner(clip)
    ids = conditioner._ids(PROMPT)
    positions = conditioner.keyword_positions(PROMPT, "Van Gogh")
    decode = clip.tokenizer.decode
    assert len(positions) >= 2, "Van Gogh should be more than one Qwen token"
    assert positions == list(range(positions[0], positions[-1] + 1))
    assert decode([ids[index] for index in positions], skip_special_tokens=False).strip() == "Van Gogh"
    assert decode(ids[:positions[0]], skip_special_tokens=False).endswith("a painting by")
    features, lengths = conditioner.encode([PROMPT, "a painting"])
    assert features.shape[-1] == CAPTION_WIDTH and int(lengths[0]) == len(ids)
    assert conditioner.keyword_positions("a painting by van gogh and Van Gogh", "Van Gogh") != positions


@pytest.fixture(scope="module")
def turbo_width_file(comfy, tmp_path_factory):
    """`zimage-random.safetensors` (bf16, 1 joint layer) in a diffusion_models folder ComfyUI lists, for the module."""
    import folder_paths

    from zerase_core.model.checkpoint import save_dit

    spec = importlib.util.spec_from_file_location("make_random_zimage", REPO_ROOT / "scripts" / "make_random_zimage.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    folder = tmp_path_factory.mktemp("diffusion_models")
    save_dit(script.random_zimage(1, CAPTION_WIDTH, 0, torch.bfloat16), folder / "zimage-random.safetensors")
    saved = folder_paths.folder_names_and_paths["diffusion_models"]
    folder_paths.folder_names_and_paths["diffusion_models"] = ([str(folder)], saved[1])
    yield folder / "zimage-random.safetensors"
    folder_paths.folder_names_and_paths["diffusion_models"] = saved


@pytest.mark.slow
def test_load_single_stream_dit_assigns_the_file_tensors(pack, turbo_width_file, monkeypatch):
    """With --bf16-unet ComfyUI keeps the bf16 weights: LoadSingleStreamDiT then builds UNETLoader's MODEL (same
    config, dtypes, ops, weights) but with the file's mmapped tensors as the weights, not a copy of them."""
    import comfy.cli_args

    import nodes
    monkeypatch.setattr(comfy.cli_args.args, "bf16_unet", True)
    with torch.inference_mode():
        stock = nodes.UNETLoader().load_unet(turbo_width_file.name, "default")[0]
        ours = pack["nodes"]["LoadSingleStreamDiT"].execute(turbo_width_file.name).result[0]
    assert type(ours.model.model_config) is type(stock.model.model_config)
    assert ours.model.model_config.unet_config == stock.model.model_config.unet_config
    assert (ours.model.get_dtype(), ours.model.manual_cast_dtype) == (stock.model.get_dtype(),
                                                                      stock.model.manual_cast_dtype)
    assert (ours.model.get_dtype(), ours.model.manual_cast_dtype) == (torch.bfloat16, torch.float32)
    mapped = _mapped_ranges(turbo_width_file)
    assert mapped, "the file is not mapped into the process"
    stock_weights = dict(stock.model.diffusion_model.named_parameters())
    for name, weight in ours.model.diffusion_model.named_parameters():
        module = name.rpartition(".")[0]
        assert type(ours.model.diffusion_model.get_submodule(module)) is \
            type(stock.model.diffusion_model.get_submodule(module)), module
        assert not weight.is_inference() and torch.equal(weight, stock_weights[name]), name
        if weight.numel() >= 2 ** 20:
            start = weight.data_ptr()
            assert any(low <= start < high for low, high in mapped), f"{name} is a copy, not the file's tensor"
    assert ours.cached_patcher_init[0](*ours.cached_patcher_init[1]).model.get_dtype() == torch.bfloat16


def _mapped_ranges(path) -> list[tuple[int, int]]:
    ranges = []
    with open("/proc/self/maps") as maps:
        for line in maps:
            if line.rstrip().endswith(str(path)):
                low, high = (int(value, 16) for value in line.split()[0].split("-"))
                ranges.append((low, high))
    return ranges


@pytest.mark.slow
def test_random_turbo_width_file_trains_applies_and_samples(pack, clip, turbo_width_file):
    import nodes
    from zerase_core.model.layout import TokenLayout

    with torch.inference_mode():
        model = nodes.UNETLoader().load_unet("zimage-random.safetensors", "default")[0]
        assert type(model.model.model_config).__name__ == "ZImage"
        erased = pack["nodes"]["ZEraseTrain"].execute(
            model=model, clip=clip, concepts=PROMPT, keywords="Van Gogh", anchors="a painting", method="zerase",
            steps=2, learning_rate=1e-3, rank=4, targets="qk", epsilon=0.0, beta=0.1, eta=2.0, seed=0,
            resolution=16, save_name="real-format", resume_from="none", preview_every=0, sample_steps=1,
            sample_cfg=1.0, batch_size=1, pool_prompts=1).result[0]
        applied = pack["nodes"]["ApplyErasedWeights"].execute(
            model=model, strength=1.0, allow_other_base=False, erasure_file_1="real-format.safetensors").result[0]
    text_length = len(pack["bridge"].ClipConditioner(clip)._ids(PROMPT))
    image = TokenLayout.from_shapes([text_length], (2, 2), 2, 32).image_mask("layers")[0]
    for candidate in (applied, erased):
        frozen, output = _first_qkv(candidate, clip)
        assert torch.equal(frozen[:, image], output[:, image]), "an image row of layers.0.attention.qkv changed"
        assert not torch.equal(frozen[:, ~image], output[:, ~image]), "the erasure changed no text row"


def _first_qkv(model, clip) -> tuple[torch.Tensor, torch.Tensor]:
    """(frozen W·x, actual output) of layers.0.attention.qkv in a one-step 16×16 sample through the stock nodes."""
    import comfy_extras.nodes_sd3 as sd3
    import torch.nn.functional as F

    import nodes
    found = {}
    qkv = model.model.diffusion_model.layers[0].attention.qkv

    def hook(module, args, output):
        found.setdefault("rows", (F.linear(args[0], module.weight.to(args[0].dtype)), output.detach().clone()))
    handle = qkv.register_forward_hook(hook)
    try:
        with torch.inference_mode():
            positive = nodes.CLIPTextEncode().encode(clip, PROMPT)[0]
            latent = sd3.EmptySD3LatentImage.execute(16, 16, 1).result[0]
            samples = nodes.KSampler().sample(model, 0, 1, 1.0, "euler", "simple", positive, positive, latent)[0]
            assert torch.isfinite(samples["samples"]).all()
    finally:
        handle.remove()
    return found["rows"]
