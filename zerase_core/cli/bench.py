"""`python -m zerase_core bench`: the nano benchmark, or with `--perf` the speed benchmark.

`bench [--quick] [--json F] [--budget STEPS] [--sweep epsilon|beta|both --plot P] [--perf ...]` runs (or resumes)
the nano benchmark and prints its markdown tables. `--quick` is zerase, esd and naive-esd on one shape with one seed,
strength 1 (no held-out strength search) and smaller prompt sets: a ≤ 10 min smoke run, not the table of record.
`--perf` hands over to `zerase_core.bench.perf` when that module is installed.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import sys
from pathlib import Path

import torch

from ..engine.erase_config import EraseConfig
from ..engine.settings import parse_assignment
from ..evaluation.benchmark import (
    ALL_CONCEPTS,
    FULL_CONCEPTS,
    FULL_METHODS,
    FULL_SEEDS,
    METHODS,
    QUICK_CONCEPTS,
    QUICK_METHODS,
    QUICK_SEEDS,
    BenchPlan,
    run_benchmark,
)
from ..evaluation.concept_sets import SetSizes
from ..evaluation.judges import NANO_JUDGES
from ..evaluation.plot import Panel, line_chart
from ..evaluation.protocol import EvaluationSettings
from ..evaluation.tables import method_concept_table, method_table, sweep_series, sweep_table, targets_table
from .evaluate import add_probe_arguments

SWEEPS = {"epsilon": (0.0, 1e-4, 1e-3, 1e-2, 1e-1, 1.0), "beta": (0.01, 0.05, 0.1, 0.5, 1.0)}
QUICK_SIZES = SetSizes(erase=16, keep=32, probe=16)


def plan_from_arguments(args) -> BenchPlan:
    quick = args.quick
    evaluation = EvaluationSettings(
        seeds=args.eval_seeds,
        probes=not (args.no_probes or args.sweep),
        probe_names=tuple(args.probes),
        sizes=QUICK_SIZES if quick else SetSizes(),
    )
    sweep: tuple[tuple[str, tuple[float, ...]], ...] = ()
    if args.sweep:
        names = ("epsilon", "beta") if args.sweep == "both" else (args.sweep,)
        sweep = tuple((name, SWEEPS[name]) for name in names)
    return BenchPlan(
        methods=tuple(args.methods or (QUICK_METHODS if quick else FULL_METHODS)),
        concepts=_concepts(args.concepts) or (QUICK_CONCEPTS if quick or args.sweep else FULL_CONCEPTS),
        seeds=tuple(args.seeds or (QUICK_SEEDS if quick else FULL_SEEDS)),
        steps=args.budget,
        fixed_lambda=args.fixed_lambda,
        strength_search=not (quick or args.no_strength_search),
        sweep=sweep,
        erase_overrides=dict(args.set or ()),
        evaluation=evaluation,
        judge=args.judge,
    )


def _concepts(names: list[str] | None) -> tuple[str, ...]:
    """--concepts, with "all" for every shape, colour and pattern."""
    return tuple(concept for name in names or () for concept in (ALL_CONCEPTS if name == "all" else (name,)))


def tables(state: dict, plan: BenchPlan) -> str:
    rows = [state["rows"][cell.name] for cell in plan.cells() if cell.name in state["rows"]]
    if plan.sweep:
        return "\n\n".join(sweep_table(rows, name) for name, _ in plan.sweep)
    bases = {concept: state["base"][concept] for concept in plan.concepts if concept in state["base"]}
    return f"{method_concept_table(rows, bases)}\n\n{method_table(rows)}\n\n{targets_table(rows)}"


def sweep_plot(state: dict, plan: BenchPlan, path: Path) -> Path:
    rows = [state["rows"][cell.name] for cell in plan.cells() if cell.name in state["rows"]]
    panels = []
    for name, _ in plan.sweep:
        values, series = sweep_series(rows, name)
        if values:  # ASCII titles: Pillow's default font may lack Greek letters
            panels.append(
                Panel(
                    f"Z-Erase {name} sweep ({', '.join(plan.concepts)})",
                    tuple(f"{value:g}" for value in values),
                    series,
                )
            )
    return line_chart(panels, path)


def command_bench(args) -> None:
    if getattr(args, "flops", False):
        if args.perf_missing:
            raise ValueError(f"bench --flops is unavailable: {args.perf_missing}")
        from ..bench.perf_flops import run_flops

        run_flops(args)
        return
    if args.perf:
        if args.perf_missing:
            raise ValueError(f"bench --perf is unavailable: {args.perf_missing}")
        from ..bench.perf import run_perf

        run_perf(args)
        return
    if args.plot is not None and not args.sweep:
        raise ValueError("--plot draws the ε/β sweep; add --sweep epsilon|beta|both")
    if args.threads:
        torch.set_num_threads(args.threads)
    plan = plan_from_arguments(args)
    default = "bench-sweep.json" if args.sweep else "bench-quick.json" if args.quick else "bench.json"
    state_path = Path(args.json) if args.json else Path("runs") / default
    if state_path.suffix != ".json":
        raise ValueError(f"--json {state_path} must end in .json")
    from ..nano.world import NanoWorld

    world = NanoWorld.load()
    print(f"{len(plan.cells())} cells, state in {state_path} (rerun the same command to resume)", file=sys.stderr)
    state = run_benchmark(
        world, plan, state_path, args.workdir, on_event=lambda message: print(message, file=sys.stderr, flush=True)
    )
    print(tables(state, plan))
    if args.sweep:
        plot = sweep_plot(state, plan, args.plot or state_path.with_suffix(".png"))
        print(f"wrote {plot}", file=sys.stderr)


def _add_perf_arguments(parser: argparse.ArgumentParser) -> str | None:
    """Let zerase_core.bench.perf declare its options first; returns why it is unavailable, or None."""
    if importlib.util.find_spec("..bench.perf", __package__) is None:
        return "zerase_core.bench.perf is not installed"
    try:
        from ..bench.perf import add_perf_arguments
    except ImportError as error:  # a broken perf module must not take the other commands down with it
        return f"zerase_core.bench.perf failed to import: {error}"
    add_perf_arguments(parser)
    return None


def _add(parser: argparse.ArgumentParser, *flags: str, **options) -> None:
    """Add an option unless zerase_core.bench.perf already declared it (--json, --threads: same meaning in both
    modes)."""
    with contextlib.suppress(argparse.ArgumentError):
        parser.add_argument(*flags, **options)


def add_bench_command(commands) -> argparse.ArgumentParser:
    parser = commands.add_parser("bench", help="nano benchmark: methods × concepts × seeds (resumable), ε/β sweep")
    perf_missing = _add_perf_arguments(parser)
    _add(parser, "--perf", action="store_true", help="timing benchmark of the engine (zerase_core.bench.perf)")
    parser.add_argument("--quick", action="store_true", help="zerase, esd, naive-esd × 1 shape × 1 seed (≤ 10 min)")
    _add(
        parser,
        "--json",
        help="state/result file (default runs/bench.json, runs/bench-quick.json, runs/bench-sweep.json)",
    )
    parser.add_argument("--workdir", type=Path, help="erasure files (default: <json stem>-files next to the JSON)")
    parser.add_argument("--methods", nargs="+", choices=list(METHODS), help=f"default: all ({len(METHODS)})")
    parser.add_argument(
        "--concepts", nargs="+", help=f"default: {' '.join(FULL_CONCEPTS)}; all: every shape, colour and pattern"
    )
    parser.add_argument(
        "--judge",
        choices=NANO_JUDGES,
        default="evaluator",
        help="who scores the images (judge2: independent of the strength search's evaluator)",
    )
    parser.add_argument(
        "--seeds", nargs="+", type=int, help=f"training seeds (default: {' '.join(map(str, FULL_SEEDS))})"
    )
    parser.add_argument("--budget", type=int, default=200, help="training steps of every trained method (one budget)")
    parser.add_argument("--fixed-lambda", type=float, default=1.0, help="λ of the zerase-fixed ablation")
    parser.add_argument("--no-strength-search", action="store_true", help="apply every erasure at strength 1")
    parser.add_argument(
        "--set",
        action="append",
        type=lambda text: parse_assignment(text, EraseConfig),
        metavar="NAME=VALUE",
        help="an erase setting for every trained cell (repeatable), e.g. --set probe_size=1; part of the state "
        "file's settings, so give it another --json",
    )
    parser.add_argument("--eval-seeds", type=int, default=1, help="images per evaluation prompt")
    add_probe_arguments(parser, "the attacks")
    parser.add_argument(
        "--sweep", choices=["epsilon", "beta", "both"], help="Z-Erase ε/β ablation instead of the methods"
    )
    parser.add_argument("--plot", type=Path, help="sweep plot (.png; default: the JSON's name with .png)")
    _add(parser, "--threads", type=int, help="torch CPU threads (1 is fastest when the cores are busy)")
    parser.set_defaults(run=command_bench, perf_missing=perf_missing)
    return parser
