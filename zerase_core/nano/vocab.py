"""Fixed vocabulary, caption templates and word-level tokenizer of the nano world.

Every caption word is its own token: a synonym ("disc") has its own id, distinct from its canonical word
("circle"). Only caption generation (`caption`) knows which words mean the same thing; nothing downstream may
merge them, so an eraser must learn synonyms from the text encoder, as with a real model.

Token ids: `<pad>` = 0, `<empty>` = 1 (the empty prompt "" encodes to [1], the caption-dropout token), then the
template filler words and ",", then every attribute word in `ATTRIBUTES` order.
"""

from __future__ import annotations

from typing import Protocol

import numpy

SHAPES: dict[str, tuple[str, ...]] = {
    "circle": ("circle", "disc"),
    "square": ("square", "box"),
    "triangle": ("triangle", "wedge"),
    "star": ("star", "pentagram"),
    "cross": ("cross", "plus"),
    "diamond": ("diamond", "rhombus"),
}
COLOURS: dict[str, tuple[str, ...]] = {
    "red": ("red", "crimson"),
    "green": ("green", "emerald"),
    "blue": ("blue", "azure"),
    "yellow": ("yellow", "golden"),
    "purple": ("purple", "violet"),
    "orange": ("orange", "amber"),
}
PATTERNS: dict[str, tuple[str, ...]] = {
    "plain": ("plain", "solid"),
    "striped": ("striped", "banded"),
    "dotted": ("dotted", "spotted"),
}
BACKGROUNDS: dict[str, tuple[str, ...]] = {
    "white": ("white",),
    "black": ("black",),
    "gray": ("gray",),
    "pink": ("pink",),
}
# Ordered: attribute name -> {canonical value: caption words (first = canonical)}.
ATTRIBUTES: dict[str, dict[str, tuple[str, ...]]] = {
    "shape": SHAPES,
    "colour": COLOURS,
    "pattern": PATTERNS,
    "background": BACKGROUNDS,
}

TEMPLATES: tuple[str, ...] = (
    "a {pattern} {colour} {shape} on a {background} background",
    "{pattern} {colour} {shape} , {background} background",
    "a {shape} in {pattern} {colour} on {background}",
    "a {background} background with a {pattern} {colour} {shape}",
    "{background} background , a {colour} {shape} , {pattern}",
)

PAD_TOKEN = "<pad>"
EMPTY_TOKEN = "<empty>"
PAD_ID = 0
EMPTY_ID = 1
# Longest caption is 8 words; 16 leaves room for hand-written prompts.
MAX_LENGTH = 16


class UnknownWordError(ValueError):
    """A prompt used a word outside the nano vocabulary."""


class SceneLike(Protocol):
    shape: str
    colour: str
    pattern: str
    background: str


def _filler_words() -> list[str]:
    words: list[str] = []
    for template in TEMPLATES:
        for word in template.split():
            if not word.startswith("{") and word not in words:
                words.append(word)
    return words


class Vocabulary:
    """Ordered word list with `encode` / `decode` between prompts and token ids."""

    def __init__(self) -> None:
        words = [PAD_TOKEN, EMPTY_TOKEN, *_filler_words()]
        for values in ATTRIBUTES.values():
            for synonyms in values.values():
                words.extend(synonyms)
        if len(set(words)) != len(words):
            raise AssertionError(f"duplicate words in the nano vocabulary: {words}")
        self._words = tuple(words)
        self._ids = {word: index for index, word in enumerate(words)}

    @property
    def words(self) -> tuple[str, ...]:
        return self._words

    def __len__(self) -> int:
        return len(self._words)

    def word_id(self, word: str) -> int:
        if word not in self._ids:
            raise UnknownWordError(
                f"{word!r} is not in the nano vocabulary; allowed words: {' '.join(self._words[2:])}"
            )
        return self._ids[word]

    def split(self, prompt: str) -> list[str]:
        """Lower-case words of `prompt`, with "," split off as its own word."""
        return prompt.lower().replace(",", " , ").split()

    def encode(self, prompt: str) -> list[int]:
        """Token ids of `prompt` (no padding); "" (or only spaces) encodes to [EMPTY_ID]."""
        words = self.split(prompt)
        if not words:
            return [EMPTY_ID]
        unknown = [word for word in words if word not in self._ids or word in (PAD_TOKEN, EMPTY_TOKEN)]
        if unknown:
            raise UnknownWordError(
                f"unknown word(s) {', '.join(repr(word) for word in dict.fromkeys(unknown))} in prompt "
                f"{prompt!r}; the nano vocabulary allows only: {' '.join(self._words[2:])}"
            )
        if len(words) > MAX_LENGTH:
            raise ValueError(f"prompt {prompt!r} has {len(words)} words, more than MAX_LENGTH={MAX_LENGTH}; shorten it")
        return [self._ids[word] for word in words]

    def encode_padded(self, prompt: str, length: int = MAX_LENGTH) -> list[int]:
        """`encode(prompt)` right-padded with PAD_ID to `length`."""
        ids = self.encode(prompt)
        if len(ids) > length:
            raise ValueError(f"prompt {prompt!r} has {len(ids)} tokens, more than length={length}")
        return ids + [PAD_ID] * (length - len(ids))

    def decode(self, ids: list[int] | tuple[int, ...]) -> str:
        """Prompt text of `ids`; padding is dropped and [EMPTY_ID] decodes to ""."""
        words = []
        for token in ids:
            token = int(token)
            if not 0 <= token < len(self._words):
                raise ValueError(f"token id {token} is outside the vocabulary range 0..{len(self._words) - 1}")
            if token not in (PAD_ID, EMPTY_ID):
                words.append(self._words[token])
        return " ".join(words)


VOCABULARY = Vocabulary()


def _drop_pattern_slot(words: list[str]) -> list[str]:
    # Rule for a left-out "plain": remove the {pattern} word, then any "," left dangling at either end or doubled.
    kept = [word for word in words if word != "{pattern}"]
    cleaned: list[str] = []
    for word in kept:
        if word == "," and (not cleaned or cleaned[-1] == ","):
            continue
        cleaned.append(word)
    while cleaned and cleaned[-1] == ",":
        cleaned.pop()
    return cleaned


def caption_words(
    scene: SceneLike, rng: numpy.random.Generator | None = None, synonym_rate: float = 0.3
) -> dict[str, str]:
    """The word for each attribute of `scene`: the first-listed one, or with an rng a random synonym with
    probability `synonym_rate`."""
    chosen: dict[str, str] = {}
    for attribute, values in ATTRIBUTES.items():
        value = getattr(scene, attribute)
        if value not in values:
            raise ValueError(f"{attribute} {value!r} is not one of {list(values)}")
        synonyms = values[value]
        word = synonyms[0]
        if rng is not None and len(synonyms) > 1 and rng.random() < synonym_rate:
            word = synonyms[1 + int(rng.integers(len(synonyms) - 1))]
        chosen[attribute] = word
    return chosen


def caption(
    scene: SceneLike,
    template_index: int = 0,
    rng: numpy.random.Generator | None = None,
    synonym_rate: float = 0.3,
    plain_omit_rate: float = 0.5,
) -> str:
    """Caption of `scene` (any object with canonical shape/colour/pattern/background, e.g. `render.Scene`).

    With `rng=None` the caption is canonical: first-listed words, "plain" written out. With an rng, each attribute
    word is replaced by a random synonym with probability `synonym_rate`, and a "plain" pattern is left out with
    probability `plain_omit_rate` (its slot and any dangling "," disappear: "red circle , white background").
    """
    if not 0 <= template_index < len(TEMPLATES):
        raise ValueError(f"template_index {template_index} is out of range 0..{len(TEMPLATES) - 1}")
    chosen = caption_words(scene, rng, synonym_rate)
    words = TEMPLATES[template_index].split()
    if scene.pattern == "plain" and rng is not None and rng.random() < plain_omit_rate:
        words = _drop_pattern_slot(words)
    return " ".join(chosen[word[1:-1]] if word.startswith("{") else word for word in words)
