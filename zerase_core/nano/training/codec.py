"""Training of the nano latent codec on fresh renders (1/8 of them `none` renders).

Loss = MSE + 0.5 · L1 on horizontal/vertical image gradients (keeps edges, stripes and dots sharp)
       + 1e-4 · mean latent² (keeps the raw latent scale bounded),
computed in [-1, 1] image space, with Gaussian noise σ = 0.1 added to the raw latent before decoding: a cheap
stand-in for a KL-VAE posterior that makes the decoder tolerant of imperfect DiT samples. After training, the global
latent shift/scale is measured on renders and stored in the exported weights.

    python -m zerase_core.nano.train codec --seconds 480
"""

from __future__ import annotations

import argparse
import math
import time

import numpy
import torch

from ..codec import DEFAULT_CODEC_PATH, LatentCodec
from ..none_renders import render_mixed
from . import TrainingState, add_common_arguments, add_threads_argument, seed_torch, train_chunk

BATCH = 32
IMAGE_SIZE = 64
LATENT_NOISE = 0.1
EDGE_WEIGHT = 0.5
LATENT_WEIGHT = 1e-4
NORMALISATION_IMAGES = 2048
HELD_OUT_IMAGES = 1000
HELD_OUT_SEED = 1_000_003  # renders never drawn by a training stream of a small seed


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_common_arguments(parser, "codec", steps=1200, seconds=480.0, export=DEFAULT_CODEC_PATH)
    parser.add_argument("--lr", type=float, default=1e-3)
    add_threads_argument(parser)


def edge_l1(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean L1 distance between horizontal and vertical finite differences of two image batches."""
    horizontal = (output[..., :, 1:] - output[..., :, :-1]) - (target[..., :, 1:] - target[..., :, :-1])
    vertical = (output[..., 1:, :] - output[..., :-1, :]) - (target[..., 1:, :] - target[..., :-1, :])
    return 0.5 * (horizontal.abs().mean() + vertical.abs().mean())


def codec_loss(codec: LatentCodec, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    raw = codec.encode_raw(images)
    noise = torch.randn(raw.shape, generator=generator) * LATENT_NOISE
    output = codec.decode_raw(raw + noise)
    target = images * 2 - 1
    return (
        torch.nn.functional.mse_loss(output, target)
        + EDGE_WEIGHT * edge_l1(output, target)
        + LATENT_WEIGHT * raw.pow(2).mean()
    )


@torch.no_grad()
def measure_normalisation(codec: LatentCodec, seed: int, count: int = NORMALISATION_IMAGES) -> tuple[float, float]:
    """Global (mean, 1 / std) of raw latents of `count` fresh renders: Z-Image's shift and scale analogue."""
    rng = numpy.random.default_rng(seed)
    latents = [codec.encode_raw(render_mixed(rng, 256, IMAGE_SIZE)[0]) for _ in range(math.ceil(count / 256))]
    stacked = torch.cat(latents)
    return stacked.mean().item(), 1.0 / stacked.std().item()


@torch.no_grad()
def held_out_error(codec: LatentCodec, count: int = HELD_OUT_IMAGES) -> dict[str, float]:
    """Reconstruction MSE (images in [0, 1]) and PSNR on held-out scene renders (no `none` images)."""
    rng = numpy.random.default_rng(HELD_OUT_SEED)
    total, seen = 0.0, 0
    while seen < count:
        images = render_mixed(rng, min(250, count - seen), IMAGE_SIZE, none_fraction=0.0)[0]
        total += (codec.decode(codec.encode(images)) - images).pow(2).mean().item() * len(images)
        seen += len(images)
    mse = total / seen
    return {"mse": mse, "mse_pm1": 4 * mse, "psnr_db": 10 * math.log10(1.0 / mse)}


def run(args: argparse.Namespace) -> LatentCodec:
    seed_torch(args.seed, args.threads)
    codec = LatentCodec()

    def loss_of_batch(current: TrainingState) -> torch.Tensor:
        images, _ = render_mixed(current.numpy_rng, BATCH, IMAGE_SIZE)
        return codec_loss(codec, images, current.torch_rng)

    train_chunk(args, codec, loss_of_batch, warmup=100)
    started = time.monotonic()
    shift, scale = measure_normalisation(codec, seed=args.seed + 1)
    codec.shift.fill_(shift)
    codec.scale.fill_(scale)
    quality = held_out_error(codec)
    print(
        f"latent shift {shift:.4f} scale {scale:.4f}; held-out {HELD_OUT_IMAGES} renders: MSE {quality['mse']:.5f} "
        f"([-1, 1]: {quality['mse_pm1']:.5f}), PSNR {quality['psnr_db']:.2f} dB ({time.monotonic() - started:.0f} s)",
        flush=True,
    )
    codec.save(args.export)
    print(f"wrote {args.export}", flush=True)
    return codec
