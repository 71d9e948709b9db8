"""The nano benchmark: methods × concepts × seeds under one training budget, resumable per cell.

Every trained method gets the same `steps`; each cell trains (or solves) one erasure file, picks its strength on
held-out prompts (as `erase` does) unless `strength_search` is off, and is scored by `protocol.measure_against`
against the base reference of its concept (computed once per concept and run). The state file (JSON, rewritten
atomically after every cell) holds the plan and one row per finished cell; a rerun skips finished cells, continues
a partially trained erasure file, and refuses a state file written under another plan. A method whose training
diverges (non-finite loss) is scored at its last finite adapters and its row says `diverged`.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ..common.files import atomic_write_json
from ..engine.erase_config import EraseConfig
from ..engine.trainer import TrainingDiverged
from .judges import named_nano_judge
from .protocol import EvaluationSettings, Reference, base_reference, measure_against
from .rendering import NanoRenderer, erasure_applied

STATE_FORMAT = 1
# name -> EraseConfig fields (None: not trained with EraseTrainer)
METHODS: dict[str, dict | None] = {
    "zerase": {"method": "zerase"},
    # issue 18's variants of the erase target (EraseConfig.erase_target): the paper's ESD on ∅ (the old default),
    # the mapped prompt alone (concept ablation, η_t = 0) and with a stronger push away from the concept (η_t = 2)
    "zerase-empty": {"method": "zerase", "erase_target": "empty"},
    "zerase-mapped": {"method": "zerase", "erase_target": "anchor", "target_eta": 0.0},
    "zerase-anchor2": {"method": "zerase", "erase_target": "anchor", "target_eta": 2.0},
    "esd": {"method": "esd"},
    "ac": {"method": "ac"},
    "eraseanything": {"method": "eraseanything"},
    "naive-esd": {"method": "naive-esd"},
    "zerase-fixed0": {"method": "zerase", "lambda_mode": "fixed", "fixed_lambda": 0.0},
    "zerase-fixed": {"method": "zerase", "lambda_mode": "fixed"},  # fixed_lambda from the plan
    "uce-text": None,
    "token-zeroing": None,
}
FULL_METHODS = tuple(name for name in METHODS if name not in ("zerase-empty", "zerase-mapped", "zerase-anchor2"))
TARGET_VARIANTS = ("zerase", "zerase-empty", "zerase-mapped", "zerase-anchor2")
# every value of the nano world's shapes, colours and patterns (`bench --concepts all`)
ALL_CONCEPTS = (
    "circle",
    "square",
    "triangle",
    "star",
    "cross",
    "diamond",
    "red",
    "green",
    "blue",
    "yellow",
    "purple",
    "orange",
    "plain",
    "striped",
    "dotted",
)
QUICK_METHODS = ("zerase", "esd", "naive-esd")
FULL_CONCEPTS = ("circle", "red", "striped")  # object (shape), attribute/abstraction (colour), style (pattern)
QUICK_CONCEPTS = ("circle",)
FULL_SEEDS = (0, 1)
QUICK_SEEDS = (0,)

EventFn = Callable[[str], None]


@dataclass(frozen=True)
class Cell:
    method: str
    concept: str
    seed: int
    overrides: tuple[tuple[str, float], ...] = ()  # extra EraseConfig fields (the ε/β sweep)

    @property
    def name(self) -> str:
        extra = "".join(f"-{key}{value:g}" for key, value in self.overrides)
        return f"{self.method}-{self.concept}-seed{self.seed}{extra}"


@dataclass(frozen=True)
class BenchPlan:
    methods: tuple[str, ...] = FULL_METHODS
    concepts: tuple[str, ...] = FULL_CONCEPTS
    seeds: tuple[int, ...] = FULL_SEEDS
    steps: int = 200  # the one training budget of every trained method
    fixed_lambda: float = 1.0  # λ of "zerase-fixed"
    strength_search: bool = True
    erase_overrides: dict = field(default_factory=dict)  # other EraseConfig fields for every trained cell
    sweep: tuple[tuple[str, tuple[float, ...]], ...] = ()  # ((field, values), ...): zerase cells per value
    evaluation: EvaluationSettings = field(default_factory=EvaluationSettings)
    judge: str = "evaluator"  # NANO_JUDGES: who scores the images

    def __post_init__(self) -> None:
        unknown = [method for method in self.methods if method not in METHODS]
        if unknown:
            raise ValueError(f"unknown benchmark method(s) {unknown}; choose from {list(METHODS)}")
        if (not self.methods and not self.sweep) or not self.concepts or not self.seeds:
            raise ValueError("a benchmark needs at least one method (or a sweep), one concept and one seed")
        from ..nano.prompts import attribute_of

        for concept in self.concepts:
            attribute_of(concept)
        EraseConfig(steps=self.steps, fixed_lambda=self.fixed_lambda, **self.erase_overrides)  # validates early

    def cells(self) -> list[Cell]:
        if self.sweep:
            return [
                Cell("zerase", concept, seed, ((name, float(value)),))
                for name, values in self.sweep
                for value in values
                for concept in self.concepts
                for seed in self.seeds
            ]
        return [
            Cell(method, concept, seed) for method in self.methods for concept in self.concepts for seed in self.seeds
        ]

    def identity(self) -> dict:
        """What must match for a state file to be resumed (the cells may grow or shrink)."""
        data = dataclasses.asdict(self)
        for name in ("methods", "concepts", "seeds", "sweep"):
            data.pop(name)
        return json.loads(json.dumps(data))

    def config(self, cell: Cell) -> EraseConfig:
        fields = dict(METHODS[cell.method] or {})
        if cell.method == "zerase-fixed":
            fields["fixed_lambda"] = self.fixed_lambda
        return EraseConfig(
            seed=cell.seed, steps=self.steps, **{**self.erase_overrides, **fields, **dict(cell.overrides)}
        )


def load_state(path: Path, plan: BenchPlan) -> dict:
    if not path.exists():
        return {"format": STATE_FORMAT, "plan": plan.identity(), "rows": {}, "base": {}}
    try:
        state = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"benchmark state {path} is not valid JSON ({error}); delete it to start over") from None
    if state.get("format") != STATE_FORMAT:
        raise ValueError(
            f"benchmark state {path} has format {state.get('format')!r}, expected {STATE_FORMAT}; "
            "delete it or pass another --json"
        )
    if state["plan"] != plan.identity():
        differing = sorted(
            key
            for key in set(state["plan"]) | set(plan.identity())
            if state["plan"].get(key) != plan.identity().get(key)
        )
        raise ValueError(
            f"benchmark state {path} was written with other settings ({differing}); pass another "
            f"--json to start a new run, or the same settings to resume this one"
        )
    return state


def _trained_file(world, plan: BenchPlan, cell: Cell, path: Path, on_event: EventFn):
    """Train (or resume, or reuse) the cell's erasure file; returns (info, wall seconds spent here or None,
    the divergence message or None)."""
    from ..formats.erasure_file import read_erasure
    from ..nano.erasure_runs import erase, erase_uce

    resume = None
    if path.exists():
        info = read_erasure(path)[0]
        if not info.partial:
            return info, None, None
        resume = path
        on_event(f"  resuming {path.name} at step {info.steps_done}/{info.steps_total}")
    started = time.monotonic()
    if cell.method == "uce-text":
        erase_uce(world, [cell.concept], path, seed=cell.seed, choose_strength=plan.strength_search)
    else:
        try:
            erase(world, [cell.concept], plan.config(cell), path, resume=resume, choose_strength=plan.strength_search)
        except TrainingDiverged as error:
            # A diverged method is a result, not a crash: score the last finite adapters (saved as a partial file).
            on_event(f"  {cell.name} diverged: {error}")
            return read_erasure(path)[0], time.monotonic() - started, str(error)
    seconds = None if resume else time.monotonic() - started
    return read_erasure(path)[0], seconds, None


def run_cell(
    world,
    renderer: NanoRenderer,
    judge,
    reference: Reference,
    plan: BenchPlan,
    cell: Cell,
    folder: Path,
    on_event: EventFn,
) -> dict:
    settings = plan.evaluation
    row: dict = {"method": cell.method, "concept": cell.concept, "seed": cell.seed, **dict(cell.overrides)}
    if cell.method == "token-zeroing":
        zeroing = NanoRenderer(world, settings.sampling, suppress_keywords=(cell.concept,))
        metrics = measure_against(zeroing, judge, reference, settings)
        row.update(train_seconds=0.0, loop_seconds=0.0, strength=1.0, file=None, final_lambda=None, diverged=None)
    else:
        path = folder / f"{cell.name}.safetensors"
        info, seconds, diverged = _trained_file(world, plan, cell, path, on_event)
        with erasure_applied(world, path, allow_partial=diverged is not None) as (_, strength):
            metrics = measure_against(renderer, judge, reference, settings)
        # train_seconds: wall time of making the file here (x_t pool, teacher cache, steps, strength search);
        # for a file resumed or made by an earlier run, the optimisation-loop time the file records
        row.update(
            train_seconds=seconds if seconds is not None else info.summary.get("train_seconds"),
            loop_seconds=info.summary.get("train_seconds"),
            strength=strength,
            file=str(path),
            final_lambda=info.summary.get("lambda"),
            diverged=diverged,
        )
    return {
        **metrics,
        **row,
        "base": reference.metrics,
        "collapse_reference": reference.metrics["collapse"],
        "calibration_rate": reference.calibration.rate if reference.calibration else None,
    }


def run_benchmark(
    world, plan: BenchPlan, state_path: Path, folder: Path | None = None, judge=None, on_event: EventFn | None = None
) -> dict:
    """Run every unfinished cell of `plan`, saving the state after each; returns the state."""
    on_event = on_event or (lambda message: None)
    folder = folder or state_path.with_name(state_path.stem + "-files")
    folder.mkdir(parents=True, exist_ok=True)
    state = load_state(state_path, plan)
    judge = judge or named_nano_judge(plan.judge, world)
    renderer = NanoRenderer(world, plan.evaluation.sampling)
    references: dict[str, Reference] = {}
    cells = plan.cells()
    for index, cell in enumerate(cells, 1):
        if cell.name in state["rows"]:
            continue
        if cell.concept not in references:
            on_event(f"[{index}/{len(cells)}] base reference for {cell.concept!r}")
            reference = base_reference(renderer, judge, cell.concept, plan.evaluation)
            references[cell.concept] = reference
            state["base"][cell.concept] = {
                **reference.metrics,
                "calibration": reference.calibration.to_dict() if reference.calibration else None,
            }
        on_event(f"[{index}/{len(cells)}] {cell.name}")
        started = time.monotonic()
        row = run_cell(world, renderer, judge, references[cell.concept], plan, cell, folder, on_event)
        row["cell_seconds"] = time.monotonic() - started
        state["rows"][cell.name] = row
        atomic_write_json(state, state_path)
        on_event(
            f"  Acc_e {row['acc_e']:.2f}  Acc_ir {row['acc_ir']:.2f}  collapse {row['collapse']:.3g}  "
            f"({row['cell_seconds']:.0f} s)"
        )
    atomic_write_json(state, state_path)
    return state
