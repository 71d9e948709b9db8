"""Lumina-Image-2.0 outside ComfyUI against diffusers' Lumina2Pipeline, on tiny random parts built here (fp32):
prompt conditioning (system prompt, hidden layer, padding and masks), a full generate with fixed noise, and the
same model loaded back from a diffusers folder (model_index.json naming Lumina2Pipeline).

No Gemma tokenizer files exist offline (ComfyUI keeps Gemma's SentencePiece model inside the text-encoder file; that
path is tests/test_gemma_spiece_tokenizer.py's), so the fixture builds a tiny word-level tokenizer with Gemma's
special tokens (<pad> 0, <eos> 1, <bos> 2, BOS prepended, right padding as the pipeline's masks assume)."""
from __future__ import annotations

import json
import re

import pytest
import torch

transformers = pytest.importorskip("transformers", reason="transformers is not installed (pip install -e \".[real]\")")
diffusers = pytest.importorskip("diffusers", reason="diffusers is not installed (pip install -e \".[real]\")")

from test_lumina_diffusers_parity import TINY, random_diffusers, relative  # noqa: E402
from test_real_generate import TINY_VAE  # noqa: E402
from zerase_core.model.checkpoint import load_dit  # noqa: E402
from zerase_core.real.gemma import SYSTEM_PROMPT, GemmaConditioner, load_gemma2  # noqa: E402
from zerase_core.model.lumina_keys import lumina_config_from_diffusers  # noqa: E402
from zerase_core.real.sources import component_kind, find_model, load_transformer  # noqa: E402
from zerase_core.real.vae import load_vae  # noqa: E402
from zerase_core.real.world import RealWorld, conditioner, parts, unshifted_sigmas  # noqa: E402

PROMPTS = ["a photo of a cat", "Van Gogh's starry night over a harbour, oil painting"]


def tiny_tokenizer(extra: tuple[str, ...] = ()):
    """Gemma's special tokens and the words of the system prompt, PROMPTS and `extra` (texts)."""
    tokenizers = pytest.importorskip("tokenizers")
    text = " ".join([SYSTEM_PROMPT, "<Prompt Start>", *PROMPTS, *extra])
    words = sorted(set(re.findall(r"\w+|[^\w\s]+", text)))
    vocab = {"<pad>": 0, "<eos>": 1, "<bos>": 2, "<unk>": 3, **{word: 4 + i for i, word in enumerate(words)}}
    model = tokenizers.Tokenizer(tokenizers.models.WordLevel(vocab, unk_token="<unk>"))
    model.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
    model.post_processor = tokenizers.processors.TemplateProcessing(single="<bos> $A", special_tokens=[("<bos>", 2)])
    return transformers.PreTrainedTokenizerFast(tokenizer_object=model, bos_token="<bos>", eos_token="<eos>",
                                                pad_token="<pad>", unk_token="<unk>", padding_side="right")


def tiny_gemma2(vocab: int, seed: int = 0):
    torch.manual_seed(seed)
    config = transformers.Gemma2Config(vocab_size=vocab, hidden_size=TINY["cap_feat_dim"], intermediate_size=64,
                                       num_hidden_layers=3, num_attention_heads=2, num_key_value_heads=1)
    # head dim, query scale and sliding window stay Gemma-2-2B's (256, 256, 4096): a single file has no config
    model = transformers.Gemma2Model(config)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "norm" in name:
                parameter.normal_(0.0, 0.1)          # Gemma's RMSNorm scales by (1 + weight)
    return model.eval().requires_grad_(False)


@pytest.fixture(scope="module")
def pipeline():
    tokenizer = tiny_tokenizer()
    torch.manual_seed(5)
    vae = diffusers.AutoencoderKL(**TINY_VAE).eval().requires_grad_(False)
    scheduler = diffusers.FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=6.0,
                                                          use_dynamic_shifting=False)
    built = diffusers.Lumina2Pipeline(transformer=random_diffusers(), scheduler=scheduler, vae=vae,
                                      text_encoder=tiny_gemma2(len(tokenizer)), tokenizer=tokenizer)
    built.set_progress_bar_config(disable=True)
    return built


def core_world(pipeline) -> RealWorld:
    transformer = pipeline.transformer
    config = lumina_config_from_diffusers(dict(transformer.config))
    dit = load_dit(transformer.state_dict(), metadata=config.to_metadata())
    return RealWorld(dit, GemmaConditioner(pipeline.tokenizer, pipeline.text_encoder), pipeline.vae)


def test_conditioning_equals_the_pipelines_prompt_encoding(pipeline):
    embeds, mask, negative, negative_mask = pipeline.encode_prompt(PROMPTS, do_classifier_free_guidance=True)
    assert embeds.shape[1] == 256 and mask.dtype in (torch.int64, torch.bool)
    world = core_world(pipeline)
    for prompts, expected, expected_mask in ((PROMPTS, embeds, mask), (["", ""], negative, negative_mask)):
        features, lengths = world.conditioner.encode(prompts)
        assert lengths.tolist() == expected_mask.sum(1).tolist()
        for row, length in enumerate(lengths.tolist()):
            assert relative(features[row, :length], expected[row, :length]) <= 1e-5
    assert lengths.tolist() == [1, 1]                                      # the bare negative prompt: BOS only
    text = world.conditioner.text(PROMPTS[0])
    assert text.startswith(SYSTEM_PROMPT) and text.endswith(" <Prompt Start> a photo of a cat")
    assert world.conditioner.keyword_positions(PROMPTS[1], "Van Gogh") == [len(pipeline.tokenizer(
        f"{SYSTEM_PROMPT} <Prompt Start>")["input_ids"]) + offset for offset in (0, 1)]


@pytest.mark.parametrize("steps, cfg", [(3, 1.0), (2, 4.0)])
def test_generate_equals_the_pipeline(pipeline, steps, cfg):
    world = core_world(pipeline)
    seeds = [3, 4]
    noise = world.noise(seeds, 64, 48)
    ours = world.generate(PROMPTS, seeds, steps, cfg, 64, 48, noise=noise)
    common = dict(prompt=PROMPTS, height=64, width=48, num_inference_steps=steps, guidance_scale=cfg,
                  sigmas=unshifted_sigmas(steps), cfg_normalization=False)
    theirs = pipeline(**common, latents=noise.clone(), output_type="pt").images
    assert ours.shape == theirs.shape == (2, 3, 64, 48)
    assert relative(ours, theirs) <= 1e-5
    latents = world.sample_latents(PROMPTS, seeds, steps, cfg, 64, 48, noise=noise)
    their_latents = pipeline(**common, latents=noise.clone(), output_type="latent").images
    assert relative(latents, their_latents) <= 1e-5
    assert relative(latents, noise) > 0.05


def test_diffusers_folder_and_single_files_load_every_part(pipeline, tmp_path):
    root = tmp_path / "Lumina-Image-2.0-Tiny"
    pipeline.save_pretrained(root)
    assert json.loads((root / "model_index.json").read_text())["_class_name"] == "Lumina2Pipeline"
    source = parts(root)
    assert source.kind == "lumina2"
    assert (source.text_encoder, source.vae, source.tokenizer) == (root / "text_encoder", root / "vae",
                                                                     root / "tokenizer")
    world = RealWorld(load_transformer(source), conditioner(source), load_vae(source.vae))
    expected = core_world(pipeline).generate(["a cat"], [1], 2, 1.0, 32, 32)
    assert relative(world.generate(["a cat"], [1], 2, 1.0, 32, 32), expected) <= 1e-5

    # ComfyUI-style single files: the DiT with ComfyUI names (save_dit) and a text encoder with `model.` keys
    from safetensors.torch import save_file
    from zerase_core.model.checkpoint import save_dit
    dit_file, encoder_file = tmp_path / "lumina_2_model.safetensors", tmp_path / "gemma_2_2b.safetensors"
    save_dit(world.dit, dit_file)
    save_file({f"model.{key}": value.contiguous() for key, value in pipeline.text_encoder.state_dict().items()},
              str(encoder_file))
    assert (component_kind(dit_file), component_kind(encoder_file)) == ("lumina2", "gemma2-text-encoder")
    assert find_model(dit_file).kind == "lumina2"
    single = parts(dit=dit_file, text_encoder=encoder_file, vae=root / "vae", tokenizer=root / "tokenizer")
    assert torch.equal(RealWorld(load_transformer(single), conditioner(single), load_vae(single.vae))
                       .generate(["a cat"], [1], 2, 1.0, 32, 32), world.generate(["a cat"], [1], 2, 1.0, 32, 32))
    # the same dtype as the files: every weight is a view of one memory map, at its own file offset (no copy)
    from zerase_core.real.mapped import read_header
    for loaded, path, prefix, keys in (
            (load_gemma2(encoder_file).state_dict(), encoder_file, "model.", ("layers.2.mlp.down_proj.weight",
                                                                               "norm.weight")),
            (load_transformer(dit_file).state_dict(), dit_file, "", ("layers.1.attention.qkv.weight",
                                                                     "final_layer.linear.weight"))):
        header, _, _ = read_header(path)
        first = next(iter(loaded))
        for key in keys:
            distance = header[prefix + key]["data_offsets"][0] - header[prefix + first]["data_offsets"][0]
            assert loaded[key].data_ptr() - loaded[first].data_ptr() == distance, key
