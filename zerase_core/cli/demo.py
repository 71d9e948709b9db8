"""`demo`: erase a concept from the bundled nano model and write the before/after comparison (`zerase_core.demo`)."""

from __future__ import annotations

from pathlib import Path

from ..common.files import check_output
from .shared import PHASE_UNITS


def add_demo_command(commands) -> None:
    demo = commands.add_parser(
        "demo", help="the main job: erase a concept from the bundled nano model, compare (demo.png)"
    )
    demo.add_argument("--out", type=Path, default=Path("demo.png"))
    demo.add_argument("--erasure-out", type=Path, default=Path("demo-star.safetensors"))
    demo.add_argument("--concept", default="star")
    demo.add_argument("--seed", type=int, default=0)
    demo.set_defaults(run=command_demo)


def command_demo(args) -> None:
    from ..common.progress import PhaseBars
    from ..demo import run_demo

    check_output(args.out, "--out")
    check_output(args.erasure_out, "--erasure-out")
    bars = PhaseBars(units=PHASE_UNITS, label=args.concept)
    try:
        path, seconds = run_demo(args.out, args.erasure_out, args.concept, args.seed, progress=bars)
    finally:
        bars.close()
    print(f"wrote {path} and {args.erasure_out} ({seconds:.0f} s)")
