"""`erase`: train (or solve, for uce-text) an erasure of concept(s) and write its file; nano or a real model."""

from __future__ import annotations

import sys
import time
from pathlib import Path

from ..common.files import check_output
from .shared import PHASE_UNITS, UsageError, load_world


def add_erase_command(commands):
    """Register `erase` and return its parser (erase-many takes its options)."""
    from ..engine.erase_config import EraseConfig
    from ..engine.methods import method_names
    from ..engine.settings import add_arguments
    from ..real.devices import add_checkpointing_argument
    from ..real.run import add_model_arguments

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
    return erase


def erase_config_from_args(args):
    """The EraseConfig of `erase`'s training options (None for uce-text); `erase-many` shares them."""
    from ..engine.erase_config import EraseConfig
    from ..engine.settings import from_arguments

    if args.method == "uce-text":
        return None
    overrides = from_arguments(args, EraseConfig)  # the options generated from EraseConfig's settings
    if args.erase_target is not None:
        overrides["erase_target"] = args.erase_target
    if args.targets:
        overrides["slices"] = tuple(args.targets)
    return EraseConfig(method=args.method, seed=args.seed, **overrides)


def command_erase(args) -> None:
    from ..common.progress import PhaseBars
    from ..nano.erasure_runs import erase, erase_uce, read_resume
    from ..nano.prompts import NanoConditioner, concept_words

    if args.out.suffix != ".safetensors":
        raise UsageError(f"--out {args.out} must end in .safetensors")
    check_output(args.out, "--out")
    from ..real.run import real_source

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
    world = load_world(args)
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
                _show_losses(bars),
                choose_strength=not args.no_strength_search,
                progress=bars,
            ),
        )
    print(f"wrote {path} ({time.monotonic() - started:.1f} s)")


def _show_losses(bars):
    """The `on_step` that shows a step's losses and λ on the progress bars."""

    def on_step(step, total, metrics):
        bars.set_postfix(
            L_er=f"{metrics.get('loss_erase', 0):.4f}",
            L_pr=f"{metrics.get('loss_preserve', 0):.4f}",
            lam=f"{metrics['lambda']:.3f}",
        )

    return on_step


def _training(bars, out: Path, run):
    """`run()` (an erase that saves partial files to `out`) with its bars closed after; an interrupt or a diverged
    run says where the partial file is and how to go on."""
    from ..engine.trainer import TrainingDiverged

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
    from ..common.progress import PhaseBars
    from ..real.run import DEFAULT_RESOLUTION, REAL_PHASES, device_of, erase_real, prepare_config, real_prompt_set

    if config is None:
        raise UsageError("--method uce-text runs on the nano model only; on a real model use zerase (default)")
    prompts = real_prompt_set(args.concept or ["resumed"], args.prompt, args.anchor)
    config = prepare_config(config, args.resolution or DEFAULT_RESOLUTION)
    label = ", ".join(prompts.keywords) if args.resume is None else str(args.resume)
    print(f"erasing {label} ({config.method}) from {source.dit}", file=sys.stderr)
    bars = PhaseBars(units={**PHASE_UNITS, **REAL_PHASES}, label=label)
    started = time.monotonic()
    path = _training(
        bars,
        args.out,
        lambda: erase_real(
            source,
            prompts,
            config,
            args.out,
            _show_losses(bars),
            bars,
            args.resume,
            str(device_of(args)),
            args.checkpointing,
        ),
    )
    print(f"wrote {path} ({time.monotonic() - started:.1f} s)")
