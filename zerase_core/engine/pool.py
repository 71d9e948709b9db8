"""The x_t pool of a run: trajectories of the frozen model from fixed seeds, and (cached) its teacher velocities.

Built once, before the first step, with the adapters disabled; every step then draws (trajectory, k) pairs from it.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from ..common.progress import PhaseCounter, Progress
from ..common.prompts import PromptSet
from .erase_config import EraseConfig
from .segments import SegmentCache
from .trajectory import CPU, TrajectoryPool, pool_ticks, sample_pool, teacher_velocities


def teacher_prompts(pool: TrajectoryPool, picks) -> dict[str, list[str]]:
    """The prompt of each teacher velocity kind at `picks` (∅, erase, anchor; with mapped targets also those)."""
    prompts = {
        "empty": [""] * len(picks),
        "erase": [pool.prompts[p] for p, _ in picks],
        "anchor": [pool.anchors[p] for p, _ in picks],
    }
    if pool.targets is not None:  # the mapped and the erase prompt on the mapped prompt's own trajectory
        prompts["target"] = [pool.targets[p] for p, _ in picks]
        prompts["concept"] = prompts["erase"]
    return prompts


def pool_seeds(seed: int, count: int) -> list[int]:
    """The noise seed of each of the pool's `count` trajectories for a run's `seed`."""
    return [seed * 100_003 + index for index in range(count)]


def build_pool(
    velocity: Callable,
    model,
    conditioner,
    prompts: PromptSet,
    config: EraseConfig,
    in_channels: int,
    shift: float,
    *,
    sample_batch: int,
    cache_batch: int,
    keep_segments: bool,
    progress: Progress | None = None,
    device: torch.device = CPU,
    store: torch.device | None = None,
) -> TrajectoryPool:
    """Sample the pool with `velocity` (the frozen model) and, with `config.cache`, fill its teacher cache;
    `keep_segments` also keeps the refiners' outputs (segments.py), for a student whose refiners stay frozen.
    `device`: where `velocity` computes (the pool delivers a step's rows there); `store`: where the pool keeps what
    it holds (default `device`; the CPU when it would not fit beside training, see forwards.TrainerForwards)."""
    count = min(config.pool_prompts, max(len(prompts.erase), 1) * 4)
    erase = [prompts.erase[index % len(prompts.erase)] for index in range(count)]
    anchors = [prompts.anchors[index % len(prompts.anchors)] for index in range(count)]
    seeds = pool_seeds(config.seed, count)
    targets = None
    if config.erase_target_value == "anchor":
        targets = [prompts.target_of(index % len(prompts.erase)) for index in range(count)]
    mapped = config.target_states_value == "mapped"
    sampling = PhaseCounter(
        progress,
        "x_t pool",
        pool_ticks(
            count, config.sample_steps, sample_batch, config.anchor_trajectories, mapped and targets is not None
        ),
    )
    pool = sample_pool(
        velocity,
        conditioner,
        erase,
        anchors,
        seeds,
        config.latent_size,
        in_channels,
        config.sample_steps,
        shift,
        config.sample_cfg,
        sample_batch,
        config.anchor_trajectories,
        sampling.advance,
        targets if mapped else None,
        device,
    )
    pool.store(device if store is None else store)
    if targets is not None:
        pool.targets = targets
    if config.cache:
        # Every teacher velocity in a fixed batch order: training and a resumed run see identical numbers.
        # Where the refiners stay frozen, their outputs are kept too (segments.py).
        if keep_segments:
            pool.segments = SegmentCache(config.latent_size)
        picks = [(p, k) for p in range(pool.size) for k in range(pool.steps)]
        caching = PhaseCounter(progress, "teacher cache", -(-len(picks) // cache_batch))
        for start in range(0, len(picks), cache_batch):
            chunk = picks[start : start + cache_batch]
            for kind, texts in teacher_prompts(pool, chunk).items():
                if pool.segments is not None:
                    pool.segments.fill(model, pool, chunk, kind, texts, conditioner)
                else:
                    teacher_velocities(pool, chunk, kind, texts, velocity, conditioner)
            caching.advance()
        pool.hits = pool.misses = 0
    return pool
