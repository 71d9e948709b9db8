"""Issue 18: what would a perfect concept ablation draw? The bench's erase set of a value (held-out phrasings, the
bench's prompts and seeds, `--seeds` images per prompt as in its tables) with the concept's words replaced by each
value of its attribute, drawn by the base model and scored by judge2: per replacement value, the no-object images,
the other stated attributes and how often that value is drawn.

An anchor-mapped erasure imitates the base model on the mapped prompts, so the row of its anchor is the no-object
share it would have with a perfect fit; what the erasure draws above that row is what its fit adds.

    PYTHONPATH=. python scripts/anchor_floor.py purple [green ...] [--seeds 3]   (≈ 15 s per value and seed, one core)
"""

from __future__ import annotations

import argparse
import re

import torch

from zerase_core.evaluation.concept_sets import concept_sets
from zerase_core.evaluation.judges import named_nano_judge
from zerase_core.evaluation.metrics import no_object_rate, stated_accuracy
from zerase_core.evaluation.protocol import EvaluationSettings, _render
from zerase_core.evaluation.rendering import NanoRenderer
from zerase_core.nano.prompts import attribute_of
from zerase_core.nano.vocab import ATTRIBUTES
from zerase_core.nano.world import NanoWorld


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("concepts", nargs="+")
    parser.add_argument("--seeds", type=int, default=3, help="images per prompt (the bench's --eval-seeds)")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    world = NanoWorld.load()
    judge = named_nano_judge("judge2", world)
    renderer, settings = NanoRenderer(world), EvaluationSettings(seeds=args.seeds)
    print("| concept | drawn with | images | no object | other stated attributes | replacement drawn |")
    print("|---|---|---|---|---|---|")
    for concept in args.concepts:
        attribute, value = attribute_of(concept)
        words = re.compile(r"\b(" + "|".join(ATTRIBUTES[attribute][value]) + r")\b")
        erase = concept_sets(concept, settings.sizes).erase
        for replacement in [value, *(other for other in ATTRIBUTES[attribute] if other != value)]:
            items = [(words.sub(ATTRIBUTES[attribute][replacement][0], prompt), expected) for prompt, expected in erase]
            verdicts = judge.verdicts(_render(renderer, items, settings, "erase"))
            stated = [expected for _ in range(settings.seeds) for _, expected in items]  # _seeded's order
            other, _ = stated_accuracy(verdicts, stated, attribute)
            drawn = sum(verdict[attribute] == replacement for verdict in verdicts) / len(verdicts)
            none = round(no_object_rate(verdicts) * len(verdicts))
            print(f"| {concept} | {replacement} | {len(verdicts)} | {none} | {other:.3f} | {drawn:.3f} |", flush=True)


if __name__ == "__main__":
    main()
