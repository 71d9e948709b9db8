"""`generate`: a labelled grid of text-to-image samples, with erasure files applied (nano, or a real model)."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..common.files import check_output
from ..common.limits import check_cfg, check_strength
from ..nano.world import DEFAULT_CFG, DEFAULT_STEPS, IMAGE_SIZE
from .shared import UsageError, load_world


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
    parser.add_argument("--steps", type=_positive(int), help=f"Euler steps (nano {DEFAULT_STEPS}; real: --preset's)")
    parser.add_argument(
        "--cfg", type=float, help=f"guidance (1 = none, as Turbo; nano {DEFAULT_CFG}; real: --preset's)"
    )
    parser.add_argument("--size", type=_positive(int), help=f"image side in pixels (nano {IMAGE_SIZE}; real 1024)")
    parser.add_argument("--width", type=_positive(int), help="real models: image width (default --size)")
    parser.add_argument("--height", type=_positive(int), help="real models: image height (default --size)")
    parser.add_argument(
        "--preset",
        choices=["turbo", "base", "lumina2"],
        help="real models: Z-Image-Turbo's 8 steps at cfg 1 (Z-Image's default), Z-Image's 50 steps"
        " at cfg 5, or Lumina-Image-2.0's 25 steps at cfg 4 (its default)",
    )


def add_generate_command(commands) -> None:
    from ..real.run import add_model_arguments

    generate = commands.add_parser("generate", help="text-to-image grid with the nano model")
    generate.add_argument("--prompt", action="append", required=True, help="repeat for several images")
    generate.add_argument("--out", type=Path, default=Path("generate.png"))
    generate.add_argument("--erasure", type=Path, action="append", help="erasure file(s) to apply (repeatable)")
    generate.add_argument(
        "--strength",
        type=float,
        action="append",
        help="strength per --erasure, in order (default: the file's recommended one; 1/N each for N files)",
    )
    generate.add_argument("--allow-other-base", action="store_true", help="apply a file made for another base model")
    generate.add_argument(
        "--allow-partial",
        action="store_true",
        help="apply a partial file (an interrupted erase) anyway; refused by default",
    )
    generate.add_argument(
        "--base", type=Path, help="a nano-compatible DiT checkpoint to use instead of the bundled one"
    )
    _sampling_arguments(generate)
    add_model_arguments(generate)
    generate.set_defaults(run=command_generate)


def _check_strength_count(strengths: list[float], args) -> None:
    if len(strengths) > len(args.erasure or []):
        raise UsageError(f"{len(strengths)} --strength values for {len(args.erasure or [])} --erasure files")


def _write_grid(images, args, seeds: list[int]) -> Path:
    from ..common.grid import labelled_grid, save_png

    labels = [f"{prompt} (seed {seed})" for prompt, seed in zip(args.prompt, seeds, strict=True)]
    return save_png(labelled_grid(images, labels, columns=min(4, len(images))), args.out)


def command_generate(args) -> None:
    from ..nano.erasure_runs import attach_file
    from ..real.run import real_source

    check_output(args.out, "--out")
    strengths = [check_strength(value, "--strength") for value in args.strength or []]
    source = real_source(args)
    if source is not None:
        return _generate_real(args, source, strengths)
    if args.width is not None or args.height is not None:
        raise UsageError("--width/--height are for real models; the nano model draws square images (--size)")
    args.steps, args.cfg = args.steps or DEFAULT_STEPS, DEFAULT_CFG if args.cfg is None else args.cfg
    args.size = args.size or IMAGE_SIZE
    check_cfg(args.cfg, "--cfg")
    _check_strength_count(strengths, args)
    world = load_world(args)
    seeds = [args.seed + index for index in range(len(args.prompt))]
    edits = []
    try:
        for index, path in enumerate(args.erasure or []):
            strength = strengths[index] if index < len(strengths) else None
            edit, info = attach_file(world, path, strength, args.allow_other_base, args.allow_partial)
            edits.append((edit, info))
        if len(edits) > 1:  # several erasures: 1/N of each file's own strength unless given (paper §2.9)
            for index, (edit, info) in enumerate(edits):
                if index >= len(strengths):
                    edit.set_strength(info.recommended_strength / len(edits))
        images = world.generate(args.prompt, seeds, args.steps, args.cfg, args.size)
    finally:
        for edit, _ in reversed(edits):
            edit.detach()
    print(f"wrote {_write_grid(images, args, seeds)}")


def _generate_real(args, source, strengths) -> None:
    from ..common.progress import PhaseBars
    from ..real.run import REAL_PHASES, device_of, generate_real
    from ..real.world import sampler_preset

    preset = sampler_preset(source.kind, args.preset)
    steps, cfg = args.steps or preset["steps"], check_cfg(preset["cfg"] if args.cfg is None else args.cfg, "--cfg")
    size = args.size or 1024
    height, width = args.height or size, args.width or size
    _check_strength_count(strengths, args)
    seeds = [args.seed + index for index in range(len(args.prompt))]
    bars = PhaseBars(units=REAL_PHASES)
    try:
        images = generate_real(
            source,
            args.prompt,
            seeds,
            steps,
            cfg,
            height,
            width,
            args.erasure or [],
            strengths,
            args.allow_other_base,
            args.allow_partial,
            progress=bars,
            device=str(device_of(args)),
        )
    finally:
        bars.close()
    print(f"wrote {_write_grid(images, args, seeds)} ({width}x{height}, {steps} steps, cfg {cfg:g})")
