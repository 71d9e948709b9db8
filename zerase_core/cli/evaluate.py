"""`python -m zerase_core evaluate --erasure F [--strength s] [--seeds N] --json out.json`.

Scores one erasure file against its base (the bundled nano model) on the concepts in its metadata and writes the
result object of `protocol.report` (a stable contract: `acc_e`, `acc_ir`, `h`, `collapse`, `attack_success`,
`attack_success_synonym|shuffle|vector`, on the erase prompts `erase_other` (+ `erase_other_<attribute>`),
`no_object`, `blank`, `h_content`; the same under "base" (same prompts and seeds), plus details), then prints a short
table.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

from ..common.files import atomic_write_json
from ..evaluation.concept_sets import SetSizes
from ..evaluation.judges import NANO_JUDGES, named_nano_judge
from ..evaluation.protocol import PROBES, EvaluationSettings, base_reference, measure_against, report
from ..evaluation.rendering import NanoRenderer, SamplingSettings, erasure_applied

ROWS = (
    ("acc_e", "Acc_e (erased concept detected, lower is better)"),
    ("acc_ir", "Acc_ir (unrelated prompts, higher is better)"),
    ("h", "H = Acc_ir - Acc_e"),
    ("erase_other", "erase prompts: other stated attributes kept"),
    ("erase_other_shape", "erase prompts: shape kept"),
    ("erase_other_colour", "erase prompts: colour kept"),
    ("erase_other_pattern", "erase prompts: pattern kept"),
    ("erase_other_background", "erase prompts: background kept"),
    ("no_object", "erase prompts: images with no object"),
    ("blank", "erase prompts: blank images (background only)"),
    ("h_content", "H_content = (1 - Acc_e) x other kept x (1 - no object)"),
    ("collapse", "collapse: FD to base keep set (base: seed noise floor)"),
    ("high_frequency", "high-frequency energy share of keep images"),
    ("attack_success_synonym", "attack success: synonym prompts"),
    ("attack_success_shuffle", "attack success: shuffled word order"),
    ("attack_success_vector", "attack success: concept-vector injection"),
    ("attack_success", "attack success: max over probes"),
)


def _cell(value) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def format_table(result: dict) -> str:
    """A markdown table: metric | base | erased, then the attack calibration line."""
    lines = ["| metric | base | erased |", "|---|---|---|"]
    lines += [f"| {label} | {_cell(result['base'][key])} | {_cell(result[key])} |" for key, label in ROWS]
    for concept, detail in result["per_concept"].items():
        calibration = detail["calibration"]
        if calibration:
            status = "reached" if calibration["reached"] else "NOT reached (strongest tried)"
            lines.append(
                f"\nvector attack on {concept!r}: strength {calibration['strength']:g} calibrated on the base, "
                f"base success {calibration['rate']:.2f} (target ≥ {calibration['target']:.2f}, {status})"
            )
    return "\n".join(lines)


def evaluate_file(
    world, path: Path, strength: float | None, settings: EvaluationSettings, judge=None, allow_other_base: bool = False
) -> dict:
    """Base references for the file's concepts, then the same measurements with the erasure attached."""
    from ..evaluation.judges import nano_judge
    from ..formats.erasure_file import read_erasure

    started = time.monotonic()
    judge = judge or nano_judge(world.evaluator)
    info, _, _ = read_erasure(path)
    if info.partial:
        raise ValueError(
            f"{path} is a partial erasure ({info.steps_done}/{info.steps_total} steps); finish it with "
            f"`python -m zerase_core erase --resume {path} --out {path}` before evaluating"
        )
    if not info.concepts:
        raise ValueError(f"{path} names no concepts in its metadata; nothing to evaluate")
    renderer = NanoRenderer(world, settings.sampling)
    concepts = tuple(info.concepts)
    references = {concept: base_reference(renderer, judge, concept, settings, concepts) for concept in concepts}
    with erasure_applied(world, path, strength, allow_other_base) as (info, used):
        erased = {concept: measure_against(renderer, judge, references[concept], settings) for concept in concepts}
    result = report(references, erased)
    result.update(
        method=info.method,
        strength=used,
        file=str(path),
        settings=settings.to_dict(),
        seconds=time.monotonic() - started,
    )
    return result


def command_evaluate(args) -> None:
    from ..nano.world import DEFAULT_CFG, DEFAULT_STEPS, NanoWorld
    from ..real.run import real_source

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.json is not None and args.json.suffix != ".json":
        raise ValueError(f"--json {args.json} must end in .json")
    source = real_source(args)
    if source is not None:
        return _evaluate_real(args, source)
    args.steps, args.cfg = args.steps or DEFAULT_STEPS, DEFAULT_CFG if args.cfg is None else args.cfg
    settings = EvaluationSettings(
        sampling=SamplingSettings(steps=args.steps, cfg=args.cfg),
        seeds=args.seeds,
        probe_names=tuple(args.probes),
        probes=not args.no_probes,
    )
    if args.quick:
        settings = replace(settings, sizes=SetSizes(erase=16, keep=32, probe=16))
    world = NanoWorld.load()
    result = evaluate_file(
        world,
        args.erasure,
        args.strength,
        settings,
        judge=named_nano_judge(args.judge, world),
        allow_other_base=args.allow_other_base,
    )
    result["judge"] = args.judge
    print(
        f"{result['method']} erasure of {', '.join(result['concepts'])} at strength {result['strength']:g}, "
        f"judge {args.judge} ({result['seconds']:.0f} s)"
    )
    print(format_table(result))
    if args.json is not None:
        print(f"wrote {atomic_write_json(result, args.json)}", file=sys.stderr)


def _evaluate_real(args, source) -> None:
    from ..common.progress import PhaseBars
    from ..real.evaluate import ClipJudge, evaluate_real, nudenet_detector
    from ..real.run import REAL_PHASES, device_of
    from ..real.world import sampler_preset

    preset = sampler_preset(source.kind, None)  # Z-Image: Turbo's 8 steps, cfg 1; Lumina-2: 25, cfg 4
    clip = ClipJudge(args.clip_checkpoint, args.clip_arch) if args.clip_checkpoint is not None else None
    bars = PhaseBars(units=REAL_PHASES)
    try:
        result = evaluate_real(
            source,
            args.erasure,
            args.strength,
            args.steps or preset["steps"],
            preset["cfg"] if args.cfg is None else args.cfg,
            args.size,
            args.seeds,
            args.keep_prompt,
            clip,
            nudenet_detector(),
            args.allow_other_base,
            bars,
            str(device_of(args)),
        )
    finally:
        bars.close()
    print(
        f"{result['method']} erasure of {', '.join(result['concepts'])} at strength {result['strength']:g} on "
        f"{source.dit}, judge {result['judge']} ({result['seconds']:.0f} s)"
    )
    print(format_table(result))
    print(
        f"pixel change erased - base: erase prompts {result['change']['erase']:.4f}, keep prompts "
        f"{result['change']['keep']:.4f}"
    )
    for name, reason in result["skipped"].items():
        print(f"skipped ({name}): {reason}")
    if args.json is not None:
        print(f"wrote {atomic_write_json(result, args.json)}", file=sys.stderr)


def add_probe_arguments(parser: argparse.ArgumentParser, attacks: str) -> None:
    """--probes and --no-probes (which skips `attacks`), as evaluate and bench take them."""
    parser.add_argument(
        "--probes",
        nargs="+",
        choices=list(PROBES),
        default=list(PROBES),
        help="which attacks to run (default all; synonym alone skips the costly vector calibration)",
    )
    parser.add_argument("--no-probes", action="store_true", help=f"skip {attacks}")


def add_evaluate_command(commands) -> argparse.ArgumentParser:
    from ..nano.world import DEFAULT_CFG, DEFAULT_STEPS

    parser = commands.add_parser("evaluate", help="score an erasure file: Acc_e, Acc_ir, H, collapse, attacks")
    parser.add_argument(
        "--erasure",
        type=Path,
        required=True,
        help="erasure file (.safetensors) made for the nano model (or for --model)",
    )
    parser.add_argument("--strength", type=float, help="erasure strength (default: the file's recommended one)")
    parser.add_argument("--seeds", type=int, default=1, help="images per prompt (default 1)")
    parser.add_argument("--json", type=Path, help="write the result object here (.json)")
    parser.add_argument("--steps", type=int, help=f"sampler steps (nano {DEFAULT_STEPS}, Z-Image 8, Lumina-2 25)")
    parser.add_argument("--cfg", type=float, help=f"guidance (nano {DEFAULT_CFG}, Z-Image 1, Lumina-2 4)")
    add_probe_arguments(parser, "the synonym/shuffle/vector attacks")
    parser.add_argument(
        "--quick", action="store_true", help="smaller prompt sets (16/32/16): a rough score in ~1/2 the time"
    )
    parser.add_argument("--allow-other-base", action="store_true", help="apply a file made for another base model")
    parser.add_argument("--threads", type=int, help="torch CPU threads (1 is fastest when the cores are busy)")
    parser.add_argument(
        "--judge",
        choices=NANO_JUDGES,
        default="evaluator",
        help="who looks at the images: the nano evaluator (also used by the strength search) or judge2 "
        "(trained independently)",
    )
    from ..real.evaluate import add_real_evaluate_arguments
    from ..real.run import add_model_arguments

    add_model_arguments(parser)
    add_real_evaluate_arguments(parser)
    parser.set_defaults(run=command_evaluate)
    return parser
