"""Trajectory and teacher caches: x_t is sampled once per (prompt, seed) with the frozen model, then reused.

ESD-style training needs x_t "starting from random noise": a partial run of the frozen sampler with the erase
prompt. Re-running it every step costs up to K forwards per step; instead a pool of trajectories is sampled once
(all K states kept) and each training step picks a (trajectory, k). The frozen teacher's velocities at a pool state
are pure functions of (state, prompt), so they are cached too.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch

from ..model.sampling import euler_sample, guided_velocity, initial_noise, shifted_sigmas

CPU = torch.device("cpu")


class KeptSegments(Protocol):
    """What the pool needs of its kept refiner outputs (segments.SegmentCache, which builds on this module)."""

    def bytes(self) -> int: ...

    def to(self, device: torch.device) -> None: ...

    def joint_input(self, model, conditioner, pool: Any, picks, prompts: list[str], kinds: list[str]) -> Any: ...

    def fill(self, model, pool: Any, picks, kind: str, texts: list[str], conditioner) -> None: ...

    def add_texts(self, model, conditioner, prompts: list[str]) -> None: ...


@dataclass
class TrajectoryPool:
    states: torch.Tensor  # (P, K, C, h, w): x at sigmas[k] for k < K, per trajectory
    sigmas: torch.Tensor  # (K + 1,)
    prompts: list[str]  # the (unshuffled) erase prompt of each trajectory
    anchors: list[str]  # the anchor prompt paired with each trajectory
    # (P, K, C, h, w) or None: the same seeds sampled with the anchor prompts, where L_pr's anchor term is measured
    anchor_states: torch.Tensor | None = None
    teacher: dict[tuple[int, int, str], torch.Tensor] = field(default_factory=dict)
    segments: KeptSegments | None = None  # when the trainer keeps the refiners' outputs
    # the mapped prompt of each trajectory (the "anchor" erase target) and, from the same seeds, its own trajectory:
    # the erase loss is taken there, for the erase prompt ("concept") and the mapped one ("target")
    targets: list[str] | None = None
    target_states: torch.Tensor | None = None
    hits: int = 0
    misses: int = 0
    # where a step's tensors are computed (the model's device: `batch` and teacher reads deliver there) and where the
    # pool keeps its states, teacher velocities and segments (the same device when they fit, else the CPU: `store`)
    device: torch.device = CPU
    store_device: torch.device = CPU

    @property
    def size(self) -> int:
        return self.states.shape[0]

    @property
    def steps(self) -> int:
        return self.states.shape[1]

    def source(self, kind: str) -> str:
        """Which trajectories a velocity of `kind` is taken on: anchor prompts on their own when sampled, the erase
        target's ("target", "concept") on the mapped prompts' when sampled, the rest on the erase prompts'."""
        if kind == "anchor" and self.anchor_states is not None:
            return "anchor"
        if kind in ("target", "concept") and self.target_states is not None:
            return "target"
        return "erase"

    def state(self, kind: str, trajectory: int, step: int) -> torch.Tensor:
        """x_t where a velocity of `kind` is taken."""
        states = {"anchor": self.anchor_states, "target": self.target_states}.get(self.source(kind))
        return (self.states if states is None else states)[trajectory, step]  # source(): "erase" where None

    def batch(self, picks, kinds: str | list[str] = "erase") -> tuple[torch.Tensor, torch.Tensor]:
        """(x_t, sigma) of the picks [(trajectory, k)], for one kind or a kind per pick."""
        kinds = [kinds] * len(picks) if isinstance(kinds, str) else kinds
        states = torch.stack([self.state(kind, p, k) for (p, k), kind in zip(picks, kinds, strict=True)])
        return states.to(self.device), torch.stack([self.sigmas[k] for _, k in picks]).to(self.device)

    def store(self, device: torch.device) -> None:
        """Keep states, teacher velocities and segments on `device` (moved once, after the build)."""
        self.store_device = device
        for name in ("states", "anchor_states", "target_states"):
            value = getattr(self, name)
            if value is not None:
                setattr(self, name, value.to(device))
        self.teacher = {key: velocity.to(device) for key, velocity in self.teacher.items()}
        if self.segments is not None:
            self.segments.to(device)

    def stored_bytes(self) -> int:
        tensors = [self.states, self.anchor_states, self.target_states, *self.teacher.values()]
        kept = sum(tensor.numel() * tensor.element_size() for tensor in tensors if tensor is not None)
        return kept + (self.segments.bytes() if self.segments is not None else 0)


@torch.no_grad()
def sample_trajectories(
    velocity_of,
    conditioner,
    prompts: list[str],
    seeds: list[int],
    latent_hw: tuple[int, int],
    channels: int,
    sigmas: torch.Tensor,
    cfg: float,
    batch_size: int = 32,
    tick: Callable[[], None] | None = None,
    device: torch.device = CPU,
) -> torch.Tensor:
    """Run the frozen model from noise with each prompt, keeping every state: (P, K, C, h, w). `tick()` is called
    after each sampler step of each batch (ceil(P / batch_size) · K calls). The noise is drawn on the CPU (the same
    numbers on every device) and sampled on `device`."""
    all_states = []
    for start in range(0, len(prompts), batch_size):
        chunk = prompts[start : start + batch_size]
        context, lengths = conditioner.encode(chunk)
        empty, empty_lengths = conditioner.encode([""] * len(chunk))
        noise = torch.cat(
            [initial_noise((1, channels, *latent_hw), seed) for seed in seeds[start : start + batch_size]]
        ).to(device)
        states = [noise * sigmas[0]]

        def keep(index: int, x: torch.Tensor, states: list = states) -> None:
            if index < len(sigmas) - 2:  # the state after the last step (sigma 0) is no x_t
                states.append(x)
            if tick is not None:
                tick()

        velocity = guided_velocity(velocity_of, context, lengths, cfg, empty, empty_lengths)
        euler_sample(velocity, noise, sigmas, callback=keep)
        all_states.append(torch.stack(states, dim=1))
    return torch.cat(all_states)


def sample_pool(
    velocity_of,
    conditioner,
    prompts: list[str],
    anchors: list[str],
    seeds: list[int],
    latent_hw: tuple[int, int],
    channels: int,
    steps: int,
    shift: float,
    cfg: float,
    batch_size: int = 32,
    anchor_trajectories: bool = False,
    tick: Callable[[], None] | None = None,
    targets: list[str] | None = None,
    device: torch.device = CPU,
) -> TrajectoryPool:
    """The x_t pool of the erase prompts (and, with `anchor_trajectories`, of the anchors from the same seeds).
    `velocity_of(x, sigma, ctx, lengths)` is the frozen model; `tick()` after each sampler step of each batch
    (`pool_ticks` calls in all). With `targets` (mapped prompts) their trajectories are sampled too, last."""
    sigmas = shifted_sigmas(steps, shift)

    def sample(texts: list[str]) -> torch.Tensor:
        return sample_trajectories(
            velocity_of, conditioner, texts, seeds, latent_hw, channels, sigmas, cfg, batch_size, tick, device
        )

    pool = TrajectoryPool(
        sample(prompts), sigmas, list(prompts), list(anchors), sample(anchors) if anchor_trajectories else None
    )
    pool.device = pool.store_device = device
    if targets is not None:
        pool.targets, pool.target_states = list(targets), sample(targets)
    return pool


def pool_ticks(count: int, steps: int, batch_size: int, anchor_trajectories: bool, targets: bool = False) -> int:
    """How many times `sample_pool` calls `tick` for `count` prompts."""
    return -(-count // batch_size) * steps * (1 + int(anchor_trajectories) + int(targets))


@torch.no_grad()
def teacher_velocities(
    pool: TrajectoryPool,
    picks: list[tuple[int, int]],
    kind: str,
    prompts: list[str],
    velocity_of,
    conditioner,
    use_cache: bool = True,
) -> torch.Tensor:
    """Frozen velocities at pool states `picks` [(trajectory, k)] for prompts of one `kind` (cached by kind)."""
    missing = [row for row, pick in enumerate(picks) if not use_cache or (*pick, kind) not in pool.teacher]
    pool.hits += len(picks) - len(missing)
    pool.misses += len(missing)
    if missing:
        states, sigma = pool.batch([picks[row] for row in missing], kind)
        context, lengths = conditioner.encode([prompts[row] for row in missing])
        velocities = velocity_of(states, sigma, context, lengths).float()
        if not use_cache:
            return velocities
        for row, velocity in zip(missing, velocities, strict=True):
            pool.teacher[(*picks[row], kind)] = velocity.to(pool.store_device)
    return torch.stack([pool.teacher[(*pick, kind)] for pick in picks]).to(pool.device)
