"""Training of the nano evaluator (judge); needs the trained codec weights first.

Each batch is fresh renders (1/8 `none` renders); half of it is replaced by its codec reconstruction
(encode -> latent noise -> decode), so the judge scores decoded DiT samples as well as clean renders, and light pixel
noise is added. Loss: the sum of the four heads' cross-entropies.

    python -m zerase_core.nano.train evaluator --seconds 240
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy
import torch

from ..codec import DEFAULT_CODEC_PATH, LatentCodec
from ..evaluator import CLASSES, DEFAULT_EVALUATOR_PATH, AttributeClassifier, Evaluator, class_index
from ..none_renders import render_mixed
from ..render import SHAPES, random_scene, render_batch
from . import TrainingState, add_common_arguments, add_threads_argument, seed_torch, train_chunk

BATCH = 64
IMAGE_SIZE = 64
MAX_LATENT_NOISE = 0.2  # per-image σ ~ U(0, this) on the normalised latent before decoding
MAX_PIXEL_NOISE = 0.03  # per-image σ ~ U(0, this) on [0, 1] pixels
HELD_OUT_SEED = 2_000_003


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_common_arguments(parser, "evaluator", steps=800, seconds=300.0, export=DEFAULT_EVALUATOR_PATH)
    parser.add_argument("--lr", type=float, default=1e-3)
    add_threads_argument(parser)
    parser.add_argument("--codec", type=Path, default=DEFAULT_CODEC_PATH, help="trained codec weights")


def label_tensor(labels: list[dict[str, str]]) -> dict[str, torch.Tensor]:
    return {
        attribute: torch.tensor([class_index(attribute, label[attribute]) for label in labels]) for attribute in CLASSES
    }


def attribute_loss(judge: AttributeClassifier, images: torch.Tensor, targets: dict[str, torch.Tensor]) -> torch.Tensor:
    """The sum of the heads' cross-entropies."""
    logits = judge.logits(images)
    losses = [torch.nn.functional.cross_entropy(logits[name], targets[name]) for name in CLASSES]
    return sum(losses[1:], losses[0])


@torch.no_grad()
def reconstruct(codec: LatentCodec, images: torch.Tensor, generator: torch.Generator, max_noise: float) -> torch.Tensor:
    """Codec round trip with per-image latent noise σ ~ U(0, max_noise)."""
    latents = codec.encode(images)
    sigma = torch.rand(len(images), 1, 1, 1, generator=generator) * max_noise
    return codec.decode(latents + sigma * torch.randn(latents.shape, generator=generator))


def training_batch(codec: LatentCodec, state: TrainingState) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    images, labels = render_mixed(state.numpy_rng, BATCH, IMAGE_SIZE)
    half = BATCH // 2
    images[half:] = reconstruct(codec, images[half:], state.torch_rng, MAX_LATENT_NOISE)
    sigma = torch.rand(BATCH, 1, 1, 1, generator=state.torch_rng) * MAX_PIXEL_NOISE
    images = (images + sigma * torch.randn(images.shape, generator=state.torch_rng)).clamp(0, 1)
    return images, label_tensor(labels)


@torch.no_grad()
def held_out_accuracy(
    evaluator: AttributeClassifier, codec: LatentCodec, count: int = 1000
) -> dict[str, dict[str, float]]:
    """Accuracy per attribute on `count` held-out scene renders and on their (noise-free) codec reconstructions,
    plus per-shape accuracy on the reconstructions; `none` predictions count as wrong."""
    rng = numpy.random.default_rng(HELD_OUT_SEED)
    scenes = [random_scene(rng) for _ in range(count)]
    correct = {source: dict.fromkeys(CLASSES, 0) for source in ("renders", "reconstructions")}
    per_shape = {shape: [0, 0] for shape in SHAPES}
    for start in range(0, count, 250):
        chunk = scenes[start : start + 250]
        images = render_batch(chunk, IMAGE_SIZE)
        inputs = {"renders": images, "reconstructions": codec.decode(codec.encode(images))}
        for source, batch in inputs.items():
            predictions = evaluator.predict(batch)
            for attribute in CLASSES:
                hits = [
                    predicted == getattr(scene, attribute)
                    for predicted, scene in zip(predictions[attribute], chunk, strict=True)
                ]
                correct[source][attribute] += sum(hits)
                if source == "reconstructions" and attribute == "shape":
                    for hit, scene in zip(hits, chunk, strict=True):
                        per_shape[scene.shape][0] += hit
                        per_shape[scene.shape][1] += 1
    report = {
        source: {attribute: hits / count for attribute, hits in values.items()} for source, values in correct.items()
    }
    report["reconstruction_shapes"] = {shape: hits / max(1, seen) for shape, (hits, seen) in per_shape.items()}
    return report


def print_accuracy(report: dict[str, dict[str, float]]) -> None:
    for source, values in report.items():
        print(f"{source}: " + "  ".join(f"{name} {100 * value:.1f}%" for name, value in values.items()), flush=True)


def run(args: argparse.Namespace) -> Evaluator:
    seed_torch(args.seed, args.threads)
    codec = LatentCodec.load(args.codec)  # after seeding: building it draws from the global stream
    evaluator = Evaluator()

    def loss_of_batch(current: TrainingState) -> torch.Tensor:
        return attribute_loss(evaluator, *training_batch(codec, current))

    train_chunk(args, evaluator, loss_of_batch, warmup=50)
    print_accuracy(held_out_accuracy(evaluator, codec))
    evaluator.save(args.export)
    print(f"wrote {args.export}", flush=True)
    return evaluator
