"""Training of the nano DiT and its text encoder (jointly) on codec latents of renders.

Flow matching with Z-Image's conventions: sigma ~ logit-normal(0, 1), x_sigma = (1 − sigma)·x0 + sigma·noise,
target v = noise − x0 (ComfyUI's velocity). 10 % caption dropout to the empty prompt (for CFG), a random caption
template per sample and synonyms at 30 % (each synonym its own token). EMA 0.999 of both networks is exported.

    python -m zerase_core.nano.train dit --seconds 1800            # first chunk
    python -m zerase_core.nano.train dit --seconds 1800 --resume   # later chunks, same schedule
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import numpy
import torch
from safetensors.torch import load_file
from torch import nn

from ...common.files import atomic_save_safetensors
from ...model.config import DiTConfig
from ...model.dit import ZImageDiT
from .. import paths
from ..codec import LatentCodec
from ..phrasings import phrased_caption
from ..render import random_scene, render_batch
from ..text_encoder import NanoTextEncoder, TextEncoderConfig
from ..vocab import ATTRIBUTES, TEMPLATES, caption
from . import LoopSettings, TrainingState, add_common_arguments, run_loop, seed_torch, start_training

NANO_CONFIG = DiTConfig(
    dim=256,
    n_layers=4,
    n_refiner_layers=1,
    n_heads=8,
    cap_feat_dim=128,
    axes_dims=(8, 12, 12),
    axes_lens=(64, 32, 32),
    pad_tokens_multiple=8,
)
BATCH = 32
CAPTION_DROPOUT = 0.1
EMA_DECAY = 0.999


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_common_arguments(
        parser, "dit", steps=16000, seconds=1800.0, export=paths.DIT
    )  # the text encoder is exported beside it
    parser.add_argument("--lr", type=float, default=5e-4)
    parser.add_argument("--dataset-size", type=int, default=100_000, help="renders pre-encoded once per run")
    parser.add_argument("--export-only", action="store_true", help="write the EMA weights of the checkpoint and stop")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--hard-shapes", default="", help="comma-separated shapes drawn more often (e.g. star,cross)")
    parser.add_argument("--hard-weight", type=float, default=1.0, help="sampling weight of the hard shapes")
    parser.add_argument(
        "--phrasing-rate",
        type=float,
        default=0.0,
        help="share of captions written in a random train phrasing instead of a template (held-out ones never)",
    )
    parser.add_argument(
        "--init-from",
        type=Path,
        metavar="FOLDER",
        help="start a new run from exported weights (FOLDER/dit.safetensors, FOLDER/text_encoder.safetensors), "
        "e.g. the shipped ones, to fine-tune them",
    )


class NanoPair(nn.Module):
    """The trained networks and their EMA copies, so one checkpoint holds everything."""

    def __init__(self):
        super().__init__()
        self.dit = ZImageDiT(NANO_CONFIG)
        self.text = NanoTextEncoder(TextEncoderConfig(width=NANO_CONFIG.cap_feat_dim))
        self.ema_dit = ZImageDiT(NANO_CONFIG).requires_grad_(False)
        self.ema_text = NanoTextEncoder(TextEncoderConfig(width=NANO_CONFIG.cap_feat_dim)).requires_grad_(False)
        self.ema_dit.load_state_dict(self.dit.state_dict())
        self.ema_text.load_state_dict(self.text.state_dict())

    def trainable(self):
        return list(self.dit.parameters()) + list(self.text.parameters())

    @torch.no_grad()
    def update_ema(self, step: int) -> None:
        decay = min(EMA_DECAY, (1 + step) / (10 + step))
        for live, ema in ((self.dit, self.ema_dit), (self.text, self.ema_text)):
            for source, target in zip(live.parameters(), ema.parameters(), strict=True):
                target.lerp_(source, 1 - decay)


def build_dataset(folder: Path, size: int, seed: int) -> dict[str, torch.Tensor]:
    """Codec latents (N, 16, 8, 8) fp16 and attribute indices (N, 4) of `size` renders, cached in `folder`."""
    cache = folder / f"dataset_{size}_{seed}.safetensors"
    if cache.exists():
        return load_file(str(cache))
    folder.mkdir(parents=True, exist_ok=True)  # a new run's folder (e.g. --init-from with a new --out)
    codec = LatentCodec.load()
    rng = numpy.random.default_rng(seed + 7919)
    latents, attributes = [], []
    started = time.monotonic()
    with torch.no_grad():
        for _ in range(math.ceil(size / 500)):
            scenes = [random_scene(rng) for _ in range(500)]
            latents.append(codec.encode(render_batch(scenes)).half())
            attributes.append(
                torch.tensor(
                    [
                        [list(values).index(getattr(scene, name)) for name, values in ATTRIBUTES.items()]
                        for scene in scenes
                    ]
                )
            )
    data = {"latents": torch.cat(latents)[:size], "attributes": torch.cat(attributes)[:size]}
    atomic_save_safetensors(data, cache)
    print(f"encoded {size} renders in {time.monotonic() - started:.0f} s", flush=True)
    return data


class SceneRecord:
    shape: str  # set by __init__ from ATTRIBUTES (a vocab.SceneLike)
    colour: str
    pattern: str
    background: str

    def __init__(self, indices):
        for (name, values), index in zip(ATTRIBUTES.items(), indices, strict=True):
            setattr(self, name, list(values)[int(index)])


def sampling_weights(data: dict[str, torch.Tensor], hard_shapes: str, weight: float):
    """Per-example probabilities: shapes in `hard_shapes` drawn `weight`× as often (None = uniform)."""
    names = [name for name in hard_shapes.split(",") if name]
    if not names or weight == 1.0:
        return None
    shapes = list(ATTRIBUTES["shape"])
    hard = torch.zeros(len(data["attributes"]), dtype=torch.bool)
    for name in names:
        if name not in shapes:
            raise ValueError(f"--hard-shapes: {name!r} is not one of {shapes}")
        hard |= data["attributes"][:, 0] == shapes.index(name)
    probabilities = torch.where(hard, weight, 1.0).double()
    return (probabilities / probabilities.sum()).numpy()


def training_caption(record: SceneRecord, rng: numpy.random.Generator, phrasing_rate: float) -> str:
    """A caption for one training example: "" (dropout), a random train phrasing or a random template."""
    if rng.random() < CAPTION_DROPOUT:
        return ""
    if phrasing_rate > 0 and rng.random() < phrasing_rate:
        return phrased_caption(record, rng)
    return caption(record, int(rng.integers(len(TEMPLATES))), rng)


def batch_loss(
    pair: NanoPair, data: dict[str, torch.Tensor], state: TrainingState, weights=None, phrasing_rate: float = 0.0
) -> torch.Tensor:
    pair.update_ema(state.step)
    rng, generator = state.numpy_rng, state.torch_rng
    if weights is None:
        index = rng.integers(0, len(data["latents"]), BATCH)
    else:
        index = rng.choice(len(data["latents"]), BATCH, p=weights)
    clean = data["latents"][torch.from_numpy(index)].float()
    rows = data["attributes"][torch.from_numpy(index)]
    prompts = [training_caption(SceneRecord(row.tolist()), rng, phrasing_rate) for row in rows]
    features, lengths = pair.text.encode(prompts)
    sigma = torch.sigmoid(torch.randn(BATCH, generator=generator))
    noise = torch.randn(clean.shape, generator=generator)
    noisy = (1 - sigma[:, None, None, None]) * clean + sigma[:, None, None, None] * noise
    velocity = pair.dit(noisy, sigma, features, lengths)
    return torch.nn.functional.mse_loss(velocity, noise - clean)


def export(pair: NanoPair, dit_path: Path, text_path: Path) -> None:
    from ...model.checkpoint import save_dit

    save_dit(pair.ema_dit, dit_path, dtype=torch.bfloat16)
    pair.ema_text.save(text_path)
    print(f"exported {dit_path} and {text_path}", flush=True)


def initialise_from(pair: NanoPair, folder: Path) -> None:
    """Load exported weights into the live networks and their EMA copies (a fine-tune's start)."""
    from ...model.checkpoint import load_dit

    dit_path, text_path = folder / paths.DIT.name, folder / paths.TEXT_ENCODER.name
    for path in (dit_path, text_path):
        if not path.is_file():
            raise FileNotFoundError(f"--init-from {folder}: {path.name} is missing; expected exported nano weights")
    dit = load_dit(dit_path, dtype=torch.float32).state_dict()
    text = NanoTextEncoder.load(text_path).state_dict()
    for live, ema, weights in ((pair.dit, pair.ema_dit, dit), (pair.text, pair.ema_text, text)):
        live.load_state_dict(weights)
        ema.load_state_dict(weights)
    print(f"initialised from {folder}", flush=True)


def run(args: argparse.Namespace) -> None:
    seed_torch(args.seed, args.threads)
    pair = NanoPair()
    if args.init_from is not None and not (args.resume or args.export_only):
        initialise_from(pair, args.init_from)
    optimizer, state = start_training(
        args.out,
        pair,
        args.seed,
        args.resume or args.export_only,
        pair.trainable(),
        lr=args.lr,
        betas=(0.9, 0.99),
        weight_decay=0.0,
    )
    if not args.export_only:
        data = build_dataset(args.out, args.dataset_size, args.seed)
        settings = LoopSettings(total_steps=args.steps, seconds=args.seconds, base_lr=args.lr, warmup=200)
        weights = sampling_weights(data, args.hard_shapes, args.hard_weight)
        state = run_loop(
            settings,
            args.out,
            pair,
            optimizer,
            state,
            lambda current: batch_loss(pair, data, current, weights, args.phrasing_rate),
        )
    if state.step >= args.steps or args.export_only:
        export(pair, args.export, args.export.with_name(paths.TEXT_ENCODER.name))
