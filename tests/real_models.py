"""Tiny random real Z-Images and Lumina-Image-2.0s on disk, in both forms the CLI takes (built here, never downloaded):

- `single_files(folder)`: ComfyUI single files, a DiT (ComfyUI key prefix, config in the metadata), a Qwen3 text
  encoder (`model.` keys as qwen_3_4b.safetensors) and a Flux-layout VAE (ae.safetensors; the real Flux VAE shape,
  random); the tokenizer is ComfyUI's Qwen one.
- `diffusers_folder(folder)`: a ZImagePipeline saved with save_pretrained (tiny VAE with 4 latent channels).
- `lumina_single_files(folder)` / `lumina_diffusers_folder(folder)`: the same two forms of a tiny Lumina-2 (Gemma-2
  text encoder, a word-level tokenizer with Gemma's special tokens, as tests/test_lumina_real.py);
  `lumina_comfy_files(folder)`: the single files with the Gemma tokenizer inside the text-encoder file (ComfyUI's).
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
    from test_real_text_encoder import tiny_qwen3
    folder.mkdir(parents=True, exist_ok=True)
    paths = {"dit": folder / f"z_image_tiny_{seed}.safetensors", "text_encoder": folder / "qwen_3_tiny.safetensors",
             "vae": folder / "ae_tiny.safetensors", "tokenizer": tokenizer_folder()}
    save_dit(randomized_dit(SINGLE_CONFIG, seed=seed, std=0.08), paths["dit"])
    if not paths["text_encoder"].exists():
        encoder = tiny_qwen3(0)
        save_file({f"model.{key}": value.contiguous() for key, value in encoder.state_dict().items()},
                  str(paths["text_encoder"]))
    single_files_vae(folder)
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
    """--dit/--text-encoder/--vae, and --tokenizer when `paths` has one."""
    options = ["--dit", str(paths["dit"]), "--text-encoder", str(paths["text_encoder"]), "--vae", str(paths["vae"])]
    return options + (["--tokenizer", str(paths["tokenizer"])] if "tokenizer" in paths else [])


# the smallest run that still trains: 2 steps, one trajectory of one sampler step, rank 2, 32² images
QUICK_ERASE = ["--steps", "2", "--pool-prompts", "1", "--sample-steps", "1", "--rank", "2", "--resolution", "32",
               "--shuffle-bank", "2"]


# Lumina-Image-2.0: words of every prompt the Lumina CLI tests use, so the tiny word-level Gemma tokenizer knows them
LUMINA_WORDS = ("a picture of a photo of a painting of cat dog star red circle puppy", )


def _lumina_tokenizer():
    from test_lumina_real import tiny_tokenizer
    from zerase_core.real.evaluate import KEEP_PROMPTS
    return tiny_tokenizer((*LUMINA_WORDS, *KEEP_PROMPTS))


def _lumina_dit(in_channels: int, seed: int):
    from test_lumina_diffusers_parity import TINY, _randomize
    import diffusers
    return _randomize(diffusers.Lumina2Transformer2DModel(**{**TINY, "in_channels": in_channels}), seed)


def lumina_single_files(folder: Path, seed: int = 0) -> dict[str, Path]:
    """ComfyUI single files of a tiny random Lumina-2: DiT (ComfyUI names, 16 latent channels), Gemma-2 text encoder
    (`model.` keys as gemma_2_2b_fp16.safetensors), the Flux-layout VAE, and a tokenizer/ folder."""
    from test_lumina_real import tiny_gemma2
    from zerase_core.model.checkpoint import load_dit
    from zerase_core.model.lumina_keys import lumina_config_from_diffusers
    folder.mkdir(parents=True, exist_ok=True)
    paths = {"dit": folder / f"lumina_2_tiny_{seed}.safetensors", "text_encoder": folder / "gemma_2_tiny.safetensors",
             "vae": single_files_vae(folder), "tokenizer": folder / "gemma_tokenizer"}
    transformer = _lumina_dit(16, seed)
    config = lumina_config_from_diffusers(dict(transformer.config))
    save_dit(load_dit(transformer.state_dict(), metadata=config.to_metadata()), paths["dit"])
    if not paths["text_encoder"].exists():
        tokenizer = _lumina_tokenizer()
        tokenizer.save_pretrained(paths["tokenizer"])
        encoder = tiny_gemma2(len(tokenizer))
        save_file({f"model.{key}": value.contiguous() for key, value in encoder.state_dict().items()},
                  str(paths["text_encoder"]))
    return paths


def lumina_comfy_files(folder: Path, seed: int = 0) -> dict[str, Path]:
    """{"dit", "text_encoder", "vae"}: ComfyUI's Lumina-2 single files with no tokenizer folder; the Gemma file
    carries a tiny trained SentencePiece model as `spiece_model`, as gemma_2_2b_fp16.safetensors does
    (tests/gemma_spiece.py)."""
    from gemma_spiece import piece_count, save_gemma_file, train_spiece
    from test_lumina_real import tiny_gemma2
    from zerase_core.real.evaluate import KEEP_PROMPTS
    paths = lumina_single_files(folder, seed)
    proto = train_spiece((*LUMINA_WORDS, *KEEP_PROMPTS))
    paths["text_encoder"] = save_gemma_file(folder / "gemma_2_tiny_spiece.safetensors",
                                            tiny_gemma2(piece_count(proto), seed=1), proto)
    del paths["tokenizer"]
    return paths


def single_files_vae(folder: Path) -> Path:
    """A random Flux-layout VAE file (ae.safetensors' shapes, bf16), made once per folder."""
    import diffusers
    from zerase_core.real.vae import FLUX_VAE
    path = folder / "ae_tiny.safetensors"
    if not path.exists():
        torch.manual_seed(3)
        vae = diffusers.AutoencoderKL(**FLUX_VAE)
        save_file({key: value.to(torch.bfloat16).contiguous() for key, value in vae.state_dict().items()}, str(path))
    return path


def lumina_diffusers_folder(folder: Path) -> Path:
    """A saved Lumina2Pipeline with tiny random parts (4 latent channels, tiny VAE)."""
    import diffusers
    from test_lumina_real import tiny_gemma2
    from test_real_generate import TINY_VAE
    tokenizer = _lumina_tokenizer()
    torch.manual_seed(5)
    vae = diffusers.AutoencoderKL(**TINY_VAE).eval()
    scheduler = diffusers.FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=6.0,
                                                          use_dynamic_shifting=False)
    pipeline = diffusers.Lumina2Pipeline(transformer=_lumina_dit(4, 0), scheduler=scheduler, vae=vae,
                                         text_encoder=tiny_gemma2(len(tokenizer), seed=2), tokenizer=tokenizer)
    pipeline.save_pretrained(folder)
    return folder
