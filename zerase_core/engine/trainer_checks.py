"""What a training step leaves on the device for later: its metrics and its finiteness, read at progress points.

A step reads nothing back to the host (on a GPU each `.item()`, `float(tensor)` or `bool(tensor)` waits for the
queue to drain and leaves the GPU idle while the host enqueues the rest of the step). So a step records its metrics
as device tensors (`StepMetrics`, read when first used) and its finiteness checks as device bools (`PendingCheck`);
`read_pending` reads every pending step with one transfer, at a progress point chosen by the trainer.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import torch

from ..adapters.gated import AdapterSet
from .resume_state import StepRecord, StepSnapshot


class StepMetrics(Mapping[str, float]):
    """One step's metrics as 0-dim device tensors, read as Python floats on first access (one transfer)."""

    def __init__(self, tensors: dict[str, torch.Tensor]):
        self._tensors = tensors
        self._values: dict[str, float] | None = None

    def tensors(self) -> dict[str, torch.Tensor]:
        return dict(self._tensors)

    def settle(self, values: list[float]) -> None:
        """Set the read values (in the order of `tensors()`), read by `read_pending` with other steps'."""
        self._values = dict(zip(self._tensors, values, strict=True))

    def _read(self) -> dict[str, float]:
        if self._values is None:
            self._values = dict(zip(self._tensors, _read_floats(list(self._tensors.values())), strict=True))
        return self._values

    def __getitem__(self, name: str) -> float:
        return self._read()[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._tensors)

    def __len__(self) -> int:
        return len(self._tensors)

    def __repr__(self) -> str:
        return f"StepMetrics({self._read()!r})"


@dataclass
class PendingCheck:
    """One step not yet checked: its record, its snapshot (the trainer at its start), the last finite adapters
    before and after it (what a divergence restores), and whether its loss and its new weights were finite."""

    record: StepRecord
    snapshot: StepSnapshot
    finite_before: dict[str, torch.Tensor] | None
    finite_after: dict[str, torch.Tensor]
    loss_finite: torch.Tensor
    weights_finite: torch.Tensor


def read_pending(pending: list[PendingCheck]) -> list[tuple[bool, bool]]:
    """(loss finite, weights finite) of each pending step, its metrics settled as floats: one transfer for all."""
    tensors: list[torch.Tensor] = []
    for check in pending:
        metrics = check.record.metrics
        named = metrics.tensors() if isinstance(metrics, StepMetrics) else {}
        tensors += [check.loss_finite, check.weights_finite, *named.values()]
    values = _read_floats(tensors)
    flags, start = [], 0
    for check in pending:
        metrics = check.record.metrics
        count = len(metrics) if isinstance(metrics, StepMetrics) else 0
        flags.append((bool(values[start]), bool(values[start + 1])))
        if isinstance(metrics, StepMetrics):
            metrics.settle(values[start + 2 : start + 2 + count])
            check.record.metrics = dict(metrics)
        start += 2 + count
    return flags


def _read_floats(tensors: list[torch.Tensor]) -> list[float]:
    """0-dim tensors -> Python floats, float32 and float64 exactly, in one transfer (float64 on the first one's
    device)."""
    if not tensors:
        return []
    device = tensors[0].device
    return torch.stack([tensor.detach().to(device, torch.float64).reshape(()) for tensor in tensors]).tolist()


class TrainingDiverged(RuntimeError):
    """A non-finite loss: the adapters were restored to the last finite state."""


class FiniteChecks:
    """EraseTrainer's progress points (a base class of it; the attributes below are set by `EraseTrainer`)."""

    _pending: list[PendingCheck]
    _last_finite: dict | None
    adapters: AdapterSet

    def check_finite(self) -> None:
        """A progress point: read the steps run since the last one (one transfer) and raise TrainingDiverged at the
        first with a non-finite loss or non-finite new adapter weights, as its message says."""
        pending, self._pending = self._pending, []
        if not pending:
            return
        for check, (loss_finite, weights_finite) in zip(pending, read_pending(pending), strict=True):
            if loss_finite and weights_finite:
                continue
            check.snapshot.restore()  # the trainer at the start of the failed step: it and the later ones undone
            step = check.snapshot.step
            if not loss_finite:
                if check.finite_before is not None:
                    self.adapters.load_state_dict(check.finite_before)
                self._last_finite = check.finite_before
                raise TrainingDiverged(
                    f"non-finite loss at step {step + 1}; adapters restored to the state of "
                    f"step {max(0, step - 1)}, the last with a finite loss"
                )
            self._last_finite = check.finite_after  # the adapters at the step's start, as restored
            raise TrainingDiverged(f"non-finite adapter weights after step {step + 1}; restored the last finite state")
