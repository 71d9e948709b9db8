"""`python -m zerase_core ...`: the core without ComfyUI.

Bad input exits with status 2 and a one-line message (no traceback): a bad number or name, an unreadable input file,
an output that cannot be written (checked before any work) and any other I/O error. docs/safety.md lists the checks.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

from .common.files import check_output
from .common.limits import check_cfg, check_strength
from .nano.world import DEFAULT_CFG, DEFAULT_STEPS, IMAGE_SIZE

# tqdm's unit per progress phase (zerase_core.common.progress): sampler steps of a batch, cached chunks, optimizer steps,
# scored (strength, concept) pairs
PHASE_UNITS = {
    "x_t pool": "sampler step",
    "teacher cache": "chunk",
    "shuffle bank": "chunk",
    "train": "step",
    "strength search": "score",
    "compare": "part",
}


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


def command_generate(args) -> None:
    from .common.grid import labelled_grid, save_png
    from .nano.erasure_runs import attach_file
    from .real.run import real_source

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
    if len(strengths) > len(args.erasure or []):
        raise UsageError(f"{len(strengths)} --strength values for {len(args.erasure or [])} --erasure files")
    world = _load_world(args)
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
    labels = [f"{prompt} (seed {seed})" for prompt, seed in zip(args.prompt, seeds)]
    path = save_png(labelled_grid(images, labels, columns=min(4, len(images))), args.out)
    print(f"wrote {path}")


def _generate_real(args, source, strengths) -> None:
    from .common.grid import labelled_grid, save_png
    from .common.progress import PhaseBars
    from .real.run import REAL_PHASES, device_of, generate_real
    from .real.world import sampler_preset

    preset = sampler_preset(source.kind, args.preset)
    steps, cfg = args.steps or preset["steps"], check_cfg(preset["cfg"] if args.cfg is None else args.cfg, "--cfg")
    size = args.size or 1024
    height, width = args.height or size, args.width or size
    if len(strengths) > len(args.erasure or []):
        raise UsageError(f"{len(strengths)} --strength values for {len(args.erasure or [])} --erasure files")
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
    labels = [f"{prompt} (seed {seed})" for prompt, seed in zip(args.prompt, seeds)]
    path = save_png(labelled_grid(images, labels, columns=min(4, len(images))), args.out)
    print(f"wrote {path} ({width}x{height}, {steps} steps, cfg {cfg:g})")


def _load_world(args):
    from .nano.world import NanoWorld
    from .real.run import real_source

    if real_source(args) is not None:
        raise UsageError(
            "this command runs the nano model only; --model/--dit work with erase, erase-many,"
            " generate, evaluate and export-lora"
        )
    world = NanoWorld.load()
    if getattr(args, "base", None) is not None:
        from .model.checkpoint import load_dit

        dit = load_dit(args.base)
        width = world.text_encoder.config.width
        if dit.config.cap_feat_dim != width:
            raise UsageError(
                f"--base {args.base} expects caption features of width {dit.config.cap_feat_dim}; "
                f"the nano text encoder gives {width} (only nano-compatible DiTs run in the CLI)"
            )
        world.dit = dit
    return world


def erase_config_from_args(args):
    """The EraseConfig of `erase`'s training options (None for uce-text); `erase-many` shares them."""
    from .engine.erase_config import EraseConfig
    from .engine.settings import from_arguments

    if args.method == "uce-text":
        return None
    overrides = from_arguments(args, EraseConfig)  # the options generated from EraseConfig's settings
    if args.erase_target is not None:
        overrides["erase_target"] = args.erase_target
    if args.targets:
        overrides["slices"] = tuple(args.targets)
    return EraseConfig(method=args.method, seed=args.seed, **overrides)


def command_erase(args) -> None:
    from .common.progress import PhaseBars
    from .nano.erasure_runs import erase, erase_uce, read_resume
    from .nano.prompts import NanoConditioner, concept_words

    if args.out.suffix != ".safetensors":
        raise UsageError(f"--out {args.out} must end in .safetensors")
    check_output(args.out, "--out")
    from .real.run import real_source

    source = real_source(args)
    if source is not None:
        return _erase_real(args, source, erase_config_from_args(args))
    # unknown or non-attribute words fail here, before anything is loaded; `Star` is `star`, repeats count once
    args.concept = concept_words(args.concept or [])
    concepts, heading = args.concept, f"({args.method})"
    if args.resume is not None:
        info = read_resume(args.resume)[0]  # a finished or damaged file fails here, before any work
        concepts = list(info.concepts)
        heading = f"(resuming {args.resume} at step {info.steps_done} of {info.steps_total})"
    config = erase_config_from_args(args)
    if args.resolution is not None or args.prompt:
        raise UsageError(
            "--resolution and --prompt are for real models (--model/--dit); the nano model's erase "
            "prompts come from its vocabulary"
        )
    world = _load_world(args)
    started = time.monotonic()
    label = ", ".join(concepts)
    print(f"erasing {label} {heading}", file=sys.stderr)
    bars = PhaseBars(units=PHASE_UNITS, label=label)
    if config is None:
        try:
            path = erase_uce(
                world, args.concept, args.out, args.anchor, args.seed, not args.no_strength_search, progress=bars
            )
        finally:
            bars.close()
    else:
        for anchor in args.anchor or []:
            NanoConditioner(world.text_encoder).encode([anchor])

        def on_step(step, total, metrics):
            bars.set_postfix(
                L_er=f"{metrics.get('loss_erase', 0):.4f}",
                L_pr=f"{metrics.get('loss_preserve', 0):.4f}",
                lam=f"{metrics['lambda']:.3f}",
            )

        path = _training(
            bars,
            args.out,
            lambda: erase(
                world,
                args.concept or [],
                config,
                args.out,
                args.anchor,
                args.resume,
                on_step,
                choose_strength=not args.no_strength_search,
                progress=bars,
            ),
        )
    print(f"wrote {path} ({time.monotonic() - started:.1f} s)")


def _training(bars, out: Path, run):
    """`run()` (an erase that saves partial files to `out`) with its bars closed after; an interrupt or a diverged
    run says where the partial file is and how to go on."""
    from .engine.trainer import TrainingDiverged

    try:
        return run()
    except KeyboardInterrupt:
        bars.close()
        print(f"interrupted: partial erasure saved to {out}; continue with --resume {out}", file=sys.stderr)
        raise
    except TrainingDiverged as error:
        bars.close()
        raise UsageError(f"{error}; partial file with the last finite adapters saved to {out}") from None
    finally:
        bars.close()  # idempotent


def _erase_real(args, source, config) -> None:
    from .common.progress import PhaseBars
    from .real.run import DEFAULT_RESOLUTION, REAL_PHASES, device_of, erase_real, prepare_config, real_prompt_set

    if config is None:
        raise UsageError("--method uce-text runs on the nano model only; on a real model use zerase (default)")
    prompts = real_prompt_set(args.concept or ["resumed"], args.prompt, args.anchor)
    config = prepare_config(config, args.resolution or DEFAULT_RESOLUTION)
    label = ", ".join(prompts.keywords) if args.resume is None else str(args.resume)
    print(f"erasing {label} ({config.method}) from {source.dit}", file=sys.stderr)
    bars = PhaseBars(units={**PHASE_UNITS, **REAL_PHASES}, label=label)
    started = time.monotonic()

    def on_step(step, total, metrics):
        bars.set_postfix(
            L_er=f"{metrics.get('loss_erase', 0):.4f}",
            L_pr=f"{metrics.get('loss_preserve', 0):.4f}",
            lam=f"{metrics['lambda']:.3f}",
        )

    path = _training(
        bars,
        args.out,
        lambda: erase_real(
            source, prompts, config, args.out, on_step, bars, args.resume, str(device_of(args)), args.checkpointing
        ),
    )
    print(f"wrote {path} ({time.monotonic() - started:.1f} s)")


def command_export_lora(args) -> None:
    from .formats.erasure_file import export_stock_lora
    from .formats.stock_export import stock_path

    out = check_output(stock_path(args.file, args.out), "--out")
    from .real.run import check_base

    check_base(args)  # --model/--dit given: the file must be made for it
    print(f"wrote {export_stock_lora(args.file, out)}")


def command_demo(args) -> None:
    from .common.progress import PhaseBars
    from .demo import run_demo

    check_output(args.out, "--out")
    check_output(args.erasure_out, "--erasure-out")
    bars = PhaseBars(units=PHASE_UNITS, label=args.concept)
    try:
        path, seconds = run_demo(args.out, args.erasure_out, args.concept, args.seed, progress=bars)
    finally:
        bars.close()
    print(f"wrote {path} and {args.erasure_out} ({seconds:.0f} s)")


def build_parser() -> argparse.ArgumentParser:
    from .engine.erase_config import EraseConfig
    from .engine.methods import method_names
    from .engine.settings import add_arguments
    from .real.devices import add_checkpointing_argument
    from .real.run import add_model_arguments

    parser = argparse.ArgumentParser(prog="python -m zerase_core", description="ZErase core (no ComfyUI needed)")
    commands = parser.add_subparsers(dest="command", required=True)
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
    erase = commands.add_parser("erase", help="erase concept(s) from the nano model and write an erasure file")
    erase.add_argument("--concept", action="append", help="word to erase (repeat for joint multi-concept erasure)")
    erase.add_argument("--anchor", action="append", help="preservation prompt (default: generated from the concept)")
    erase.add_argument("--method", default="zerase", choices=list(method_names()))
    erase.add_argument(
        "--targets",
        choices=["q", "k", "v"],
        action="append",
        help="qkv slices (default q and k; q, k and v for colours)",
    )
    erase.add_argument(
        "--erase-target",
        choices=["anchor", "empty"],
        help="what erase prompts are trained to draw: the anchor prompt pushed away from the concept "
        "(default for zerase) or ESD on the empty prompt (the paper; default for the baselines)",
    )
    add_arguments(erase, EraseConfig)  # --steps, --lr, --rank, --eta, ...: EraseConfig's settings
    erase.add_argument("--seed", type=int, default=0)
    erase.add_argument("--out", type=Path, required=True, help="erasure file to write (.safetensors)")
    erase.add_argument("--resume", type=Path, help="partial erasure file to continue (settings come from it)")
    erase.add_argument("--base", type=Path, help="a nano-compatible DiT checkpoint to use instead of the bundled one")
    erase.add_argument(
        "--no-strength-search",
        action="store_true",
        help="skip choosing the recommended strength on held-out prompts (it is then 1.0)",
    )
    erase.add_argument(
        "--prompt",
        action="append",
        help="real models: an erase prompt containing the concept "
        "(repeatable; default: a few templates around each --concept)",
    )
    erase.add_argument("--resolution", type=int, help="real models: training resolution in pixels (default 512)")
    add_model_arguments(erase)
    add_checkpointing_argument(erase)
    erase.set_defaults(run=command_erase)
    from .many import add_erase_many_command

    add_erase_many_command(commands, erase)  # erase's options (model and training) + the list and the folder
    export = commands.add_parser("export-lora", help="write a stock-loadable LoRA for stream-pure erasures only")
    export.add_argument("file", type=Path)
    export.add_argument("--out", type=Path)
    add_model_arguments(export)
    export.set_defaults(run=command_export_lora)
    demo = commands.add_parser(
        "demo", help="the main job: erase a concept from the bundled nano model, compare (demo.png)"
    )
    demo.add_argument("--out", type=Path, default=Path("demo.png"))
    demo.add_argument("--erasure-out", type=Path, default=Path("demo-star.safetensors"))
    demo.add_argument("--concept", default="star")
    demo.add_argument("--seed", type=int, default=0)
    demo.set_defaults(run=command_demo)
    from .evaluation.command import add_evaluate_command

    add_evaluate_command(commands)
    from .evaluation.bench_command import add_bench_command

    add_bench_command(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "erase" and not args.concept and not args.resume:
        print("error: give at least one --concept (or --resume a partial file)", file=sys.stderr)
        return 2
    torch.set_num_threads(max(1, min(torch.get_num_threads(), 4)))
    try:
        args.run(args)
    except (UsageError, ValueError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except OSError as error:  # disk full, permissions changed while running, ...: one line, not a traceback
        where = f": {error.filename}" if error.filename else ""
        print(f"error: cannot read or write a file{where}: {error.strerror or error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return 0
