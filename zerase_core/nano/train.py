"""Reproduce the shipped nano-world weights: `python -m zerase_core.nano.train {codec,evaluator,dit} [options]`.

Order: codec (≈ 8 min), evaluator (needs the codec, ≈ 5 min), dit (needs the codec, ≈ 1 h in resumable chunks).
Every part trains in time-limited chunks (`--seconds`) towards a total (`--steps`), checkpoints to `--out` and
continues with `--resume`; the final chunk exports the weights into zerase_core/nano/weights/.
"""

from __future__ import annotations

import argparse
import importlib

PARTS = ("codec", "evaluator", "judge2", "dit")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m zerase_core.nano.train", description=__doc__)
    commands = parser.add_subparsers(dest="part", required=True)
    modules = {}
    for part in PARTS:
        modules[part] = importlib.import_module(f"zerase_core.nano.training.{part}")
        modules[part].add_arguments(commands.add_parser(part, help=f"train the nano {part}"))
    args = parser.parse_args(argv)
    modules[args.part].run(args)


if __name__ == "__main__":
    main()
