"""Lumina-Image-2.0 in the nodes, at tiny size inside a real ComfyUI: LoadSingleStreamDiT builds ComfyUI's Lumina2
model, ZEraseTrain trains on it, ApplyErasedWeights gates the delta to text rows of its unpadded [text | image]
sequence, ErasureCompare samples it, and a Z-Image erasure is refused on it (and a Lumina-2 one on Z-Image) with both
fingerprints named.

The text encoder is ComfyUI's own Gemma-2 CLIP classes (Gemma2_2B, LuminaTokenizer) at hidden size 64; ComfyUI keeps
Gemma's SentencePiece model inside the text-encoder file, so the fixture trains a tiny SentencePiece model (no
download). The VAE is the nano codec's (any 16-channel latent decodes; the nodes do not depend on which VAE)."""
from __future__ import annotations

import io
import re

import pytest
import torch

CAPTION_WIDTH = 64
PROMPT = "a painting by Van Gogh"
SENTENCES = ["a painting by Van Gogh", "a painting of a harbour", "a photo of a cat", "oil painting, starry night",
             "You are an assistant designed to generate superior images with the superior degree of image-text "
             "alignment based on textual prompts or user prompts. <Prompt Start>"] * 20


def tiny_gemma_clip():
    """ComfyUI's Lumina-2 text-encoder classes at hidden size 64 with a tiny trained SentencePiece vocabulary."""
    import sentencepiece
    import comfy.sd
    import comfy.supported_models_base
    import comfy.text_encoders.llama
    import comfy.text_encoders.lumina2
    from comfy import sd1_clip

    model = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(sentence_iterator=iter(SENTENCES), model_writer=model, vocab_size=64,
                                             model_type="bpe", pad_id=0, eos_id=1, bos_id=2, unk_id=3,
                                             minloglevel=2)
    vocab = 64

    class TinyGemma(sd1_clip.SDClipModel):
        def __init__(self, device="cpu", layer="hidden", layer_idx=-2, dtype=None, attention_mask=True,
                     model_options=None):
            super().__init__(device=device, layer=layer, layer_idx=layer_idx, dtype=dtype,
                             textmodel_json_config={"hidden_size": CAPTION_WIDTH, "intermediate_size": 128,
                                                    "num_hidden_layers": 3, "num_attention_heads": 2,
                                                    "num_key_value_heads": 1, "vocab_size": vocab},
                             special_tokens={"start": 2, "pad": 0}, layer_norm_hidden_state=False,
                             model_class=comfy.text_encoders.llama.Gemma2_2B, enable_attention_masks=attention_mask,
                             return_attention_masks=attention_mask, model_options=model_options or {})

    class TinyTE(sd1_clip.SD1ClipModel):
        def __init__(self, device="cpu", dtype=None, model_options=None):
            super().__init__(device=device, dtype=dtype, name="gemma2_2b", clip_model=TinyGemma,
                             model_options=model_options or {})

    target = comfy.supported_models_base.ClipTarget(comfy.text_encoders.lumina2.LuminaTokenizer, TinyTE)
    clip = comfy.sd.CLIP(target, tokenizer_data={"spiece_model": model.getvalue()},
                         model_options={"dtype": torch.float32})
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for _, parameter in clip.cond_stage_model.named_parameters():
            scale = 0.1 if parameter.dim() == 1 else 0.05
            parameter.copy_(torch.randn(parameter.shape, generator=generator) * scale)
    return clip


@pytest.fixture(scope="module")
def lumina(comfy, pack, tmp_path_factory):
    """(MODEL, CLIP, layout, config) of a tiny random Lumina-2 file in a diffusion_models folder ComfyUI lists."""
    import folder_paths
    from zerase_core.model.checkpoint import save_dit
    from zerase_core.model.config import DiTConfig
    from zerase_fixtures import randomized_dit

    config = DiTConfig.lumina2(dim=256, n_layers=2, n_refiner_layers=1, n_heads=8, n_kv_heads=2,
                               cap_feat_dim=CAPTION_WIDTH, axes_dims=(8, 12, 12))
    folder = tmp_path_factory.mktemp("diffusion_models")
    save_dit(randomized_dit(config, std=0.1), folder / "lumina-tiny.safetensors")
    saved = folder_paths.folder_names_and_paths["diffusion_models"]
    folder_paths.folder_names_and_paths["diffusion_models"] = ([str(folder)], saved[1])
    try:
        with torch.inference_mode():
            model, _, _, layout = pack["nodes"]["LoadSingleStreamDiT"].execute("lumina-tiny.safetensors").result
    finally:
        folder_paths.folder_names_and_paths["diffusion_models"] = saved
    return model, tiny_gemma_clip(), layout, config


def test_load_builds_comfyuis_lumina2_model(pack, lumina):
    import comfy.supported_models
    model, clip, layout, config = lumina
    assert type(model.model.model_config) is comfy.supported_models.Lumina2
    network = model.model.diffusion_model
    assert network.pad_tokens_multiple is None and getattr(network, "cap_pad_token", None) is None
    assert network.layers[0].attention.n_local_kv_heads == 2
    assert pack["bridge"].base_info(model).config == config
    assert "Lumina-Image-2.0" in layout and "8 heads over 2 kv heads" in layout and "unpadded" in layout
    conditioner = pack["bridge"].ClipConditioner(clip)
    rows = conditioner.keyword_positions(PROMPT, "Van Gogh")
    ids = conditioner._ids(PROMPT)
    assert rows and clip.tokenizer.decode([ids[row] for row in rows]).strip() == "Van Gogh"


def test_lumina_prompts_get_the_system_prompt_as_comfyui_and_diffusers_give_it(pack, lumina):
    """ZEraseTrain's conditioner (and ErasureCompare's prompts) wrap Lumina-2 prompts as CLIPTextEncodeLumina2
    ("superior") does; the empty prompt stays bare; Z-Image prompts are used as written."""
    from zerase_core.real.gemma import LUMINA_TEMPLATE, SYSTEM_PROMPT
    from zerase_fixtures import TINY_CONFIG
    _, clip, _, config = lumina
    bridge = pack["bridge"]
    assert bridge.prompt_template(TINY_CONFIG) is None and bridge.prompt_template(config) == LUMINA_TEMPLATE
    conditioner = bridge.conditioner_for(clip, config)
    plain = bridge.ClipConditioner(clip)
    assert conditioner.text(PROMPT) == f"{SYSTEM_PROMPT} <Prompt Start> {PROMPT}" and conditioner.text("") == ""
    features, lengths = conditioner.encode([PROMPT, ""])
    wrapped = plain.encode([LUMINA_TEMPLATE.format(PROMPT)])[0][0]
    assert int(lengths[0]) == wrapped.shape[0] > len(plain._ids(PROMPT)) + 10
    assert torch.equal(features[0, :int(lengths[0])], wrapped)
    assert torch.equal(features[1, :int(lengths[1])], plain.encode([""])[0][0])
    rows, ids = conditioner.keyword_positions(PROMPT, "Van Gogh"), conditioner._ids(PROMPT)
    assert rows[0] > len(plain._ids(SYSTEM_PROMPT)) and clip.tokenizer.decode([ids[row] for row in rows]).strip() == \
        "Van Gogh"
    with torch.inference_mode():
        assert torch.equal(bridge.encode_prompt(clip, PROMPT, LUMINA_TEMPLATE)[0][0][0],
                           bridge.encode_prompt(clip, LUMINA_TEMPLATE.format(PROMPT))[0][0][0])


def _first_qkv(model, clip) -> tuple[torch.Tensor, torch.Tensor]:
    """(frozen W·x, actual output) of layers.0.attention.qkv in a one-step 32×32 sample through the stock nodes."""
    import comfy_extras.nodes_sd3 as sd3
    import nodes
    import torch.nn.functional as F
    found = {}
    qkv = model.model.diffusion_model.layers[0].attention.qkv

    def hook(module, args, output):
        found.setdefault("rows", (F.linear(args[0], module.weight.to(args[0].dtype)), output.detach().clone()))
    handle = qkv.register_forward_hook(hook)
    try:
        with torch.inference_mode():
            positive = nodes.CLIPTextEncode().encode(clip, PROMPT)[0]
            latent = sd3.EmptySD3LatentImage.execute(32, 32, 1).result[0]
            samples = nodes.KSampler().sample(model, 0, 1, 1.0, "euler", "simple", positive, positive, latent)[0]
            assert torch.isfinite(samples["samples"]).all()
    finally:
        handle.remove()
    return found["rows"]


def test_train_apply_gates_text_rows_and_compare_runs(pack, lumina, nano_weights):
    from zerase_core.model.layout import TokenLayout
    model, clip, _, config = lumina
    with torch.inference_mode():
        erased = pack["nodes"]["ZEraseTrain"].execute(
            model=model, clip=clip, concepts=PROMPT, keywords="Van Gogh", anchors="a painting", method="zerase",
            steps=2, learning_rate=5e-2, rank=4, targets="qk", epsilon=0.0, beta=0.1, eta=2.0, seed=0,
            resolution=32, save_name="lumina-tiny", resume_from="none", preview_every=0).result[0]
        applied = pack["nodes"]["ApplyErasedWeights"].execute(
            model=model, strength=1.0, allow_other_base=False, erasure_file_1="lumina-tiny.safetensors").result[0]
    from zerase_core.formats.erasure_file import read_erasure
    info, tensors, _ = read_erasure(pack["erasures"] / "lumina-tiny.safetensors")
    assert info.base_config["kind"] == "lumina2" and info.base_config["n_kv_heads"] == 2
    assert tensors["zerase.layers.0.attention.qkv.k.up"].shape == (2 * 32, 4)        # GQA: 2 kv heads of 32
    text_length = len(pack["bridge"].ClipConditioner(clip)._ids(PROMPT))
    layout = TokenLayout.from_shapes([text_length], (4, 4), 2, 1)                     # Lumina-2: nothing padded
    image = layout.image_mask("layers")[0]
    assert image.shape[0] == text_length + 4
    for candidate in (applied, erased):
        frozen, output = _first_qkv(candidate, clip)
        assert output.shape[1] == text_length + 4                                     # ComfyUI's own sequence
        assert torch.equal(frozen[:, image], output[:, image]), "an image row of layers.0.attention.qkv changed"
        assert not torch.equal(frozen[:, ~image], output[:, ~image]), "the erasure changed no text row"
    vae = pack["bridge"].load_nano()[2]
    with torch.inference_mode():
        grid, report = pack["nodes"]["ErasureCompare"].execute(
            original=model, erased=applied, clip=clip, vae=vae, erase_prompts=PROMPT, keep_prompts="a photo of a cat",
            seed=0, steps=1, cfg=1.0, size=32, strength_sweep="").result
    assert grid.shape[0] == 1 and torch.isfinite(grid).all() and f"zerase {PROMPT} at strength 1" in report


def test_a_file_for_one_family_is_refused_on_the_other_naming_both_fingerprints(pack, lumina, nano_weights):
    from zerase_core.adapters.gated import AdapterConfig, AdapterSet
    from zerase_core.model.checkpoint import fingerprint
    from zerase_core.formats.erasure_file import save_erasure
    from zerase_core.formats.erasure_info import ErasureInfo, adapter_dict
    from zerase_fixtures import TINY_CONFIG, randomized_dit
    lumina_model = lumina[0]
    with torch.inference_mode():
        nano_model = pack["nodes"]["LoadSingleStreamDiT"].execute("nano (bundled)").result[0]
    config = AdapterConfig(rank=2, alpha=2.0, slices=("q", "k"), families=("layers",))
    zimage = randomized_dit(TINY_CONFIG)
    info = ErasureInfo(method="z-erase", concepts=("cat",), keywords=("cat",), anchors=("a dog",),
                       adapter=adapter_dict(config), recommended_strength=1.0, steps_done=1, steps_total=1, seed=0,
                       summary={}, base_fingerprint=fingerprint(zimage), base_config=zimage.config.to_dict(),
                       training={})
    save_erasure(pack["erasures"] / "zimage-made.safetensors", AdapterSet(zimage, config), info)
    apply = pack["nodes"]["ApplyErasedWeights"]
    lumina_print = fingerprint(lumina_model.model.diffusion_model)
    for allow in (False, True):
        with torch.inference_mode(), pytest.raises(ValueError, match=re.compile(
                f"made for Z-Image.*{fingerprint(zimage)}.*this MODEL is Lumina-Image-2.0.*{lumina_print}")):
            apply.execute(model=lumina_model, strength=1.0, allow_other_base=allow,
                          erasure_file_1="zimage-made.safetensors")
    if not (pack["erasures"] / "lumina-tiny.safetensors").exists():
        pytest.skip("needs the erasure trained by test_train_apply_gates_text_rows_and_compare_runs")
    nano_print = fingerprint(nano_model.model.diffusion_model)
    with torch.inference_mode(), pytest.raises(ValueError, match=re.compile(
            f"made for Lumina-Image-2.0.*{lumina_print}.*this MODEL is Z-Image.*{nano_print}")):
        apply.execute(model=nano_model, strength=1.0, allow_other_base=True, erasure_file_1="lumina-tiny.safetensors")


def test_the_erased_lumina_model_computes_what_the_core_computes(pack, lumina):
    """ApplyErasedWeights on ComfyUI's Lumina2 MODEL and the core's ZImageDiT with the same erasure file attached
    (load_erasure) give the same denoised output for the same CLIP conditioning (fp32, ≤ 1e-5 relative)."""
    import comfy.model_management
    from zerase_core.model.checkpoint import load_dit
    from zerase_core.formats.erasure_file import load_erasure
    model, clip, _, _ = lumina
    file = pack["erasures"] / "lumina-tiny.safetensors"
    if not file.exists():
        pytest.skip("needs the erasure trained by test_train_apply_gates_text_rows_and_compare_runs")
    with torch.inference_mode():
        applied = pack["nodes"]["ApplyErasedWeights"].execute(
            model=model, strength=1.0, allow_other_base=False, erasure_file_1=file.name).result[0]
        context = clip.encode_from_tokens_scheduled(clip.tokenize(PROMPT), show_pbar=False)[0][0].float()
    generator = torch.Generator().manual_seed(3)
    x = torch.randn(2, 16, 6, 4, generator=generator)
    sigma = torch.tensor([0.9, 0.35])
    context = context.expand(2, -1, -1).contiguous()
    comfy.model_management.load_models_gpu([applied])
    options = {"wrappers": applied.wrappers}                  # what sampler_helpers.prepare_sampling passes on
    with torch.inference_mode():
        theirs = applied.model.apply_model(x, sigma, c_crossattn=context, num_tokens=context.shape[1],
                                           transformer_options=options).float()
    ours = load_dit(model.model.diffusion_model.state_dict(), metadata=pack["bridge"].base_info(model).config
                    .to_metadata(), dtype=torch.float32)
    with torch.no_grad():
        plain = x - sigma[:, None, None, None] * ours(x, sigma, context)
    adapters, _ = load_erasure(file, ours)
    adapters.set_strength(pack["bridge"].erasures_of(applied)[0].strength)
    adapters.attach(ours)
    with torch.no_grad():
        expected = x - sigma[:, None, None, None] * ours(x, sigma, context)
    relative = ((theirs - expected).norm() / expected.norm()).item()
    print(f"\n[lumina erased MODEL vs core] relative L2 difference {relative:.2e}")
    assert relative <= 1e-5
    assert ((plain - theirs).norm() / theirs.norm()).item() > 1e-4            # the erasure changed the output
