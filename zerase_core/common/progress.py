"""Progress of the long phases (x_t pool, teacher cache, training, strength search, ...), without ComfyUI.

A progress callback is `progress(phase, done, total)`: called with done = 0 when a phase starts and again after each
unit of work; phases run one after another, and a phase may end below its total (the strength search stops at the
first strength that passes: it then reports done = total = the units it did). The CLI draws each phase as a tqdm bar
(`PhaseBars`); ZEraseTrain moves ComfyUI's progress bar from the same calls (nodes/comfy_bridge/progress.py).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

Progress = Callable[[str, int, int], None]


class PhaseCounter:
    """Counts the units of one phase and reports them to `progress` (does nothing without one)."""

    def __init__(self, progress: Progress | None, phase: str, total: int):
        self.progress, self.phase, self.total, self.done = progress, phase, max(int(total), 1), 0
        if progress is not None:
            progress(phase, 0, self.total)

    def advance(self, units: int = 1) -> None:
        self.done = min(self.done + units, self.total)
        if self.progress is not None:
            self.progress(self.phase, self.done, self.total)

    def finish(self) -> None:
        """The phase is over: a phase that stopped early reports done = total = the units done."""
        if self.done < self.total and self.progress is not None:
            self.total = max(self.done, 1)
            self.done = self.total
            self.progress(self.phase, self.done, self.total)


class PhaseBars:
    """A `Progress` that draws one tqdm bar (with rate and ETA) per phase, on stderr, titled `label: phase`;
    `set_postfix` labels the current bar (e.g. the losses of the training step)."""

    def __init__(self, file=None, units: dict[str, str] | None = None, label: str = ""):
        self.file = file or sys.stderr
        self.units = units or {}
        self.label = label  # what the work is about (the erased concepts), shown before each phase
        self.phase: str | None = None
        self.bar: Any = None  # the current phase's tqdm bar (tqdm ships no types); None between phases

    def __call__(self, phase: str, done: int, total: int) -> None:
        from tqdm import tqdm

        if phase != self.phase:
            self.close()
            self.phase = phase
            title = f"{self.label}: {phase}" if self.label else phase
            self.bar = tqdm(
                total=total,
                initial=done,
                desc=title,
                unit=self.units.get(phase, "it"),
                file=self.file,
                dynamic_ncols=True,
            )
            return
        if total != self.bar.total:
            self.bar.total = total
        self.bar.update(done - self.bar.n)

    def set_postfix(self, **values) -> None:
        if self.bar is not None:
            self.bar.set_postfix(values, refresh=False)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        self.bar, self.phase = None, None
