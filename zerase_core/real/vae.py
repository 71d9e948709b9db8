"""The Flux VAE of Z-Image through diffusers' AutoencoderKL: a diffusers vae/ folder, or ComfyUI's ae.safetensors
(the original key names, converted by diffusers' own single-file converter). Latents decode as ZImagePipeline
decodes them: latents / scaling_factor + shift_factor -> decoder -> [-1, 1] -> [0, 1]."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from ..model.checkpoint_keys import CheckpointError
from .mapped import mapped_safetensors

# Z-Image's (= Flux's) VAE: 16 latent channels, 8x down-sampling, no quant convs
FLUX_VAE = {
    "in_channels": 3,
    "out_channels": 3,
    "latent_channels": 16,
    "block_out_channels": [128, 256, 512, 512],
    "down_block_types": ["DownEncoderBlock2D"] * 4,
    "up_block_types": ["UpDecoderBlock2D"] * 4,
    "layers_per_block": 2,
    "norm_num_groups": 32,
    "act_fn": "silu",
    "sample_size": 1024,
    "scaling_factor": 0.3611,
    "shift_factor": 0.1159,
    "use_quant_conv": False,
    "use_post_quant_conv": False,
}


def _diffusers():
    try:
        import diffusers
    except ImportError:
        raise ImportError(
            'the real VAE runs through diffusers, which is not installed: pip install -e ".[real]"'
        ) from None
    return diffusers


def load_vae(path: str | Path, dtype: torch.dtype = torch.float32, config: dict | None = None):
    """A frozen AutoencoderKL from a diffusers vae/ folder or a single file (diffusers or original key names)."""
    diffusers = _diffusers()
    path = Path(path)
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise CheckpointError(f"VAE folder {path} has no config.json")
        config = {
            key: value
            for key, value in json.loads((path / "config.json").read_text()).items()
            if not key.startswith("_")
        }
        files = sorted(path.glob("*.safetensors"))
    else:
        files = [path]
    if not files:
        raise CheckpointError(f"{path} holds no .safetensors weights (pickled .bin files are never read)")
    tensors: dict[str, torch.Tensor] = {}
    for file in files:
        tensors.update(mapped_safetensors(file)[0])
    model = diffusers.AutoencoderKL(**(config or FLUX_VAE))
    if not any(key.startswith(("encoder.down_blocks.", "decoder.up_blocks.")) for key in tensors):
        from diffusers.loaders.single_file_utils import convert_ldm_vae_checkpoint

        tensors = convert_ldm_vae_checkpoint(tensors, model.config)
    missing, unexpected = model.load_state_dict(tensors, strict=False)
    if missing or unexpected:
        raise CheckpointError(
            f"{path} does not fit the Flux VAE ({len(missing)} missing, e.g. {missing[:3]};"
            f" {len(unexpected)} unexpected, e.g. {unexpected[:3]})"
        )
    return model.to(dtype).eval().requires_grad_(False)


@torch.no_grad()
def decode(vae, latents: torch.Tensor) -> torch.Tensor:
    """Images (B, 3, H, W) in [0, 1] from the DiT's latents."""
    scaled = latents.to(vae.dtype) / vae.config.scaling_factor + vae.config.shift_factor
    image = vae.decode(scaled, return_dict=False)[0]
    return (image.float() / 2 + 0.5).clamp(0, 1)


__all__ = ["FLUX_VAE", "load_vae", "decode"]
