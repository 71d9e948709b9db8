"""`python -m zerase_core ...`: the core without ComfyUI.

Bad input exits with status 2 and a one-line message (no traceback).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

from .nano.world import DEFAULT_CFG, DEFAULT_STEPS, IMAGE_SIZE


class UsageError(ValueError):
    """Bad input: reported as one line, exit status 2."""


def _positive(kind):
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a valid {kind.__name__}") from None
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
        return value
    return parse


def _sampling_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--seed", type=int, default=0, help="seed of the first image (next ones: seed+1, ...)")
    parser.add_argument("--steps", type=_positive(int), default=DEFAULT_STEPS, help="Euler steps")
    parser.add_argument("--cfg", type=float, default=DEFAULT_CFG, help="guidance (1 = none, as Turbo)")
    parser.add_argument("--size", type=_positive(int), default=IMAGE_SIZE, help="image side in pixels")


def command_generate(args) -> None:
    from .grid import labelled_grid, save_png
    from .nano.world import NanoWorld
    world = NanoWorld.load()
    seeds = [args.seed + index for index in range(len(args.prompt))]
    images = world.generate(args.prompt, seeds, args.steps, args.cfg, args.size)
    labels = [f"{prompt} (seed {seed})" for prompt, seed in zip(args.prompt, seeds)]
    path = save_png(labelled_grid(images, labels, columns=min(4, len(images))), args.out)
    print(f"wrote {path}")


DEMO_PROMPTS = (
    "a red circle on a white background",
    "a striped blue square on a gray background",
    "a dotted yellow star on a black background",
    "a green triangle on a pink background",
    "a plain purple cross on a white background",
    "a striped orange diamond on a gray background",
    "a crimson disc on a pink background",
    "a dotted violet pentagram on a white background",
)


def command_demo(args) -> None:
    from .evaluate import verdicts
    from .grid import labelled_grid, save_png
    from .nano.world import NanoWorld
    started = time.monotonic()
    world = NanoWorld.load()
    prompts = list(DEMO_PROMPTS)
    images = world.generate(prompts, [args.seed + index for index in range(len(prompts))], args.steps, args.cfg)
    found = verdicts(images, world.evaluator)
    labels = [f"{prompt} -> judge: {v['pattern']} {v['colour']} {v['shape']} / {v['background']}"
              for prompt, v in zip(prompts, found)]
    path = save_png(labelled_grid(images, labels, columns=4, scale=3, label_lines=5), args.out)
    print(f"wrote {path} ({time.monotonic() - started:.0f} s)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m zerase_core", description="ZErase core (no ComfyUI needed)")
    commands = parser.add_subparsers(dest="command", required=True)
    generate = commands.add_parser("generate", help="text-to-image grid with the nano model")
    generate.add_argument("--prompt", action="append", required=True, help="repeat for several images")
    generate.add_argument("--out", type=Path, default=Path("generate.png"))
    _sampling_arguments(generate)
    generate.set_defaults(run=command_generate)
    demo = commands.add_parser("demo", help="the main job on the bundled nano model; writes demo.png")
    demo.add_argument("--out", type=Path, default=Path("demo.png"))
    _sampling_arguments(demo)
    demo.set_defaults(run=command_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    torch.set_num_threads(max(1, min(torch.get_num_threads(), 4)))
    try:
        args.run(args)
    except (UsageError, ValueError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return 0
