"""Issue 18 judge check: which of the base model's erase-set images does judge2 call "no object", and do they show
the shape? Renders the bench's erase sets (held-out phrasings, the bench's seeds) with the unerased nano model for
every shape, colour and pattern, scores them with judge2 and the nano evaluator, prints the no-object shares (all
attributes stated vs some left out) and writes two grids: every image judge2 calls "no object" (labelled with the
evaluator's shape verdict) and all 36 star images.

    PYTHONPATH=. python scripts/judge2_base_check.py --out runs/judgecheck --threads 1      (≈ 4 min on one core)
"""
from __future__ import annotations

import argparse
from collections import Counter
from pathlib import Path

import torch

from zerase_core.evaluation.concept_sets import concept_sets
from zerase_core.evaluation.protocol import EvaluationSettings, _render
from zerase_core.evaluation.rendering import NanoRenderer
from zerase_core.common.grid import labelled_grid, save_png
from zerase_core.nano.second_judge import SecondJudge
from zerase_core.nano.vocab import ATTRIBUTES
from zerase_core.nano.world import NanoWorld

VALUES = [value for name in ("shape", "colour", "pattern") for value in ATTRIBUTES[name]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path("runs/judgecheck"))
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    world, judge, settings = NanoWorld.load(), SecondJudge.load(), EvaluationSettings()
    renderer = NanoRenderer(world)
    totals, judge2_none, evaluator_none = Counter(), Counter(), Counter()
    flagged, labels, stars = [], [], None
    for value in VALUES:
        sets = concept_sets(value, settings.sizes)
        images = _render(renderer, sets.erase, settings, "erase")
        second, first = judge.predict(images)["shape"], world.evaluator.predict(images)["shape"]
        for index, (prompt, expected) in enumerate(sets.erase):
            group = "all four stated" if len(expected) == 4 else "some left out"
            totals[group] += 1
            judge2_none[group] += second[index] == "none"
            evaluator_none[group] += first[index] == "none"
            if second[index] == "none":
                flagged.append(images[index])
                labels.append(f"{prompt} | evaluator: {first[index]}")
        print(f"{value}: judge2 no object {second.count('none')}/{len(images)}, evaluator {first.count('none')}",
              flush=True)
        if value == "star":
            stars = labelled_grid(images, [f"{p} | j2:{s} ev:{f}" for (p, _), s, f in zip(sets.erase, second, first)],
                                  columns=9, scale=2)
    for group, count in totals.items():
        print(f"{group}: {count} images, judge2 no object {judge2_none[group] / count:.3f}, "
              f"evaluator {evaluator_none[group] / count:.3f}")
    save_png(labelled_grid(torch.stack(flagged), labels, columns=10, scale=2), args.out / "base_judge2_none.png")
    save_png(stars, args.out / "base_star_all.png")


if __name__ == "__main__":
    main()
