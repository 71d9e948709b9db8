"""Tiny random real Z-Images on disk, in both forms the CLI takes (built here, never downloaded):

- `single_files(folder)`: ComfyUI single files, a DiT (ComfyUI key prefix, config in the metadata), a Qwen3 text
  encoder (`model.` keys as qwen_3_4b.safetensors) and a Flux-layout VAE (ae.safetensors; the real Flux VAE shape,
  random); the tokenizer is ComfyUI's Qwen one.
- `diffusers_folder(folder)`: a ZImagePipeline saved with save_pretrained (tiny VAE with 4 latent channels).
"""
from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import save_file

from zerase_core.model.checkpoint import save_dit
from zerase_core.model.config import DiTConfig
from zerase_fixtures import randomized_dit

# head dim 32 (axes 8/12/12), 16 latent channels as the Flux VAE; caption width 32 = the tiny Qwen3's hidden size
SINGLE_CONFIG = DiTConfig(dim=256, n_layers=2, n_refiner_layers=1, n_heads=8, axes_dims=(8, 12, 12),
                          cap_feat_dim=32, pad_tokens_multiple=8)


def tokenizer_folder() -> Path:
    from test_real_text_encoder import TOKENIZER
    return TOKENIZER


def single_files(folder: Path, seed: int = 0) -> dict[str, Path]:
    """{"dit", "text_encoder", "vae", "tokenizer"} paths; `seed` changes the DiT only (another base)."""
    import diffusers
    from test_real_text_encoder import tiny_qwen3
    from zerase_core.real.vae import FLUX_VAE
    folder.mkdir(parents=True, exist_ok=True)
    paths = {"dit": folder / f"z_image_tiny_{seed}.safetensors", "text_encoder": folder / "qwen_3_tiny.safetensors",
             "vae": folder / "ae_tiny.safetensors", "tokenizer": tokenizer_folder()}
    save_dit(randomized_dit(SINGLE_CONFIG, seed=seed, std=0.08), paths["dit"])
    if not paths["text_encoder"].exists():
        encoder = tiny_qwen3(0)
        save_file({f"model.{key}": value.contiguous() for key, value in encoder.state_dict().items()},
                  str(paths["text_encoder"]))
    if not paths["vae"].exists():
        torch.manual_seed(3)
        vae = diffusers.AutoencoderKL(**FLUX_VAE)
        save_file({key: value.to(torch.bfloat16).contiguous() for key, value in vae.state_dict().items()},
                  str(paths["vae"]))
    return paths


def diffusers_folder(folder: Path) -> Path:
    """A saved ZImagePipeline with tiny random parts; its tokenizer folder carries Qwen3's chat template."""
    import diffusers
    from test_diffusers_parity import random_diffusers
    from test_real_generate import TINY_VAE
    from test_real_text_encoder import QWEN3_TEMPLATE, tiny_qwen3
    from zerase_core.real.text_encoder import load_tokenizer
    tokenizer = load_tokenizer(tokenizer_folder())
    tokenizer.chat_template = QWEN3_TEMPLATE
    torch.manual_seed(5)
    vae = diffusers.AutoencoderKL(**TINY_VAE).eval()
    scheduler = diffusers.FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=3.0,
                                                          use_dynamic_shifting=False)
    pipeline = diffusers.ZImagePipeline(scheduler=scheduler, vae=vae, text_encoder=tiny_qwen3(2),
                                        tokenizer=tokenizer, transformer=random_diffusers(cap_feat_dim=32))
    pipeline.save_pretrained(folder)
    return folder


def model_options(paths: dict[str, Path]) -> list[str]:
    return ["--dit", str(paths["dit"]), "--text-encoder", str(paths["text_encoder"]), "--vae", str(paths["vae"]),
            "--tokenizer", str(paths["tokenizer"])]


# the smallest run that still trains: 2 steps, one trajectory of one sampler step, rank 2, 32² images
QUICK_ERASE = ["--steps", "2", "--pool-prompts", "1", "--sample-steps", "1", "--rank", "2", "--resolution", "32",
               "--shuffle-bank", "2"]
