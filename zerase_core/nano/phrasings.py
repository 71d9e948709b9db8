"""Caption phrasings of the nano world beyond its five templates, with a held-out split that training never sees.

A phrasing is a caption pattern with slots `{shape}`, `{colour}`, `{pattern}`, `{background}`, written only with
words of the nano vocabulary. They are generated, not hand-picked: an object phrase (the attributes in another
order, joined by "in" or ",", with the pattern, the colour or both left out), with or without "a", placed in a
scene form (the background after "on", "with" or ",", before the object, or left out). The project's `TEMPLATES`
are among them and always in the train split; the held-out split (`HELD_OUT`) shares no phrasing with training.

    PHRASINGS = TRAIN + HELD_OUT      (112 = 68 + 44)
"""

from __future__ import annotations

import itertools
import re

import numpy

from .vocab import ATTRIBUTES, MAX_LENGTH, TEMPLATES, VOCABULARY, SceneLike, caption_words

OBJECT_FORMS = (
    "{pattern} {colour} {shape}",
    "{colour} {pattern} {shape}",
    "{colour} {shape}",
    "{pattern} {shape}",
    "{shape}",
    "{shape} in {pattern} {colour}",
    "{shape} in {colour}",
    "{colour} {shape} , {pattern}",
    "{shape} , {colour} , {pattern}",
    "{shape} , {colour}",
    "{colour} {shape} in {pattern}",
)
SCENE_FORMS = (
    "{object} on a {background} background",
    "{object} on {background}",
    "{object} , {background} background",
    "{object} with a {background} background",
    "{background} background , {object}",
    "a {background} background with {object}",
    "{background} background with {object}",
    "on a {background} background , {object}",
    "{object}",
)
COUNT, TRAIN_COUNT = 112, 68
SPLIT_SEED = 18
SLOT = re.compile(r"\{(\w+)\}")


def slots(phrasing: str) -> frozenset[str]:
    """The attributes a phrasing states."""
    return frozenset(SLOT.findall(phrasing))


def _generated() -> list[str]:
    found = []
    for obj, article, scene in itertools.product(OBJECT_FORMS, ("a ", ""), SCENE_FORMS):
        text = scene.replace("{object}", article + obj)
        text = " ".join(text.split())
        if text not in found:
            found.append(text)
    return found


def _split() -> tuple[tuple[str, ...], tuple[str, ...]]:
    others = [text for text in _generated() if text not in TEMPLATES]
    order = numpy.random.default_rng(SPLIT_SEED).permutation(len(others))
    chosen = [others[index] for index in order[: COUNT - len(TEMPLATES)]]
    train = (*TEMPLATES, *chosen[: TRAIN_COUNT - len(TEMPLATES)])
    return train, tuple(chosen[TRAIN_COUNT - len(TEMPLATES) :])


TRAIN, HELD_OUT = _split()
PHRASINGS = TRAIN + HELD_OUT
SPLITS = {"train": TRAIN, "held-out": HELD_OUT}


def phrasings(split: str, stating: tuple[str, ...] = ()) -> tuple[str, ...]:
    """The phrasings of `split` ("train" or "held-out") that state every attribute in `stating`."""
    if split not in SPLITS:
        raise ValueError(f"unknown phrasing split {split!r}; expected one of {list(SPLITS)}")
    unknown = [name for name in stating if name not in ATTRIBUTES]
    if unknown:
        raise ValueError(f"unknown attribute(s) {unknown}; the nano attributes are {list(ATTRIBUTES)}")
    return tuple(text for text in SPLITS[split] if set(stating) <= slots(text))


def fill(phrasing: str, words: dict[str, str]) -> str:
    """The caption of a phrasing with `words` for its slots (extra words for slots it lacks are ignored)."""
    return SLOT.sub(lambda match: words[match.group(1)], phrasing)


def stated(phrasing: str, expected: dict[str, str]) -> dict[str, str]:
    """The part of `expected` that a caption of this phrasing asks for (unstated attributes are not scored)."""
    return {name: value for name, value in expected.items() if name in slots(phrasing)}


def phrased_caption(scene: SceneLike, rng: numpy.random.Generator, synonym_rate: float = 0.3) -> str:
    """A caption of `scene` in a random train phrasing (never a held-out one), synonyms at `synonym_rate`."""
    phrasing = TRAIN[int(rng.integers(len(TRAIN)))]
    return fill(phrasing, caption_words(scene, rng, synonym_rate))


def _check() -> None:
    if len(set(PHRASINGS)) != COUNT or len(TRAIN) != TRAIN_COUNT or set(TRAIN) & set(HELD_OUT):
        raise AssertionError(f"phrasing split is broken: {len(PHRASINGS)} phrasings, {len(TRAIN)} train")
    longest = {
        name: max(values, key=lambda value: len(VOCABULARY.split(value[-1])))[-1]
        for name, values in ((name, list(values.values())) for name, values in ATTRIBUTES.items())
    }
    for text in PHRASINGS:
        VOCABULARY.encode(fill(text, longest))  # every word in the vocabulary, within MAX_LENGTH
        if "shape" not in slots(text):
            raise AssertionError(f"phrasing {text!r} states no shape")
    assert MAX_LENGTH >= 8


_check()
