"""Issue 18: where do an erasure's no-object images fall? The bench's erase set of a value (held-out phrasings, the
bench's prompts and seeds, 3 images per prompt as in its 108-image tables), rendered by the base model and with each
erasure file at `--strength`, scored by judge2; prints the no-object count per stated shape and per phrasing (the
phrasing with each attribute word replaced by {its attribute's name}), base against every file.

    PYTHONPATH=. python scripts/no_object_by_shape.py purple FILE [FILE ...] [--strength 0.5]   (≈ 1 min per file)
"""
from __future__ import annotations

import argparse
from collections import Counter, defaultdict

import torch

from zerase_core.evaluation.concept_sets import concept_sets
from zerase_core.evaluation.protocol import EvaluationSettings, _render, _seeded
from zerase_core.evaluation.rendering import NanoRenderer, erasure_applied
from zerase_core.nano.second_judge import SecondJudge
from zerase_core.nano.vocab import ATTRIBUTES, SHAPES
from zerase_core.nano.world import NanoWorld

CONNECTIVES = {"a", "on", "in", "with", ",", "background"}  # kept as they are in a phrasing


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("concept")
    parser.add_argument("files", nargs="*", help="erasure files (none: the base model only)")
    parser.add_argument("--strength", type=float, default=0.5)
    parser.add_argument("--seeds", type=int, default=3, help="images per prompt (the bench's --eval-seeds)")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    world, judge = NanoWorld.load(), SecondJudge.load()
    renderer, settings = NanoRenderer(world), EvaluationSettings(seeds=args.seeds)
    sets = concept_sets(args.concept, settings.sizes)
    prompts, _ = _seeded([prompt for prompt, _ in sets.erase], settings, "erase")
    attribute_of = {word: name for name, values in ATTRIBUTES.items() for words in values.values() for word in words}
    shape_of = {word: shape for shape, words in SHAPES.items() for word in words}
    by_shape, by_phrasing = defaultdict(Counter), defaultdict(Counter)
    columns = ["base"] + [f"file {index}" for index in range(len(args.files))]

    def score(column: str, images: torch.Tensor) -> None:
        shapes = judge.predict(images)["shape"]
        for prompt, verdict in zip(prompts, shapes, strict=True):
            words = prompt.split()
            shape = next((shape_of[word] for word in words if word in shape_of), "(none stated)")
            phrasing = " ".join(
                word if word in CONNECTIVES or word not in attribute_of else "{" + attribute_of[word] + "}"
                for word in words
            )
            for table, key in ((by_shape, shape), (by_phrasing, phrasing)):
                table[key][column] += verdict == "none"
                table[key]["images"] += column == "base"
        print(f"{column}: {shapes.count('none')} of {len(shapes)} no object", flush=True)

    score("base", _render(renderer, sets.erase, settings, "erase"))
    for column, path in zip(columns[1:], args.files, strict=True):
        with erasure_applied(world, path, args.strength):
            score(column, _render(renderer, sets.erase, settings, "erase"))
    for title, table in (("shape", by_shape), ("phrasing", by_phrasing)):
        print(f"\n| {title} | images | " + " | ".join(columns) + " |")
        print("|---|---|" + "---|" * len(columns))
        rows = sorted(table.items(), key=lambda item: (-sum(item[1][c] for c in columns[1:]), item[0]))
        for key, counts in rows:
            if title == "phrasing" and not any(counts[c] for c in columns):
                continue
            print(f"| {key} | {counts['images']} | " + " | ".join(str(counts[c]) for c in columns) + " |")


if __name__ == "__main__":
    main()
