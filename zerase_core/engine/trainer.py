"""One trainer for every fine-tuning method: Z-Erase and the baselines, each a `Method` object named by
`EraseConfig.method` (engine/methods: which losses a step computes); λ comes from `engine.lagrangian`.

Z-Erase step (the paper's Alg. 1, with the details it leaves open fixed as below):
  1. draw (trajectory, k) pairs from the frozen x_t pool; teacher velocities (adapters off) for ∅, c_er, c_pr
  2. student forward on the word-shuffled erase prompt, capturing image→keyword attention: L_er = L_erase + w·L_attn;
     L_erase's target is EraseConfig.erase_target: "anchor" (zerase default) v(c_t) − η_t·(v(c_er) − v(c_t)) on the
     mapped prompt c_t's trajectory (PromptSet.targets), or "empty", the paper's v(∅) − η·(v(c_er) − v(∅))
  3. L_pr = MSE to the teacher on ∅ and on the anchor c_pr;  L = L_er + λ·L_pr;  one AdamW step. The anchor term
     is taken at the anchor's own x_t (its trajectory from the same seed; `EraseConfig.anchor_trajectories`), where
     the keep prompts actually sample: on nano colours and shapes this raised the keep ratio at equal erasure
  4. λ ← clip(λ − β·g̃, 0, λ_max),  g̃ = (L_pr(θ_before) − L_pr(θ_after))/α + ε, with both L_pr values on the SAME
     fixed probe (same x_t, t, noise and prompts) — the public code compares a loss with itself.
     L_pr(θ_after) of one step is L_pr(θ_before) of the next, so the probe costs one no-grad forward pair per step;
     its inputs never change, so the frozen part of that forward (embeddings, refiners) is computed once.
Baselines: `esd` (L_erase only), `ac` (model-based anchor loss), `eraseanything` (erase and preserve on alternating
steps, as its official code), `naive-esd` (ESD with the gate open on every token: reproduces the collapse).

Instrumentation uses the parts, not subclass overrides: `stage(name)` (a context manager factory) brackets the
teacher, student, probe, backward and optimizer work of a step; `pool=` reuses a built x_t pool; `step_states(picks)`
(a context manager factory) may replace the pool states of a step's picks while its losses are computed.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from typing import cast

import numpy
import torch
from torch import nn

from ..adapters.gated import AdapterSet
from ..common.progress import PhaseCounter, Progress
from ..common.prompts import PromptSet, TextConditioner
from ..model.dit import ZImageDiT
from .distributed import SingleProcess
from .erase_config import EraseConfig
from .forwards import TrainerForwards
from .gradients import StagedBackward, one_backward
from .lagrangian import LambdaController
from .methods import method as method_named
from .optimizer import fused_on_cuda
from .pool import build_pool
from .resume_state import StepRecord, StepSnapshot, TrainerState
from .shuffle_bank import PreparedConditioner, ShuffleBank
from .trainer_checks import FiniteChecks, PendingCheck, StepMetrics, TrainingDiverged

__all__ = ["EraseTrainer", "StepRecord", "TrainingDiverged"]  # StepRecord, TrainingDiverged: where callers import them
from .trajectory import TrajectoryPool

StepCallback = Callable[[int, int, dict], None]
Stage = Callable[[str], AbstractContextManager]


class EraseTrainer(TrainerForwards, TrainerState, FiniteChecks):
    # Forwards per batch while sampling the x_t pool and filling the teacher cache (no grad). Their activations grow
    # with the batch: at Z-Image scale and 512² a few per batch keep the build under the step's peak (see
    # docs/performance.md); the nano model uses these defaults.
    sample_batch = 32
    # Steps run at most between two progress points (train_step reads nothing back; check_finite does). Each
    # unchecked step keeps its snapshot (adapters and optimizer moments) for a divergence to undo it.
    check_every = 4
    cache_batch = 64
    # The student forwards of one step (erase prompt, ∅, anchor; the probe's ∅ and anchor) run as one stacked batch:
    # fewer, larger forwards. Under gradient checkpointing they stay separate, so that the block recomputed in the
    # backward holds B samples, not 3·B. None = that rule; True / False force it.
    fuse_forwards: bool | None = None
    # L's backward one student forward at a time (engine/gradients), keeping one forward's activations instead of
    # three: None = when the forwards run apart (not fused); True / False force it
    backward_per_forward: bool | None = None

    def __init__(
        self,
        diffusion_model: nn.Module,
        conditioner: TextConditioner,
        prompts: PromptSet,
        config: EraseConfig,
        denoise: Callable | None = None,
        in_channels: int = 16,
        shift: float = 3.0,
        attach: bool = True,
        progress: Progress | None = None,
        parallel=None,
        pool: TrajectoryPool | None = None,
        stage: Stage | None = None,
    ):
        """`parallel` (distributed.DataParallel) splits each step's batch across processes; default one process.
        `attach=False` leaves attaching `self.adapters` to the caller (the ComfyUI bridge does it from a
        PatcherInjection); the x_t pool is built before that, which is the same as with the adapters disabled.
        `progress(phase, done, total)` follows the work done here, before the first step: phases "x_t pool",
        "teacher cache" and (with a shuffle bank) "shuffle bank" (zerase_core.common.progress). `pool` is an x_t pool
        built before with the same model and settings; `stage(name)` brackets each part of a step (module doc)."""
        self.model, self.conditioner, self.prompts, self.config = diffusion_model, conditioner, prompts, config
        # denoise(x, sigma, context, lengths, capture=None) -> v; ZImageDiT.forward has this signature
        self.denoise = denoise or diffusion_model
        self.parallel = parallel or SingleProcess()
        self.method = method_named(config.method)
        self.stage = stage or (lambda name: nullcontext())
        self.step_states: Callable[[list], AbstractContextManager] | None = None
        if config.batch_size < self.parallel.world:
            raise ValueError(
                f"batch_size {config.batch_size} is smaller than the {self.parallel.world} processes "
                f"it is split across; use a batch of at least {self.parallel.world}"
            )
        for keyword in prompts.keywords:
            conditioner.check_keyword(keyword)
        diffusion_model.requires_grad_(False)
        # the adapters' initial values come from their own generator: the global RNG (every other ComfyUI node's
        # randomness) is left as it was
        self.adapters = AdapterSet(diffusion_model, config.adapter_config(), torch.Generator().manual_seed(config.seed))
        if attach:
            self.adapters.attach(diffusion_model)
        self.optimizer = torch.optim.AdamW(self.adapters.parameters(), lr=config.learning_rate, weight_decay=0.0)
        self.rng = numpy.random.default_rng(config.seed)
        self.step = 0
        self.lagrangian = LambdaController.from_config(config, self.method.constrained)
        self.history: list[StepRecord] = []
        self._probe_loss: torch.Tensor | None = None
        self._pending: list[PendingCheck] = []  # steps not yet checked (trainer_checks)
        self._fuse_checked = False
        self._probe_prefix = None
        self._staged: StagedBackward | None = None  # set during a step's losses when they are released per forward
        self._last_finite: dict[str, torch.Tensor] | None = None
        self.progress = progress
        self.pool = pool if pool is not None else self._build_pool(in_channels, shift)
        self.probe_picks = [(index % self.pool.size, self.pool.steps // 2) for index in range(config.probe_size)]
        self.bank: ShuffleBank | None = None
        if config.shuffle_bank and self.method.shuffles:
            self._prepare_bank()

    @property
    def lam(self) -> float:
        """λ as a float (read from the device: for progress and files, not inside a step)."""
        return self.lagrangian.value

    @lam.setter
    def lam(self, value: float) -> None:
        self.lagrangian.value = value

    # -- setup -------------------------------------------------------------------------------------------------
    def _build_pool(self, in_channels: int, shift: float) -> TrajectoryPool:
        with self.adapters.disabled():
            return build_pool(
                self._velocity,
                self.model,
                self.conditioner,
                self.prompts,
                self.config,
                in_channels,
                shift,
                sample_batch=self.sample_batch,
                cache_batch=self.cache_batch,
                keep_segments=self._reuses_prefix(),
                progress=self.progress,
                device=self.compute_device(),
                store=self.store_device(),
            )

    def _prepare_bank(self) -> None:
        """Draw and encode the erase prompts' word orders now; from here on the trainer has no text encoder."""
        self.bank = ShuffleBank(self.prompts, self.pool.prompts, self.config.shuffle_bank, self.config.seed)
        prompts = [*self.pool.prompts, *self.pool.anchors, "", *self.bank.prompts()]
        segments = self.pool.segments
        orders = self.bank.prompts() if segments is not None else []
        counter = PhaseCounter(self.progress, "shuffle bank", 1 + -(-len(orders) // self.cache_batch))
        self.conditioner = PreparedConditioner(self.conditioner, prompts, self.prompts)
        counter.advance()
        if segments is not None:
            model = cast(ZImageDiT, self.model)  # the pool keeps refiner outputs only of the core model (pool.py)
            for start in range(0, len(orders), self.cache_batch):
                segments.add_texts(model, self.conditioner, orders[start : start + self.cache_batch])
                counter.advance()

    # -- one step ----------------------------------------------------------------------------------------------
    def _losses(self, picks) -> tuple[torch.Tensor, torch.Tensor | None, dict[str, torch.Tensor]]:
        """(L_er, L_pr or None, parts) for this step's method, as means over this process's rows of `picks`."""
        with self.step_states(picks) if self.step_states is not None else nullcontext():
            return self.method.losses(self, picks, self._teacher(self.parallel.local(picks)))

    def train_step(self) -> StepMetrics:
        """One optimizer step (and λ update). An exception inside it, Ctrl-C included, leaves the trainer as it was
        before the step (resume_state.StepSnapshot), so a partial file saved then resumes bit-identically.

        The step reads nothing back to the host: its metrics are device tensors read on first use, and whether its
        loss and new adapter weights were finite is read at the next progress point (`check_finite`: after each
        step of `run` with a callback, every `check_every` steps and at the end). A step found non-finite there
        raises TrainingDiverged with the trainer put back to that step's start, the last finite adapters restored,
        and the steps run after it undone."""
        if len(self._pending) >= self.check_every:
            self.check_finite()  # a progress point before this step: the snapshots kept stay few
        snapshot = StepSnapshot(self)
        try:
            return self._train_step(snapshot)
        except BaseException:
            snapshot.restore()
            raise

    def _train_step(self, snapshot: StepSnapshot) -> StepMetrics:
        config = self.config
        picks = [
            (int(self.rng.integers(self.pool.size)), int(self.rng.integers(self.pool.steps)))
            for _ in range(config.batch_size)
        ]
        self._fuse_optimizer()
        adaptive = self.lagrangian.adaptive
        if adaptive and self._probe_loss is None:
            self._probe_loss = self.probe()
        stationarity = bool(
            self.method.constrained and config.stationarity_every and (self.step + 1) % config.stationarity_every == 0
        )
        local = len(self.parallel.local(range(len(picks))))
        scale = self.parallel.gradient_scale(local, len(picks))  # DDP averages; rows may split unevenly
        params = list(self.adapters.parameters())
        self.optimizer.zero_grad(set_to_none=True)
        staged = None
        if self._backward_per_forward():
            staged = StagedBackward(params, self.lagrangian.factor, scale, self.stage, apart=stationarity)
        self._staged = staged
        try:
            erase_total, preserve, parts = self.parallel.losses(
                self._losses, picks, sync=not stationarity and staged is None
            )
        finally:
            self._staged = None
        lam = self.lagrangian.on(erase_total.device)
        total = erase_total if preserve is None else erase_total + self.lagrangian.factor(preserve) * preserve
        reported = self.parallel.batch_mean(
            {**{f"loss_{name}": value.detach() for name, value in parts.items()}, "loss_total": total.detach()},
            local,
            len(picks),
        )
        loss_finite = torch.isfinite(reported["loss_total"])
        finite_before = self._last_finite
        with self.stage("backward"):
            if staged is not None:
                residual = staged.finish(self.parallel)
            else:
                factor, parallel = self.lagrangian.factor, self.parallel
                residual = one_backward(params, factor, parallel, erase_total, preserve, total, scale, stationarity)
            self._last_finite = {name: tensor.detach().clone() for name, tensor in self.adapters.state_dict().items()}
        with self.stage("optimizer"):
            self.optimizer.step()
        weights_finite = torch.stack([torch.isfinite(param).all() for param in params]).all()
        metrics = {**reported, "lambda": lam}
        if adaptive:
            after = self.probe()
            g_tilde = self.lagrangian.update(cast(torch.Tensor, self._probe_loss), after)  # taken at the step's start
            self._probe_loss = after
            metrics["g_tilde"] = g_tilde
            metrics["probe_preserve"] = after
        if residual is not None:
            metrics["stationarity"] = residual
        self.step += 1
        read_later = StepMetrics(metrics)
        record = StepRecord(self.step, read_later)
        self.history.append(record)
        self._pending.append(
            PendingCheck(record, snapshot, finite_before, self._last_finite, loss_finite, weights_finite)
        )
        return read_later

    def _fuse_optimizer(self) -> None:
        if not self._fuse_checked:  # once, at the first step: the adapters may be moved after the trainer is built
            self._fuse_checked = True
            self.optimizer = fused_on_cuda(self.optimizer, list(self.adapters.parameters()), self.config.learning_rate)

    def _backward_per_forward(self) -> bool:
        """Take L's gradients one student forward at a time (engine/gradients), for a method whose terms can be
        released so: when the forwards run apart anyway (under checkpointing, or a denoiser that does not stack
        rows), unless `backward_per_forward` says otherwise."""
        if not self.method.releases_terms:
            return False
        if self.backward_per_forward is not None:
            return self.backward_per_forward
        return not self._fused()

    def run(self, on_step: StepCallback | None = None) -> list[StepRecord]:
        """Train until `config.steps`; `on_step(step, total, metrics)` may raise to stop (state stays consistent)."""
        while self.step < self.config.steps:
            self.train_step()
            if on_step is not None or self.step == self.config.steps:
                self.check_finite()  # the progress point: the callback gets checked numbers
            if on_step is not None:
                on_step(self.step, self.config.steps, dict(self.history[-1].metrics))
        self.check_finite()
        return self.history

    def summary(self) -> dict:
        last = self.history[-1].metrics if self.history else {}
        return {
            "steps": self.step,
            "lambda": self.lam,
            **last,
            "cache_hits": self.pool.hits,
            "cache_misses": self.pool.misses,
        }
