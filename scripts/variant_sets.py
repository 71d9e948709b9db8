"""The erase prompts and seeds the issue-18 variant scripts score on (`anchor_variants.py`, `guidance_probe.py`): a
value's erase prompts in one phrasing split, never the bench's seeds, each prompt with `reps` seeds 50,000 apart."""

from __future__ import annotations

from zerase_core.evaluation.concept_sets import _draw, phrased
from zerase_core.nano.prompts import attribute_of, evaluation_sets

FIRST_SEED = {"train": 800_000}  # other splits: 1000
DRAW_SEED = {"train": 11}  # other splits: 1
REPEAT_STRIDE = 50_000


def erase_items(
    concept: str, count: int = 36, reps: int = 1, shape: str | None = None, split: str = "train"
) -> tuple[list[tuple[str, dict]], list[int]]:
    """(items [(prompt, stated attributes)], seeds): `count` erase prompts of `concept` in `split` (`shape`: only
    those that state it), repeated `reps` times; repeat r takes seeds REPEAT_STRIDE·r further on."""
    attribute, _ = attribute_of(concept)
    pool = phrased(evaluation_sets(concept)[0], attribute, concept, split=split)
    if shape:
        pool = [(prompt, expected) for prompt, expected in pool if expected.get("shape") == shape]
    drawn = _draw(pool, count, seed=DRAW_SEED.get(split, 1))
    first = FIRST_SEED.get(split, 1000)
    seeds = [first + repeat * REPEAT_STRIDE + index for repeat in range(reps) for index in range(len(drawn))]
    return drawn * reps, seeds
