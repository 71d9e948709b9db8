"""erase-many's status files (DIR/erase-many/): one per entry, and each rank's progress (rank-R.json, stderr lines)."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from ...common.files import atomic_write_json
from ...concept_list import ConceptEntry
from ...engine.distributed import Launch

STATUS_FOLDER = "erase-many"


def status_folder(out_dir: Path) -> Path:
    return out_dir / STATUS_FOLDER


def write_status(out_dir: Path, record: dict) -> None:
    atomic_write_json(record, status_folder(out_dir) / f"{record['name']}.json")


def _overall(out_dir: Path, entries: list[ConceptEntry]) -> tuple[int, int]:
    """(finished, failed) over the whole list, from the status files every rank writes."""
    finished = failed = 0
    for entry in entries:
        path = status_folder(out_dir) / f"{entry.name}.json"
        try:
            status = json.loads(path.read_text())["status"]
        except (OSError, ValueError, KeyError):
            continue
        finished += status in ("done", "resumed", "skipped")
        failed += status == "failed"
    return finished, failed


class Progress:
    """One rank's progress lines (stderr) and its DIR/erase-many/rank-R.json."""

    def __init__(self, place: Launch, out_dir: Path, entries: list[ConceptEntry], mine: list, every: float):
        self.place, self.out_dir, self.entries, self.mine, self.every = place, out_dir, entries, mine, every
        self.last = 0.0
        self.state: dict[str, Any] = {  # rank-R.json's record
            "rank": place.rank,
            "pid": os.getpid(),
            "world": place.world,
            "assigned": [entry.name for entry in mine],
            "finished": 0,
            "failed": 0,
            "current": None,
            "step": 0,
            "steps": 0,
        }

    def _write(self) -> None:
        atomic_write_json(
            {**self.state, "time": time.time()}, status_folder(self.out_dir) / f"rank-{self.place.rank}.json"
        )

    def line(self, text: str) -> None:
        print(f"[{self.place.label()}] {text}", file=sys.stderr, flush=True)

    def start(self, index: int, entry: ConceptEntry) -> None:
        self.state.update(current=entry.name, step=0, steps=0)
        self._write()
        self.line(f"{entry.name} ({index + 1}/{len(self.mine)} on this rank): {' + '.join(entry.concepts)}")

    def step(self, name: str, step: int, total: int, metrics: dict) -> None:
        self.state.update(step=step, steps=total)
        now = time.monotonic()
        if now - self.last >= self.every or step == total:
            self.last = now
            self._write()
            self.line(
                f"{name}: step {step}/{total}  L_er {metrics.get('loss_erase', 0):.4f}  "
                f"L_pr {metrics.get('loss_preserve', 0):.4f}  λ {metrics.get('lambda', 0):.3f}"
            )

    def finish(self, record: dict) -> None:
        key = "failed" if record["status"] == "failed" else "finished"
        self.state[key] += 1
        self.state.update(current=None)
        self._write()
        finished, failed = _overall(self.out_dir, self.entries)
        detail = f": {record['error']}" if record["status"] == "failed" else f" ({record['seconds']:.1f} s)"
        self.line(
            f"{record['name']} {record['status']}{detail}; this rank {self.state['finished'] + self.state['failed']}"
            f"/{len(self.mine)}; overall {finished + failed}/{len(self.entries)} ({failed} failed)"
        )
