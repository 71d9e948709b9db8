"""Training of the second judge (`second_judge.py`); needs the trained codec weights.

Independent of the evaluator's training: its own seed, 1/5 `none` renders, codec round trips with latent noise up to
0.3 on 60 % of each batch, pixel noise up to 0.05 and a random brightness factor in [0.9, 1.1] (the evaluator: 1/8,
half, 0.2, 0.03, none). Renders and codec reconstructions only, never DiT samples.

    python -m zerase_core.nano.train judge2 --threads 1            (1,500 steps in chunks of --seconds 1200;
    python -m zerase_core.nano.train judge2 --threads 1 --resume    the shipped weights: 935 + 565 steps, one core)

Shipped weights (2026-12-06): renders 100 % on every head; codec reconstructions shape 99.9 %, colour, pattern and
background 100 % (the held-out report printed at the end of training).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from ..codec import DEFAULT_CODEC_PATH, LatentCodec
from ..none_renders import render_mixed
from ..second_judge import DEFAULT_JUDGE2_PATH, SecondJudge
from . import TrainingState, add_common_arguments, add_threads_argument, seed_torch, train_chunk
from .evaluator import attribute_loss, held_out_accuracy, label_tensor, print_accuracy, reconstruct

BATCH = 48
NONE_FRACTION = 1 / 5
RECONSTRUCTED = 0.6
MAX_LATENT_NOISE = 0.3
MAX_PIXEL_NOISE = 0.05
BRIGHTNESS = 0.1


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_common_arguments(parser, "judge2", steps=1500, seconds=1200.0, export=DEFAULT_JUDGE2_PATH)
    parser.set_defaults(seed=7)
    parser.add_argument("--lr", type=float, default=2e-3)
    add_threads_argument(parser)
    parser.add_argument("--codec", type=Path, default=DEFAULT_CODEC_PATH, help="trained codec weights")


def training_batch(codec: LatentCodec, state: TrainingState):
    images, labels = render_mixed(state.numpy_rng, BATCH, 64, none_fraction=NONE_FRACTION)
    start = BATCH - int(BATCH * RECONSTRUCTED)
    images[start:] = reconstruct(codec, images[start:], state.torch_rng, MAX_LATENT_NOISE)
    gain = 1 + BRIGHTNESS * (2 * torch.rand(BATCH, 1, 1, 1, generator=state.torch_rng) - 1)
    sigma = torch.rand(BATCH, 1, 1, 1, generator=state.torch_rng) * MAX_PIXEL_NOISE
    images = (images * gain + sigma * torch.randn(images.shape, generator=state.torch_rng)).clamp(0, 1)
    return images, label_tensor(labels)


def run(args: argparse.Namespace) -> SecondJudge:
    seed_torch(args.seed, args.threads)
    codec = LatentCodec.load(args.codec)
    judge = SecondJudge()

    def loss_of_batch(current: TrainingState) -> torch.Tensor:
        return attribute_loss(judge, *training_batch(codec, current))

    state = train_chunk(args, judge, loss_of_batch, warmup=100, weight_decay=1e-4)
    print_accuracy(held_out_accuracy(judge, codec))
    if state.step >= args.steps:
        judge.save(args.export)
        print(f"wrote {args.export}", flush=True)
    else:
        print(f"step {state.step}/{args.steps}: continue with --resume", flush=True)
    return judge
