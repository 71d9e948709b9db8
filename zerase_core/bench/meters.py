"""What `bench --perf` and `--flops` read around a step: a clock split into the step's stages (wall time, or any
running count such as a FLOP counter's total) and a memory probe (peak RSS, CUDA peak allocation)."""

from __future__ import annotations

import os
import resource
import time
from contextlib import contextmanager

import torch


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
