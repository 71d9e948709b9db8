"""Erasure scores on the nano world: detection of the erased value (Acc_e) and accuracy on unrelated prompts (Acc_ir).

Erase set = every caption combination with the concept's word; keep set = the same combinations with every other
value of the concept's attribute (see `prompts.evaluation_sets`). Acc_ir = mean over the four attributes of the
judge's accuracy on the keep set. Held-out prompts for choosing a strength use other templates and other seeds,
never the evaluation set.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..common.progress import PhaseCounter, Progress
from .prompts import attribute_of, evaluation_sets
from .verdicts import verdicts
from .vocab import ATTRIBUTES, TEMPLATES
from .world import NanoWorld

EVALUATION_SEED = 1000
HELD_OUT_SEED = 500_000


MAX_NO_OBJECT_RISE = 0.05  # a strength may add at most 5 points of no-object erase images to the base's


@dataclass(frozen=True)
class ErasureScore:
    acc_e: float  # how often the erased value is still detected on erase prompts (lower is better)
    acc_ir: float  # mean attribute accuracy on keep prompts (higher is better)
    no_object: float = 0.0  # share of erase-prompt images with no object (the judge's shape "none")

    @property
    def h(self) -> float:
        return self.acc_ir - self.acc_e


def _score(world: NanoWorld, concept: str, erase_items, keep_items, seed: int, model=None, steps=None) -> ErasureScore:
    attribute, value = attribute_of(concept)
    prompts = [prompt for prompt, _ in erase_items] + [prompt for prompt, _ in keep_items]
    seeds = [seed + index for index in range(len(prompts))]
    kwargs = {} if steps is None else {"steps": steps}
    images = world.generate(prompts, seeds, model=model, **kwargs)
    found = verdicts(images, world.evaluator)
    erase_found, keep_found = found[: len(erase_items)], found[len(erase_items) :]
    acc_e = sum(v[attribute] == value for v in erase_found) / len(erase_found)
    hits = [
        v[name] == expected[name]
        for v, (_, expected) in zip(keep_found, keep_items, strict=True)
        for name in ATTRIBUTES
    ]
    no_object = sum(v["shape"] == "none" for v in erase_found) / len(erase_found)
    return ErasureScore(acc_e=acc_e, acc_ir=sum(hits) / len(hits), no_object=no_object)


def score(
    world: NanoWorld, concept: str, model=None, seed: int = EVALUATION_SEED, keep_limit: int | None = None
) -> ErasureScore:
    """Acc_e / Acc_ir of `model` (default: the base DiT) on the evaluation sets of `concept`."""
    erase_items, keep_items = evaluation_sets(concept)
    if keep_limit is not None:
        keep_items = keep_items[:: max(1, len(keep_items) // keep_limit)][:keep_limit]
    return _score(world, concept, erase_items, keep_items, seed, model)


def held_out_sets(
    concept: str, count: int = 48, erased: tuple[str, ...] = ()
) -> tuple[list[tuple[str, dict]], list[tuple[str, dict]]]:
    """Prompts for strength selection: templates 1.. (the evaluation set uses template 0). Keep prompts that show a
    value of another concept in `erased` (erased by the same edit) are left out: losing it there is the goal."""
    erase_items, keep_items = evaluation_sets(concept)
    others = [attribute_of(other) for other in erased if attribute_of(other) != attribute_of(concept)]
    keep_items = [item for item in keep_items if all(item[1][name] != value for name, value in others)]

    def rewrite(items, offset):
        rewritten = []
        for index, (_, expected) in enumerate(items[offset :: max(1, len(items) // count)][:count]):
            words = {name: ATTRIBUTES[name][expected[name]][0] for name in ATTRIBUTES}
            attribute, _ = attribute_of(concept)
            if expected[attribute] == attribute_of(concept)[1]:
                words[attribute] = concept
            template = TEMPLATES[1 + index % (len(TEMPLATES) - 1)]
            rewritten.append((template.format(**words), expected))
        return rewritten

    return rewrite(erase_items, 1), rewrite(keep_items, 2)


@torch.no_grad()
def recommend_strength(
    world: NanoWorld,
    edit,
    concepts: list[str],
    strengths=(0.5, 0.75, 1.0, 1.25, 1.5, 2.0, 3.0),
    target_acc_e: float = 0.1,
    keep_ratio: float = 0.95,
    margin: float = 0.5,
    progress: Progress | None = None,
    max_no_object_rise: float = MAX_NO_OBJECT_RISE,
) -> tuple[float, list[dict]]:
    """A strength for `edit`, chosen on held-out prompts (other templates and seeds than the evaluation sets).

    With several concepts each one's keep prompts leave out the other erased values (their loss is wanted, not damage).
    In order of preference: the smallest strength whose held-out Acc_e ≤ margin × target with Acc_ir ≥ keep_ratio ×
    base (the margin absorbs the held-out set's sampling noise: 48 images); else the smallest with Acc_e ≤ target;
    else the best mean H less the no-object rise (`fallback_score`). A strength whose erase prompts show
    `max_no_object_rise` more no-object images than the base's (the erasure deletes the picture instead of replacing
    the concept) is never chosen while another passes, but the search goes on past it. Strengths are tried in
    increasing order and the search stops at the first that passes or that breaks the keep ratio (stronger ones only
    damage more). `edit` (adapters or a closed-form delta) must be attached to `world.dit`; strength 0 gives the base
    model. `progress` gets the "strength search" phase, one unit per (strength, concept) scored.
    """
    table = []
    counter = PhaseCounter(progress, "strength search", len(concepts) * (1 + len(strengths)))
    sets = {concept: held_out_sets(concept, erased=tuple(concepts)) for concept in concepts}

    def scored(concept: str) -> ErasureScore:
        result = _score(world, concept, *sets[concept], HELD_OUT_SEED)
        counter.advance()
        return result

    edit.set_strength(0.0)
    base = {concept: scored(concept) for concept in concepts}
    for strength in strengths:
        edit.set_strength(strength)
        scores = [scored(concept) for concept in concepts]
        acc_e = max(s.acc_e for s in scores)
        ratio = min(s.acc_ir / max(base[c].acc_ir, 1e-6) for s, c in zip(scores, concepts, strict=True))
        h = sum(s.h for s in scores) / len(scores)
        rise = max(s.no_object - base[c].no_object for s, c in zip(scores, concepts, strict=True))
        table.append({"strength": strength, "acc_e": acc_e, "keep_ratio": ratio, "h": h, "no_object_rise": rise})
        if stops_search(table[-1], target_acc_e, keep_ratio, margin, max_no_object_rise):
            break
    counter.finish()
    strength = choose_strength(table, target_acc_e, keep_ratio, margin, max_no_object_rise)
    edit.set_strength(strength)
    return strength, table


def stops_search(
    row: dict, target_acc_e: float, keep_ratio: float, margin: float, max_no_object_rise: float = MAX_NO_OBJECT_RISE
) -> bool:
    """Whether `recommend_strength` tries no stronger strength after this row: it breaks the keep ratio, or it
    passes with the margin. A no-object rise alone does not stop it: an anchor-mapped erasure passes through
    shapeless in-between images on its way to the anchor (nano red → blue, 2026-12-06: 17 points more no-object
    images than the base at 0.5, none more at 0.75)."""
    if row["keep_ratio"] < keep_ratio:
        return True
    return row["acc_e"] <= margin * target_acc_e and row.get("no_object_rise", 0.0) <= max_no_object_rise


def choose_strength(
    table: list[dict],
    target_acc_e: float,
    keep_ratio: float,
    margin: float,
    max_no_object_rise: float = MAX_NO_OBJECT_RISE,
) -> float:
    """The rule of `recommend_strength` over its table rows ({strength, acc_e, keep_ratio, h, no_object_rise},
    increasing). Rows without `no_object_rise` (older tables) count as adding none."""
    kept = [
        row for row in table if row["keep_ratio"] >= keep_ratio and row.get("no_object_rise", 0.0) <= max_no_object_rise
    ]
    for bound in (margin * target_acc_e, target_acc_e):
        passing = [row for row in kept if row["acc_e"] <= bound]
        if passing:
            return passing[0]["strength"]
    return max(table, key=fallback_score)["strength"]


def fallback_score(row: dict) -> float:
    """The fallback of `choose_strength` when no strength passes: mean H less the no-object images the strength
    adds to the base's, so a strength that erases by deleting the picture does not win on H alone (nano square →
    circle, 2026-12-07: the plain best H was strength 1.5 with 58 points more no-object images)."""
    return row["h"] - max(0.0, row.get("no_object_rise", 0.0))
