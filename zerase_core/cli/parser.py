"""`python -m zerase_core ...`: the core without ComfyUI.

Bad input exits with status 2 and a one-line message (no traceback): a bad number or name, an unreadable input file,
an output that cannot be written (checked before any work) and any other I/O error. docs/safety.md lists the checks.
"""

from __future__ import annotations

import argparse
import sys

import torch

from .demo import add_demo_command
from .erase import add_erase_command
from .export_lora import add_export_lora_command
from .generate import add_generate_command
from .shared import UsageError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m zerase_core", description="ZErase core (no ComfyUI needed)")
    commands = parser.add_subparsers(dest="command", required=True)
    add_generate_command(commands)
    erase = add_erase_command(commands)
    from .many.command import add_erase_many_command

    add_erase_many_command(commands, erase)  # erase's options (model and training) + the list and the folder
    add_export_lora_command(commands)
    add_demo_command(commands)
    from .evaluate import add_evaluate_command

    add_evaluate_command(commands)
    from .bench import add_bench_command

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
