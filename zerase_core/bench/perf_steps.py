"""The measured pieces of `bench --perf`: stage clock, memory probe, random models and conditioners, step variants.

Every variant runs the real engine (`EraseTrainer`, `AdapterSet`, `ZImageDiT`); the trainer subclass only adds
timing hooks around its own methods, shares one x_t pool between methods, and (for the uncached loop) samples x_t
afresh each step as ESD-style training without a trajectory pool does.
"""

from __future__ import annotations

import os
import resource
import time
from contextlib import contextmanager
from dataclasses import replace
from typing import ClassVar

import numpy
import torch

from ..adapters.gated import AdapterSet
from ..engine.objectives import velocity_mse
from ..engine.trainer import EraseTrainer
from ..model.sampling import guided_velocity, initial_noise
from .synthetic import DeviceDenoiser, SyntheticConditioner, random_dit  # noqa: F401 (real/run.py imports them here)

STAGES = ("sampling", "teacher", "student_forward", "backward", "probe", "optimizer", "other")


class StageClock:
    """Wall time per stage of one step; nested stages count only for the innermost, and all work done inside the
    λ probe counts as `probe`. `other` is the rest of the step (prompt shuffle, keyword columns, bookkeeping)."""

    def __init__(self, synchronize=None, reading=time.perf_counter):
        """`reading()` is the running quantity split into stages: wall time, or a FLOP counter's total."""
        self.synchronize, self.reading = synchronize or (lambda: None), reading
        self.totals: dict[str, float] = {}
        self._stack: list[str] = []
        self._mark = 0.0

    def _tick(self) -> None:
        self.synchronize()
        now = self.reading()
        if self._stack:
            self.totals[self._stack[-1]] = self.totals.get(self._stack[-1], 0.0) + now - self._mark
        self._mark = now

    def enter(self, name: str) -> bool:
        if not self._stack or "probe" in self._stack:
            return False
        self._tick()
        self._stack.append(name)
        return True

    def leave(self, name: str) -> None:
        if self._stack and self._stack[-1] == name:
            self._tick()
            self._stack.pop()

    @contextmanager
    def stage(self, name: str):
        entered = self.enter(name)
        try:
            yield
        finally:
            if entered:
                self.leave(name)

    def begin_step(self) -> None:
        self.totals = {}
        self.synchronize()
        self._stack = ["other"]
        self._mark = self.reading()

    def end_step(self) -> dict[str, float]:
        self._tick()
        self._stack = []
        return dict(self.totals)


class MemoryProbe:
    """Peak resident memory (Linux: VmHWM, reset through /proc/self/clear_refs) and CUDA peak allocation."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"
        self.resettable = os.path.exists("/proc/self/clear_refs")
        self._highest = 0.0  # the peak before the last reset (a reset also clears getrusage's maxrss)

    @staticmethod
    def _status_gb(field: str) -> float | None:
        try:
            with open("/proc/self/status") as stream:
                for line in stream:
                    if line.startswith(field + ":"):
                        return int(line.split()[1]) / 2**20
        except OSError:
            return None
        return None

    def rss_gb(self) -> float:
        value = self._status_gb("VmRSS")
        return value if value is not None else self.lifetime_peak_gb()

    def lifetime_peak_gb(self) -> float:
        maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # kB on Linux
        return max(self._highest, maxrss, self._status_gb("VmHWM") or 0.0)

    def reset(self) -> None:
        self._highest = self.lifetime_peak_gb()
        if self.resettable:
            try:
                with open("/proc/self/clear_refs", "w") as stream:
                    stream.write("5")
            except OSError:
                self.resettable = False
        if self.cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()

    def peak_rss_gb(self) -> float:
        """Peak RSS since the last `reset` (the process lifetime peak where it cannot be reset)."""
        value = self._status_gb("VmHWM") if self.resettable else None
        return value if value is not None else self.lifetime_peak_gb()

    def peak_cuda_gb(self) -> float | None:
        if not self.cuda:
            return None
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() / 2**30


class BenchTrainer(EraseTrainer):
    """EraseTrainer with stage timing (its `stage` hook); `pool=` reuses another trainer's x_t pool (same frozen
    model, seeds and settings give the same pool); `fresh_samples=True` samples x_t afresh at every step (the uncached
    loop, through the trainer's `step_states` hook). L_pr-only forwards count as `student_forward` here
    (`stage_names` renames stages: perf_flops keeps `preserve` apart)."""

    stage_names: ClassVar[dict[str, str]] = {"preserve": "student_forward"}

    def __init__(
        self, *args, clock: StageClock, pool=None, fresh_samples: bool = False, build_batch: int | None = None, **kwargs
    ):
        self.clock, self.fresh_samples = clock, fresh_samples
        if build_batch:
            self.sample_batch = self.cache_batch = build_batch
        self._fresh_seed = 10_000_000
        super().__init__(*args, pool=pool, stage=lambda name: clock.stage(self.stage_names.get(name, name)), **kwargs)
        if fresh_samples:
            self.step_states = self._fresh_pool_states

    def train_step(self) -> dict[str, float]:
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
        x = torch.cat([initial_noise((1, channels, height, width), seed) for seed in seeds]) * pool.sigmas[0]
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
            target = torch.stack([self.pool.teacher[key] for key in self._keys(picks)])
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
