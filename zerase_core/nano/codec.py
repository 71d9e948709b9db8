"""Latent codec of the nano world, shaped like Z-Image's VAE: image (B, 3, H, W) <-> latent (B, 16, H/8, W/8).

A plain convolutional autoencoder (no KL): the encoder is a conv stem, three stride-2 4×4 convs
(16 -> 32 -> 96 -> 96 channels) each followed by a residual block, and a 1×1 conv to 16 channels; the decoder mirrors
it with nearest-neighbour upsampling. Latents are normalised like Z-Image's `(z - shift) * scale` with one global
shift/scale measured on training renders after training, so a DiT sees roughly unit-variance latents:

    encode(x) = (E(2x - 1) - shift) * scale,    decode(z) = clamp((D(z / scale + shift) + 1) / 2, 0, 1)
"""

from __future__ import annotations

import itertools
import json
import os
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TypeVar

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from ..common.dataclass_dicts import config_from_dict

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
DEFAULT_CODEC_PATH = WEIGHTS_DIR / "codec.safetensors"
DOWNSAMPLE = 8


@dataclass(frozen=True)
class WidthsConfig:
    """Base of the nano networks' configs: read back from a weights file's JSON, where `widths` is a list."""

    @classmethod
    def from_dict(cls: type[Config], values: dict) -> Config:
        return config_from_dict(cls, values, tuple_fields=("widths",))


Config = TypeVar("Config", bound=WidthsConfig)


@dataclass(frozen=True)
class CodecConfig(WidthsConfig):
    latent_channels: int = 16  # Z-Image's VAE latent channels
    widths: tuple[int, int, int, int] = (16, 32, 96, 96)  # stem, then after each stride-2 conv

    def __post_init__(self) -> None:
        if len(self.widths) != 4 or min(self.widths) < 1 or self.latent_channels < 1:
            raise ValueError(f"CodecConfig needs 4 positive widths and latent_channels ≥ 1, got {self}")


class ResidualBlock(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)
        self.activation = nn.SiLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(self.activation(self.conv1(self.activation(x))))


def _encoder(config: CodecConfig) -> nn.Sequential:
    stem, *stages = config.widths
    layers: list[nn.Module] = [nn.Conv2d(3, stem, 3, padding=1)]
    previous = stem
    for width in stages:
        layers += [nn.SiLU(), nn.Conv2d(previous, width, 4, stride=2, padding=1), ResidualBlock(width)]
        previous = width
    layers += [nn.SiLU(), nn.Conv2d(previous, config.latent_channels, 1)]
    return nn.Sequential(*layers)


def _decoder(config: CodecConfig) -> nn.Sequential:
    stem, *stages = config.widths
    widths = [*reversed(stages), stem]  # e.g. 96, 96, 32, 16
    layers: list[nn.Module] = [nn.Conv2d(config.latent_channels, widths[0], 1)]
    for width, following in itertools.pairwise(widths):
        layers += [
            ResidualBlock(width),
            nn.Upsample(scale_factor=2, mode="nearest"),
            nn.Conv2d(width, following, 3, padding=1),
        ]
    layers += [nn.SiLU(), nn.Conv2d(stem, 3, 3, padding=1)]
    return nn.Sequential(*layers)


def check_image_size(height: int, width: int) -> None:
    if height % DOWNSAMPLE or width % DOWNSAMPLE:
        raise ValueError(f"image size {height}×{width} must be a multiple of {DOWNSAMPLE} on both sides (e.g. 64×64)")


def check_images(images: torch.Tensor) -> None:
    """The project's image batches: float (B, 3, H, W) in [0, 1]."""
    if images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"images must be (B, 3, H, W) floats in [0, 1], got shape {tuple(images.shape)}")


class LatentCodec(nn.Module):
    """Image <-> normalised latent codec; images are float (B, 3, H, W) in [0, 1], H and W multiples of 8."""

    shift: torch.Tensor  # buffers (registered in __init__), typed for the arithmetic on them
    scale: torch.Tensor

    def __init__(self, config: CodecConfig | None = None) -> None:
        super().__init__()
        self.config = config or CodecConfig()
        self.encoder = _encoder(self.config)
        self.decoder = _decoder(self.config)
        # Identity until training measures them (see module docstring).
        self.register_buffer("shift", torch.zeros(()))
        self.register_buffer("scale", torch.ones(()))

    def encode_raw(self, images: torch.Tensor) -> torch.Tensor:
        """Unnormalised latent (B, 16, H/8, W/8), used in training."""
        check_images(images)
        check_image_size(images.shape[2], images.shape[3])
        return self.encoder(images * 2 - 1)

    def decode_raw(self, raw_latents: torch.Tensor) -> torch.Tensor:
        """Unclamped decoder output in [-1, 1] image space, used in training."""
        return self.decoder(raw_latents)

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) in [0, 1] -> normalised latents (B, 16, H/8, W/8)."""
        return (self.encode_raw(images) - self.shift) * self.scale

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Normalised latents (B, 16, h, w) -> images (B, 3, 8h, 8w) in [0, 1]."""
        if latents.dim() != 4 or latents.shape[1] != self.config.latent_channels:
            raise ValueError(
                f"latents must be (B, {self.config.latent_channels}, h, w), got shape {tuple(latents.shape)}"
            )
        raw = self.decode_raw(latents / self.scale + self.shift)
        return ((raw + 1) / 2).clamp(0, 1)

    def save(self, path: str | os.PathLike) -> None:
        save_module(self, path, {"kind": "nano-codec", "config": asdict(self.config)})

    @classmethod
    def load(cls, path: str | os.PathLike | None = None) -> LatentCodec:
        """Codec from a safetensors file (default: the shipped weights), in eval mode."""
        tensors, metadata = load_module_file(path or DEFAULT_CODEC_PATH, "nano-codec")
        codec = cls(CodecConfig.from_dict(metadata["config"]))
        codec.load_state_dict(tensors)
        return codec.eval()


def save_module(module: nn.Module, path: str | os.PathLike, metadata: dict) -> None:
    """Write `module`'s state dict as safetensors with JSON `metadata`, atomically (temp file + os.replace)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {name: tensor.detach().contiguous().clone() for name, tensor in module.state_dict().items()}
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(handle)
    try:
        save_file(tensors, temporary, metadata={"zerase": json.dumps(metadata)})
        os.chmod(temporary, 0o644)  # mkstemp creates 0600; weights are shipped package data
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def load_module_file(path: str | os.PathLike, kind: str) -> tuple[dict[str, torch.Tensor], dict]:
    """Tensors and JSON metadata of a file written by `save_module`, checking its `kind`."""
    from safetensors import safe_open

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(
            f"{kind} weights not found at {path}; train them with `python -m zerase_core.nano.train` or pass a path"
        )
    with safe_open(str(path), framework="pt") as handle:
        raw = (handle.metadata() or {}).get("zerase")
    if raw is None:
        raise ValueError(f"{path} has no 'zerase' metadata; it was not written by ZErase's nano save()")
    metadata = json.loads(raw)
    if metadata.get("kind") != kind:
        raise ValueError(f"{path} holds {metadata.get('kind')!r} weights, expected {kind!r}")
    return load_file(str(path)), metadata
