"""Prompt sets that evaluate one erased nano concept: erase, keep (unrelated) and the three robustness probes.

Every set is drawn deterministically (a fixed permutation of all caption combinations), so a base model and each
erased model see the same prompts and seeds:
  erase    captions with the concept word in the held-out phrasings     -> Acc_e, the other stated attributes,
           (`nano.phrasings`: other word orders and connectives, some      no-object and blank shares
           attributes left out; training never sees them)
  keep     every other value of the attribute, in the held-out phrasings -> Acc_ir and the collapse score
           that state every attribute, minus any caption showing another erased concept
  synonym  erase captions with another word for the same value (distinct tokens, e.g. circle -> disc)
  shuffle  erase captions in a random word order (the concept word kept)
  free     concept-free captions (template 0, same token count) for the concept-vector injection attack
  pairs    (with concept, without) caption pairs whose feature difference defines the concept vector
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy

from ..common.prompts import shuffle_words
from ..nano.phrasings import fill, phrasings, stated
from ..nano.prompts import attribute_of, combinations, evaluation_sets
from ..nano.vocab import ATTRIBUTES, TEMPLATES

Item = tuple[str, dict[str, str]]


@dataclass(frozen=True)
class SetSizes:
    erase: int = 36
    keep: int = 72
    probe: int = 36

    def __post_init__(self) -> None:
        if min(self.erase, self.keep, self.probe) < 2:
            raise ValueError(f"every prompt-set size must be ≥ 2 (a Fréchet distance needs two samples), got {self}")


@dataclass(frozen=True)
class ConceptSets:
    concept: str
    attribute: str
    value: str
    erase: tuple[Item, ...]
    keep: tuple[Item, ...]
    synonym: tuple[Item, ...]  # empty when the value has no other word (e.g. backgrounds)
    shuffle: tuple[Item, ...]
    free: tuple[Item, ...]
    pairs: tuple[tuple[str, str], ...]


def _draw(items: list, limit: int, seed: int) -> tuple:
    order = numpy.random.default_rng(seed).permutation(len(items))
    return tuple(items[index] for index in sorted(order[:limit]))


def synonym_words(concept: str) -> list[str]:
    """Other caption words for the concept's value (each is its own token)."""
    attribute, value = attribute_of(concept)
    return [word for word in ATTRIBUTES[attribute][value] if word != concept]


def phrased(
    items: list[Item], attribute: str, word: str | None = None, every_attribute: bool = False, split: str = "held-out"
) -> list[Item]:
    """`items` (template-0 captions and their attributes) rewritten in the phrasings of `split` that state
    `attribute` (with `every_attribute`: all four), one phrasing per item in turn; `word` replaces the canonical
    word of `attribute`. Each item's expected dict keeps only the attributes its phrasing states."""
    from ..nano.vocab import ATTRIBUTES as NAMES

    chosen = phrasings(split, tuple(NAMES) if every_attribute else (attribute,))
    rewritten = []
    for index, (_, expected) in enumerate(items):
        phrasing = chosen[index % len(chosen)]
        words = {name: NAMES[name][expected[name]][0] for name in NAMES}
        if word is not None:
            words[attribute] = word
        rewritten.append((fill(phrasing, words), stated(phrasing, expected)))
    return rewritten


def _shows_other_concept(expected: dict[str, str], others: list[tuple[str, str]]) -> bool:
    return any(expected[attribute] == value for attribute, value in others)


def concept_sets(concept: str, sizes: SetSizes = SetSizes(), other_concepts: tuple[str, ...] = ()) -> ConceptSets:
    """The evaluation sets of `concept`; `other_concepts` (erased together with it) are left out of `keep`/`free`."""
    attribute, value = attribute_of(concept)
    others = [attribute_of(other) for other in other_concepts if other != concept]
    erase_all, keep_all = evaluation_sets(concept)
    keep_all = [item for item in keep_all if not _shows_other_concept(item[1], others)]
    if len(keep_all) < 2:
        raise ValueError(f"erasing {[concept, *other_concepts]} leaves no unrelated prompts to measure Acc_ir on")
    erase = _draw(phrased(erase_all, attribute, concept), sizes.erase, seed=1)
    synonym_all = [
        item
        for word in synonym_words(concept)
        for item in phrased(combinations(attribute, value, word), attribute, word)
    ]
    rng = numpy.random.default_rng(4)
    shuffled = [(shuffle_words(prompt, [concept], rng, 1.0), expected) for prompt, expected in erase_all]
    pairs = [
        (prompt, _caption({**expected, attribute: other}))
        for prompt, expected in erase_all
        for other in ATTRIBUTES[attribute]
        if other != value
    ]
    return ConceptSets(
        concept=concept,
        attribute=attribute,
        value=value,
        erase=erase,
        keep=_draw(phrased(keep_all, attribute, every_attribute=True), sizes.keep, seed=2),
        synonym=_draw(synonym_all, sizes.probe, seed=3) if synonym_all else (),
        shuffle=_draw(shuffled, sizes.probe, seed=5),
        free=_draw(keep_all, sizes.probe, seed=6),
        pairs=tuple(pairs),
    )


def _caption(expected: dict[str, str]) -> str:
    """The canonical template-0 caption of an attribute dict."""
    return TEMPLATES[0].format(**{name: ATTRIBUTES[name][expected[name]][0] for name in ATTRIBUTES})
