"""Quality of the nano world, measured with its evaluator: `python -m zerase_core.nano.quality [--quick]`.

Evaluator accuracy per attribute on held-out renders (and codec reconstructions), and the nano DiT's samples:
prompted shape / colour / pattern per value (every combination of the other attributes, template 0, fixed seeds),
and shape accuracy on synonym prompts. Prints markdown tables; `--json` writes the numbers.
"""

from __future__ import annotations

import argparse
import itertools
import time
from collections import defaultdict

import numpy
import torch

from .render import random_scene, render_batch
from .verdicts import verdicts
from .vocab import ATTRIBUTES, TEMPLATES
from .world import NanoWorld

SEED = 20_000


def evaluator_accuracy(world: NanoWorld, count: int) -> dict[str, dict[str, float]]:
    rng = numpy.random.default_rng(SEED)
    scenes = [random_scene(rng) for _ in range(count)]
    images = render_batch(scenes)
    results = {}
    with torch.no_grad():
        reconstructed = world.codec.decode(world.codec.encode(images))
    for name, batch in (("renders", images), ("reconstructions", reconstructed)):
        found = verdicts(batch, world.evaluator)
        results[name] = {
            attribute: float(
                numpy.mean([v[attribute] == getattr(s, attribute) for v, s in zip(found, scenes, strict=True)])
            )
            for attribute in ATTRIBUTES
        }
    return results


def _prompts(synonyms: bool, stride: int):
    items = []
    for values in itertools.product(*(ATTRIBUTES[name] for name in ATTRIBUTES)):
        expected = dict(zip(ATTRIBUTES, values, strict=True))
        words = {name: ATTRIBUTES[name][value][-1 if synonyms else 0] for name, value in expected.items()}
        items.append((TEMPLATES[0].format(**words), expected))
    return items[::stride]


def sample_accuracy(
    world: NanoWorld, synonyms: bool, stride: int = 1, steps=None, cfg=None
) -> dict[str, dict[str, float]]:
    items = _prompts(synonyms, stride)
    kwargs = {key: value for key, value in (("steps", steps), ("cfg", cfg)) if value is not None}
    images = world.generate([prompt for prompt, _ in items], [SEED + index for index in range(len(items))], **kwargs)
    found = verdicts(images, world.evaluator)
    table: dict[str, dict[str, list[bool]]] = {name: defaultdict(list) for name in ATTRIBUTES}
    for verdict, (_, expected) in zip(found, items, strict=True):
        for name in ATTRIBUTES:
            table[name][expected[name]].append(verdict[name] == expected[name])
    return {name: {value: float(numpy.mean(hits)) for value, hits in values.items()} for name, values in table.items()}


def _print_values(title: str, accuracy: dict[str, dict[str, float]], count: dict[str, int]) -> None:
    print(f"\n### {title}\n")
    for name, values in accuracy.items():
        cells = "  ".join(f"{value} {100 * score:.0f}%" for value, score in values.items())
        print(f"- {name} (n={count[name]}/value): {cells}  | mean {100 * numpy.mean(list(values.values())):.1f}%")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m zerase_core.nano.quality", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="every 3rd combination (≈ 24 samples per value)")
    parser.add_argument("--steps", type=int)
    parser.add_argument("--cfg", type=float)
    parser.add_argument("--json", help="write the numbers here")
    args = parser.parse_args(argv)
    torch.set_num_threads(2)
    started = time.monotonic()
    world = NanoWorld.load()
    stride = 3 if args.quick else 1
    report = {"evaluator": evaluator_accuracy(world, 1000)}
    print("### evaluator accuracy on 1000 held-out renders / codec reconstructions\n")
    for name, values in report["evaluator"].items():
        print(f"- {name}: " + "  ".join(f"{attribute} {100 * score:.1f}%" for attribute, score in values.items()))
    total = len(_prompts(False, stride))
    count = {name: total // len(values) for name, values in ATTRIBUTES.items()}
    report["samples"] = sample_accuracy(world, False, stride, args.steps, args.cfg)
    _print_values("nano DiT samples (canonical words)", report["samples"], count)
    report["synonyms"] = sample_accuracy(world, True, stride, args.steps, args.cfg)
    _print_values("nano DiT samples (synonym words)", report["synonyms"], count)
    print(f"\n({time.monotonic() - started:.0f} s)")
    if args.json:
        from ..common.files import atomic_write_json

        atomic_write_json(report, args.json)


if __name__ == "__main__":
    main()
