"""The measured steps of `bench --perf`: the trainer with stage hooks, and the variants timed beside it (their clock
and memory probe in meters.py).

Every variant runs the real engine (`EraseTrainer`, `AdapterSet`, `ZImageDiT`); the trainer subclass only adds
timing hooks around its own methods, shares one x_t pool between methods, and (for the uncached loop) samples x_t
afresh each step as ESD-style training without a trajectory pool does.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import replace
from typing import ClassVar

import numpy
import torch
from torch import nn

from ..adapters.gated import AdapterSet
from ..common.prompts import PromptSet, TextConditioner
from ..engine.erase_config import EraseConfig
from ..engine.objectives import velocity_mse
from ..engine.trainer import EraseTrainer
from ..engine.trainer_checks import StepMetrics
from ..engine.trajectory import TrajectoryPool
from ..model.sampling import guided_velocity, initial_noise
from .meters import StageClock

STAGES = ("sampling", "teacher", "student_forward", "backward", "probe", "optimizer", "other")


class BenchTrainer(EraseTrainer):
    """EraseTrainer with stage timing (its `stage` hook); `pool=` reuses another trainer's x_t pool (same frozen
    model, seeds and settings give the same pool); `fresh_samples=True` samples x_t afresh at every step (the uncached
    loop, through the trainer's `step_states` hook). L_pr-only forwards count as `student_forward` here
    (`stage_names` renames stages: perf_flops keeps `preserve` apart)."""

    stage_names: ClassVar[dict[str, str]] = {"preserve": "student_forward"}

    def __init__(
        self,
        model: nn.Module,
        conditioner: TextConditioner,
        prompts: PromptSet,
        config: EraseConfig,
        *,
        clock: StageClock,
        pool: TrajectoryPool | None = None,
        fresh_samples: bool = False,
        build_batch: int | None = None,
        **options,
    ):
        """`options`: EraseTrainer's (denoise, in_channels, shift, attach, ...)."""
        self.clock, self.fresh_samples = clock, fresh_samples
        if build_batch:
            self.sample_batch = self.cache_batch = build_batch
        self._fresh_seed = 10_000_000
        super().__init__(
            model,
            conditioner,
            prompts,
            config,
            pool=pool,
            stage=lambda name: clock.stage(self.stage_names.get(name, name)),
            **options,
        )
        if fresh_samples:
            self.step_states = self._fresh_pool_states

    def train_step(self) -> StepMetrics:
        self.clock.begin_step()
        try:
            return super().train_step()
        finally:
            self.step_stages = self.clock.end_step()

    @torch.no_grad()
    def _fresh_states(self, picks, prompts: list[str]) -> torch.Tensor:
        """x_t at each pick's step k: the frozen model from new noise with `prompts` (ESD quick-sample)."""
        config, pool = self.config, self.pool
        channels, height, width = pool.states.shape[2:]
        seeds = range(self._fresh_seed, self._fresh_seed + len(picks))
        self._fresh_seed += len(picks)
        noise = torch.cat([initial_noise((1, channels, height, width), seed) for seed in seeds])
        x = noise.to(pool.device) * pool.sigmas[0]
        context, lengths = self.conditioner.encode(prompts)
        empty, empty_lengths = self.conditioner.encode([""] * len(picks))
        ks = [k for _, k in picks]
        with self.adapters.disabled():
            for index in range(max(ks)):
                rows = torch.tensor([row for row, k in enumerate(ks) if k > index])
                sigma = pool.sigmas[index].expand(len(rows))
                velocity = guided_velocity(
                    self._velocity, context[rows], lengths[rows], config.sample_cfg, empty[rows], empty_lengths[rows]
                )
                x[rows] = x[rows] + (pool.sigmas[index + 1] - pool.sigmas[index]) * velocity(x[rows], sigma)
        return x

    @contextmanager
    def _fresh_pool_states(self, picks):
        """The pool states of `picks` replaced by freshly sampled ones while the step's losses are computed."""
        pool = self.pool
        fields = ["states"] + (["anchor_states"] if pool.anchor_states is not None else [])
        with self.clock.stage("sampling"):
            fresh = {"states": self._fresh_states(picks, [pool.prompts[p] for p, _ in picks])}
            if "anchor_states" in fields:
                fresh["anchor_states"] = self._fresh_states(picks, [pool.anchors[p] for p, _ in picks])
        saved = {name: {pick: getattr(pool, name)[pick].clone() for pick in picks} for name in fields}
        for name in fields:
            for row, pick in enumerate(picks):
                getattr(pool, name)[pick] = fresh[name][row]
        try:
            yield
        finally:
            for name in fields:
                for pick, state in saved[name].items():
                    getattr(pool, name)[pick] = state


class TrainerVariant:
    """One method's step, attached only while it runs (variants share one model and run interleaved)."""

    def __init__(self, name: str, trainer: BenchTrainer):
        self.name, self.trainer = name, trainer
        if trainer.adapters.attached:
            trainer.adapters.detach()

    def step(self) -> dict[str, float]:
        self.trainer.adapters.attach(self.trainer.model)
        try:
            self.trainer.train_step()
        finally:
            self.trainer.adapters.detach()
        return self.trainer.step_stages


class PlainLoraVariant:
    """One ungated fwd/bwd/AdamW step of the same adapters (gate `all`) on a plain MSE target: the frozen model's
    velocity for the same prompt at the same pool state (read from the teacher cache)."""

    def __init__(self, model, velocity, conditioner, pool, config, clock: StageClock, device, gate: str = "all"):
        self.name = "plain_lora" if gate == "all" else f"plain_lora_gate_{gate}"
        self.model, self.velocity, self.conditioner, self.pool, self.clock = model, velocity, conditioner, pool, clock
        torch.manual_seed(config.seed)
        self.adapters = AdapterSet(model, replace(config.adapter_config(), gate=gate)).to(device)
        self.optimizer = torch.optim.AdamW(self.adapters.parameters(), lr=config.learning_rate, weight_decay=0.0)
        self.rng = numpy.random.default_rng(config.seed)
        self.batch = config.batch_size
        missing = [key for key in self._keys(self._picks(numpy.random.default_rng(0))) if key not in pool.teacher]
        if not pool.teacher or missing:
            raise ValueError("the plain LoRA step reads its target from a filled teacher cache (EraseConfig.cache)")

    def _picks(self, rng):
        return [(int(rng.integers(self.pool.size)), int(rng.integers(self.pool.steps))) for _ in range(self.batch)]

    @staticmethod
    def _keys(picks):
        return [(p, k, "erase") for p, k in picks]

    def step(self) -> dict[str, float]:
        self.adapters.attach(self.model)
        self.clock.begin_step()
        try:
            picks = self._picks(self.rng)
            target = torch.stack([self.pool.teacher[key] for key in self._keys(picks)]).to(self.pool.device)
            states, sigma = self.pool.batch(picks)
            with self.clock.stage("student_forward"):
                context, lengths = self.conditioner.encode([self.pool.prompts[p] for p, _ in picks])
                loss = velocity_mse(self.velocity(states, sigma, context, lengths), target)
            with self.clock.stage("backward"):
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
            with self.clock.stage("optimizer"):
                self.optimizer.step()
        finally:
            stages = self.clock.end_step()
            self.adapters.detach()
        return stages


class TeacherForwardVariant:
    """One frozen forward (no grad, no adapters) of a batch of pool states with their erase prompts."""

    def __init__(self, velocity, conditioner, pool, config, clock: StageClock):
        self.name = "teacher_forward"
        self.velocity, self.conditioner, self.pool, self.clock = velocity, conditioner, pool, clock
        self.rng = numpy.random.default_rng(config.seed)
        self.batch = config.batch_size

    @torch.no_grad()
    def step(self) -> dict[str, float]:
        picks = [
            (int(self.rng.integers(self.pool.size)), int(self.rng.integers(self.pool.steps))) for _ in range(self.batch)
        ]
        self.clock.begin_step()
        with self.clock.stage("teacher"):
            context, lengths = self.conditioner.encode([self.pool.prompts[p] for p, _ in picks])
            states, sigma = self.pool.batch(picks)
            self.velocity(states, sigma, context, lengths)
        return self.clock.end_step()
