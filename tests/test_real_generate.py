"""A full text-to-image run of the core on a tiny random Z-Image (DiT + Qwen3 + Flux-layout VAE) equals diffusers'
ZImagePipeline with the same weights, noise and schedule; and the same model loads back from a diffusers folder."""
from __future__ import annotations

import json

import pytest
import torch

diffusers = pytest.importorskip("diffusers", reason="diffusers is not installed (pip install -e \".[real]\")")

from test_diffusers_parity import random_diffusers, relative  # noqa: E402
from test_real_text_encoder import TOKENIZER, tiny_qwen3  # noqa: E402

from zerase_core.model.checkpoint import load_dit  # noqa: E402
from zerase_core.real.diffusers_format import config_from_diffusers  # noqa: E402
from zerase_core.real.sources import load_transformer  # noqa: E402
from zerase_core.real.text_encoder import QwenConditioner, load_tokenizer  # noqa: E402
from zerase_core.real.vae import (
    FLUX_VAE,  # noqa: E402
    load_vae,  # noqa: E402
)
from zerase_core.real.world import RealWorld, conditioner, parts, unshifted_sigmas  # noqa: E402

QWEN3_TEMPLATE = __import__("test_real_text_encoder").QWEN3_TEMPLATE
TINY_VAE = {**FLUX_VAE, "latent_channels": 4, "block_out_channels": [8, 8, 8, 8], "norm_num_groups": 4}


@pytest.fixture(scope="module")
def tiny_model():
    if not TOKENIZER.is_dir():
        pytest.skip(f"no Qwen tokenizer files at {TOKENIZER} (set COMFYUI_PATH to a ComfyUI checkout)")
    tokenizer = load_tokenizer(TOKENIZER)
    tokenizer.chat_template = QWEN3_TEMPLATE
    transformer = random_diffusers(cap_feat_dim=32)
    torch.manual_seed(5)
    vae = diffusers.AutoencoderKL(**TINY_VAE).eval().requires_grad_(False)
    scheduler = diffusers.FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=3.0,
                                                          use_dynamic_shifting=False)
    pipeline = diffusers.ZImagePipeline(scheduler=scheduler, vae=vae, text_encoder=tiny_qwen3(2), tokenizer=tokenizer,
                                        transformer=transformer)
    pipeline.set_progress_bar_config(disable=True)
    return pipeline


def core_world(pipeline) -> RealWorld:
    transformer = pipeline.transformer
    dit = load_dit(transformer.state_dict(), metadata=config_from_diffusers(dict(transformer.config)).to_metadata())
    return RealWorld(dit, QwenConditioner(pipeline.tokenizer, pipeline.text_encoder), pipeline.vae)


@pytest.mark.parametrize("steps, cfg", [(3, 1.0), (2, 4.0)])      # Turbo-style (no guidance) and guided
def test_generate_equals_the_pipeline(tiny_model, steps, cfg):
    world = core_world(tiny_model)
    prompts, seeds = ["a photo of a cat", "a red star on a black background"], [3, 4]
    noise = world.noise(seeds, 64, 48)
    ours = world.generate(prompts, seeds, steps, cfg, 64, 48, noise=noise)
    theirs = tiny_model(prompt=prompts, height=64, width=48, num_inference_steps=steps, guidance_scale=cfg - 1.0,
                        sigmas=unshifted_sigmas(steps), latents=noise.clone(), output_type="pt").images
    assert ours.shape == theirs.shape == (2, 3, 64, 48)
    assert relative(ours, theirs) <= 1e-5
    latents = world.sample_latents(prompts, seeds, steps, cfg, 64, 48, noise=noise)
    their_latents = tiny_model(prompt=prompts, height=64, width=48, num_inference_steps=steps,
                               guidance_scale=cfg - 1.0, sigmas=unshifted_sigmas(steps), latents=noise.clone(),
                               output_type="latent").images
    assert relative(latents, their_latents) <= 1e-5
    assert relative(latents, noise) > 0.05               # the model did something


def test_diffusers_folder_loads_every_part(tiny_model, tmp_path):
    root = tmp_path / "Z-Image-Tiny"
    tiny_model.save_pretrained(root)
    assert json.loads((root / "model_index.json").read_text())["_class_name"] == "ZImagePipeline"
    source = parts(root)
    assert (source.text_encoder, source.vae, source.tokenizer) == (root / "text_encoder", root / "vae",
                                                                     root / "tokenizer")
    world = RealWorld(load_transformer(source), conditioner(source), load_vae(source.vae))
    expected = core_world(tiny_model).generate(["a cat"], [1], 2, 1.0, 32, 32)
    assert relative(world.generate(["a cat"], [1], 2, 1.0, 32, 32), expected) <= 1e-5
