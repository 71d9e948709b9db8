"""The forwards of EraseTrainer's steps and the losses they give: teacher velocities (adapters off, from the pool's
cache), student velocities (the full forward, or the joint layers from the pool's kept refiner outputs; several prompt
lists fused into one batch unless checkpointing), L_erase (+ L_attn) on the word-shuffled erase prompts, L_pr, and the
λ probe (its frozen prefix computed once).

One engine on every device: with the core model as the denoiser, a step computes on the model's device (the pool
delivers its rows there, the kept segments and probe prefix are used as on the CPU); the pool keeps its states,
teacher velocities and segments there too when they fit beside training (memory_policy.store_fits), else in CPU
memory, each row moved when a step reads it. A wrapped denoiser (the ComfyUI bridge's) takes and returns CPU tensors."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import cast

import numpy
import torch
from torch import nn

from ..adapters.gated import AdapterSet
from ..common.prompts import PromptSet, TextConditioner, keyword_columns, shuffle_words
from ..model.dit import JointInput, ZImageDiT
from ..model.keyword_attention import AttentionCapture
from . import memory_policy
from .distributed import SingleProcess
from .erase_config import EraseConfig
from .gradients import StagedBackward
from .methods import Method
from .methods.base import erase_total
from .objectives import attention_suppression, esd_target, preservation, velocity_mse
from .pool import teacher_prompts
from .shuffle_bank import ShuffleBank
from .trajectory import CPU, TrajectoryPool, teacher_velocities


class TrainerForwards:
    """EraseTrainer's forwards (a base class of it; the attributes below are set by `EraseTrainer.__init__`)."""

    model: nn.Module
    denoise: Callable
    conditioner: TextConditioner
    prompts: PromptSet
    config: EraseConfig
    method: Method
    adapters: AdapterSet
    pool: TrajectoryPool
    parallel: SingleProcess
    stage: Callable[[str], AbstractContextManager]
    probe_picks: list[tuple[int, int]]
    rng: numpy.random.Generator
    bank: ShuffleBank | None
    fuse_forwards: bool | None
    _probe_prefix: JointInput | None
    _staged: StagedBackward | None

    def compute_device(self) -> torch.device:
        """Where a step computes: the core model's device when it is the denoiser, else the CPU."""
        if self.denoise is self.model:
            for parameter in self.model.parameters():
                return parameter.device
        return CPU

    def store_device(self) -> torch.device:
        """Where the pool keeps states, teacher velocities and segments: the compute device when they fit beside
        training there (predicted by the memory model from the device's free memory), else the CPU."""
        device = self.compute_device()
        if device.type != "cuda" or not isinstance(self.model, ZImageDiT):
            return device
        problem = memory_policy.trainer_problem(self.model, self.config, device.type)
        free = memory_policy.free_device_bytes(device)
        return device if free is not None and memory_policy.store_fits(problem, free) else CPU

    def _velocity(self, x, sigma, context, lengths, capture=None):
        if self.denoise is self.model:  # inputs to the model's device (no copy where they are there already)
            device = self.compute_device()
            x, sigma, context = x.to(device), sigma.to(device), context.to(device)
        if capture is None:
            return self.denoise(x, sigma, context, lengths)
        return self.denoise(x, sigma, context, lengths, capture)

    def _teacher(self, picks):
        with self.stage("teacher"), self.adapters.disabled():
            return {
                kind: teacher_velocities(
                    self.pool, picks, kind, texts, self._velocity, self.conditioner, self.config.cache
                )
                for kind, texts in teacher_prompts(self.pool, picks).items()
            }

    def student(self, states, sigma, prompts, capture=None):
        """The adapted model's velocity at `states` for `prompts` (the full forward, text encoding included)."""
        with self.stage("student_forward"):
            return self._forward(states, sigma, prompts, capture)

    def _forward(self, states, sigma, prompts, capture=None):
        context, lengths = self.conditioner.encode(prompts)
        return self._velocity(states, sigma, context, lengths, capture)

    def _fused(self) -> bool:
        """Stack the student forwards: not under checkpointing, nor for a denoiser that says `stacks_rows = False`."""
        if self.fuse_forwards is not None:
            return self.fuse_forwards
        if not getattr(self.denoise, "stacks_rows", True):
            return False
        return not getattr(self.model, "gradient_checkpointing", False)

    def _students(self, picks, prompt_lists, kinds, capture=None) -> list[torch.Tensor]:
        """Student velocities at the pool states of `picks` for each prompt list, each list on the states of its
        kind ("erase" or "anchor" trajectories); `capture` belongs to the first list."""
        if len(prompt_lists) == 1 or not self._fused():
            return [
                self._student_rows(picks, prompts, [kind] * len(picks), capture if index == 0 else None)
                for index, (prompts, kind) in enumerate(zip(prompt_lists, kinds, strict=True))
            ]
        count, groups = len(picks), len(prompt_lists)
        inner = None
        if capture is not None:
            # the other lists' rows capture nothing: their columns are masked, and their maps are dropped below
            columns = capture.columns
            mask = capture.column_mask
            if mask is None:
                mask = torch.ones_like(columns, dtype=torch.bool)
            padding = (groups - 1) * count
            inner = AttentionCapture(
                columns=torch.cat([columns, columns.new_zeros(padding, columns.shape[1])]),
                column_mask=torch.cat([mask, mask.new_zeros(padding, mask.shape[1])]),
                rows=count,
            )
        velocity = self._student_rows(
            list(picks) * groups,
            [prompt for prompts in prompt_lists for prompt in prompts],
            [kind for kind in kinds for _ in picks],
            inner,
        )
        if inner is not None:  # set exactly when `capture` is
            capture.maps.extend(maps[:count] for maps in inner.maps)
        return list(velocity.split(count))

    def _student_rows(self, picks, prompts, kinds, capture=None) -> torch.Tensor:
        """One student forward over rows (pick, prompt, state kind): from the kept refiner outputs when there are.
        Its stage is "preserve" when every row serves L_pr only (∅ or anchor, no attention captured)."""
        preserve = capture is None and all(
            kind == "anchor" or prompt == "" for prompt, kind in zip(prompts, kinds, strict=True)
        )
        with self.stage("preserve" if preserve else "student_forward"):
            segments = self.pool.segments if self._keeps_segments() else None
            if segments is not None:
                model = cast(ZImageDiT, self.model)  # _keeps_segments: the core model itself
                inputs = segments.joint_input(model, self.conditioner, self.pool, picks, prompts, kinds)
                return model.joint(inputs, capture)
            states, sigma = self.pool.batch(picks, kinds)
            return self._forward(states, sigma, prompts, capture)

    def _shuffled(self, prompt: str, keywords: list[str]) -> str:
        if self.bank is not None:
            return self.bank.pick(prompt, self.rng, self.config.shuffle_probability)
        return shuffle_words(prompt, keywords, self.rng, self.config.shuffle_probability)

    def erase_parts(self, picks, teacher, shuffle: bool, preserve: bool = False) -> dict[str, torch.Tensor]:
        """L_erase (+ L_attn), and with `preserve` L_pr on the same states (its forwards after the erase one)."""
        config = self.config
        prompts = [self.pool.prompts[p] for p, _ in picks]
        keywords = [self.prompts.keywords_in(prompt) for prompt in prompts]
        if shuffle:  # every row's word order is drawn in every process: the RNG stays in step
            prompts = [self._shuffled(prompt, words) for prompt, words in zip(prompts, keywords, strict=True)]
        rows = self.parallel.local(range(len(picks)))  # `teacher` holds these rows only
        picks, prompts, keywords = ([items[row] for row in rows] for items in (picks, prompts, keywords))
        # the "anchor" target: its states are the pool's "target" source (TrajectoryPool.source: the mapped prompt's
        # own trajectory when EraseConfig.target_states is "mapped", else the erase prompt's)
        erase_kind = "target" if config.erase_target_value == "anchor" else "erase"
        states, sigma = self.pool.batch(picks, erase_kind)
        if erase_kind == "target":
            target = esd_target(teacher["target"], teacher["concept"], config.target_eta_value)
        else:
            target = esd_target(teacher["empty"], teacher["erase"], config.eta)
        target = self.method.reference(self, states, sigma, picks, target)
        capture = None
        if self.method.attention and config.attention_weight > 0:
            columns, mask = keyword_columns(self.conditioner, prompts, keywords)
            device = self.pool.device
            capture = AttentionCapture(
                columns=columns.to(device), column_mask=None if mask is None else mask.to(device)
            )
        prompt_lists, kinds = [prompts], [erase_kind]
        if preserve:
            prompt_lists += [[""] * len(picks), [self.pool.anchors[p] for p, _ in picks]]
            kinds += ["erase", "anchor"]
        if preserve and self._staged is not None:
            return self._staged_parts(picks, prompt_lists, kinds, capture, target, teacher)
        predictions = self._students(picks, prompt_lists, kinds, capture)
        losses = _erase_losses(predictions[0], target, capture)
        if preserve:
            losses["preserve"] = preservation(predictions[1], teacher["empty"], predictions[2], teacher["anchor"])
        return losses

    def _staged_parts(self, picks, prompt_lists, kinds, capture, target, teacher) -> dict[str, torch.Tensor]:
        """`erase_parts` with each forward's term of L released (backward run, graph freed) before the next forward
        (engine/gradients: anchor, ∅, erase prompt); the parts come back detached, with the same values."""
        staged = cast(StagedBackward, self._staged)
        terms = {}
        for index, kind in ((2, "anchor"), (1, "empty")):
            velocity = self._student_rows(picks, prompt_lists[index], [kinds[index]] * len(picks))
            terms[kind] = staged.release(velocity_mse(velocity, teacher[kind]), preserve=True)
        velocity = self._student_rows(picks, prompt_lists[0], [kinds[0]] * len(picks), capture)
        losses = _erase_losses(velocity, target, capture)
        staged.release(erase_total(self, losses), preserve=False)
        losses = {name: value.detach() for name, value in losses.items()}
        losses["preserve"] = terms["empty"] + terms["anchor"]  # objectives.preservation's sum
        return losses

    def preservation_loss(self, picks, teacher=None) -> torch.Tensor:
        teacher = teacher or self._teacher(picks)
        anchors = [self.pool.anchors[p] for p, _ in picks]
        empty, anchor = self._students(picks, [[""] * len(picks), anchors], ["erase", "anchor"])
        return preservation(empty, teacher["empty"], anchor, teacher["anchor"])

    @torch.no_grad()
    def probe(self) -> torch.Tensor:
        """L_pr on the fixed probe, a 0-dim float32 tensor left on the device (read by the caller when needed)."""
        with self.stage("probe"):
            return self._probe_mean()

    def _probe_mean(self) -> torch.Tensor:
        # split across processes when each gets a row, else every process measures the whole probe
        picks = self.probe_picks
        if len(picks) >= self.parallel.world:
            picks = self.parallel.local(picks)
        value = self._probe(picks)
        if len(picks) == len(self.probe_picks):
            return value
        mean = self.parallel.batch_mean({"probe": value.to(torch.float64)}, len(picks), len(self.probe_picks))
        return mean["probe"]

    def _probe(self, picks) -> torch.Tensor:
        if not self._reuses_prefix():
            # a wrapped denoiser (ComfyUI's NextDiT) may keep its own prefix for calls that repeat their inputs
            repeating = getattr(self.denoise, "repeating", None)
            if repeating is None or not self._adapts_joint_layers_only():
                return self.preservation_loss(picks)
            with repeating("probe"):
                return self.preservation_loss(picks)
        # The probe's (x_t, prompt) pairs never change and the refiners are not adapted: their prefix (embeddings,
        # refiners, position tables) is computed once and only the joint layers run at each probe.
        model = cast(ZImageDiT, self.model)  # _reuses_prefix: the core model itself
        if self._probe_prefix is None:
            states, sigma = self.pool.batch(picks * 2, ["erase"] * len(picks) + ["anchor"] * len(picks))
            context, lengths = self.conditioner.encode([""] * len(picks) + [self.pool.anchors[p] for p, _ in picks])
            self._probe_prefix = model.prefix(states, sigma, context.to(states.device), lengths)
        empty, anchor = model.joint(self._probe_prefix).split(len(picks))
        teacher = self._teacher(picks)
        return preservation(empty, teacher["empty"], anchor, teacher["anchor"])

    def _reuses_prefix(self) -> bool:
        """Whether the student is the core model itself with adapters on the joint layers only."""
        return isinstance(self.model, ZImageDiT) and self.denoise is self.model and self._adapts_joint_layers_only()

    def _adapts_joint_layers_only(self) -> bool:
        """No adapter on the embeddings or refiners: what comes before the joint layers never changes in training."""
        return set(self.adapters.config.families) == {"layers"}

    def _keeps_segments(self) -> bool:
        """Whether student forwards start from the pool's kept refiner outputs (not while its states are replaced)."""
        return self.pool.segments is not None and self.config.cache and self._reuses_prefix()


def _erase_losses(velocity, target, capture: AttentionCapture | None) -> dict[str, torch.Tensor]:
    """L_erase of the erase prompt's velocity, and L_attn on its captured keyword attention when there is a capture."""
    losses = {"erase": velocity_mse(velocity, target)}
    if capture is not None:
        losses["attention"] = attention_suppression(capture.maps)
    return losses
