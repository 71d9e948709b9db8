"""What a training step changes, snapshot before it and put back if the step does not finish.

Resume is bit-identical only if a partial file holds the state of a step boundary. A Ctrl-C (or any exception) can
land anywhere inside `EraseTrainer.train_step`: after the word orders were drawn (the numpy generator moved), inside
`optimizer.step()` (some moments updated), or in the λ probe after the adapters moved. `StepSnapshot` records, at
the start of a step, everything the next step depends on that the step changes in place: the adapter weights, the
optimizer state (moments and step counts), the numpy generator (which also drives the shuffle bank's picks and the
pool position draws), λ, the probe loss, the step counter and the history length. `restore()` puts them back, so
the trainer is exactly as it was before the step and the partial file saved next continues like an uninterrupted run.

`TrainerState` is what a partial file keeps of the trainer beside the adapters, and how it is put back.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass

import numpy
import torch

from ..adapters.gated import AdapterSet
from .lagrangian import LambdaController


def _clone_optimizer_state(optimizer: torch.optim.Optimizer) -> dict:
    return {
        parameter: {
            name: value.detach().clone() if torch.is_tensor(value) else copy.deepcopy(value)
            for name, value in values.items()
        }
        for parameter, values in optimizer.state.items()
    }


@dataclass
class StepRecord:
    step: int
    metrics: Mapping[str, float]  # a dict, or trainer_checks.StepMetrics until the step is checked


class TrainerState:
    """EraseTrainer's resume state (a base class of it; the attributes below are set by `EraseTrainer.__init__`): the
    optimizer moments as tensors, the step, λ, the numpy generator and the history as metadata."""

    adapters: AdapterSet
    optimizer: torch.optim.Optimizer
    rng: numpy.random.Generator
    step: int
    lam: float
    history: list[StepRecord]
    _probe_loss: torch.Tensor | None
    lagrangian: LambdaController

    def state_tensors(self) -> dict[str, torch.Tensor]:
        tensors = {}
        for index, values in self.optimizer.state_dict()["state"].items():
            for name, value in values.items():
                tensors[f"optimizer.{index}.{name}"] = value.detach().clone()
        return tensors

    def state_metadata(self) -> dict:
        return {
            "step": self.step,
            "lambda": self.lam,
            "rng": self.rng.bit_generator.state,
            "history": [[record.step, dict(record.metrics)] for record in self.history],
        }

    def restore(self, adapter_tensors: dict, state_tensors: dict, metadata: dict) -> None:
        self.adapters.import_tensors(adapter_tensors)
        state: dict[int, dict[str, torch.Tensor]] = {}
        for name, value in state_tensors.items():
            _, index, key = name.split(".", 2)
            state.setdefault(int(index), {})[key] = value
        optimizer_state = self.optimizer.state_dict()
        optimizer_state["state"] = state
        self.optimizer.load_state_dict(optimizer_state)
        self.step = int(metadata["step"])
        self.lam = float(metadata["lambda"])
        self.rng.bit_generator.state = metadata["rng"]
        self.history = [StepRecord(int(step), metrics) for step, metrics in metadata["history"]]
        self._probe_loss = None


class StepSnapshot:
    """The trainer's step-dependent state at the start of one step (a copy of the adapters and optimizer moments)."""

    def __init__(self, trainer):
        self.trainer = trainer
        self.adapters = {name: tensor.detach().clone() for name, tensor in trainer.adapters.state_dict().items()}
        self.optimizer = _clone_optimizer_state(trainer.optimizer)
        self.rng = copy.deepcopy(trainer.rng.bit_generator.state)
        # λ as its tensor, not read back: a snapshot is taken inside every step (update() replaces the tensor)
        self.lam, self.probe_loss = trainer.lagrangian.tensor, trainer._probe_loss
        self.step, self.history = trainer.step, len(trainer.history)

    def restore(self) -> None:
        trainer = self.trainer
        with torch.no_grad():
            trainer.adapters.load_state_dict(self.adapters)
        trainer.optimizer.state.clear()
        trainer.optimizer.state.update(self.optimizer)
        trainer.optimizer.zero_grad(set_to_none=True)
        trainer.rng.bit_generator.state = self.rng
        trainer.lagrangian.tensor, trainer._probe_loss = self.lam, self.probe_loss
        trainer.step = self.step
        del trainer.history[self.history :]
