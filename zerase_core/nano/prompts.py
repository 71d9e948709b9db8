"""Nano-world prompt sets: the text conditioner, training prompt sets and the evaluation (erase / keep) sets."""
from __future__ import annotations

import itertools

import numpy
import torch

from ..prompts import PromptSet
from .text_encoder import NanoTextEncoder
from .vocab import ATTRIBUTES, TEMPLATES, VOCABULARY


class NanoConditioner:
    """`TextConditioner` over the nano text encoder (one token per word)."""

    def __init__(self, text_encoder: NanoTextEncoder):
        self.text_encoder = text_encoder
        self._cache: dict[str, torch.Tensor] = {}   # the encoder is frozen: each prompt is encoded once

    @torch.no_grad()
    def encode(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        for prompt in prompts:
            if prompt not in self._cache:
                # one prompt at a time: the features never depend on which prompts shared a batch
                features, _ = self.text_encoder.encode([prompt])
                self._cache[prompt] = features[0].clone()
        rows = [self._cache[prompt] for prompt in prompts]
        lengths = torch.tensor([len(row) for row in rows])
        return torch.nn.utils.rnn.pad_sequence(rows, batch_first=True), lengths

    def keyword_positions(self, prompt: str, keyword: str) -> list[int]:
        ids = VOCABULARY.encode(prompt)
        target = [VOCABULARY.word_id(word) for word in VOCABULARY.split(keyword)]
        positions = []
        for start in range(len(ids) - len(target) + 1):
            if ids[start:start + len(target)] == target:
                positions.extend(range(start, start + len(target)))
        return positions

    def check_keyword(self, keyword: str) -> None:
        for word in VOCABULARY.split(keyword):
            VOCABULARY.word_id(word)


def attribute_of(word: str) -> tuple[str, str]:
    """(attribute, canonical value) of a caption word, synonyms included."""
    VOCABULARY.word_id(word)
    for attribute, values in ATTRIBUTES.items():
        for value, words in values.items():
            if word in words:
                return attribute, value
    raise ValueError(f"{word!r} is not an attribute word (shape, colour, pattern or background) of the nano world")


def concept_words(words) -> list[str]:
    """The concepts to erase as nano caption words: stripped, lower-cased (the vocabulary is lower-case, so `Star`
    means `star`), repeats dropped in order; each checked by `attribute_of`."""
    found: list[str] = []
    for word in words:
        word = str(word).strip().lower()
        attribute_of(word)
        if word not in found:
            found.append(word)
    return found


def _fill(template: str, words: dict[str, str]) -> str:
    return template.format(**words)


def training_prompt_set(concepts: list[str], count: int = 96, seed: int = 0) -> PromptSet:
    """D_er: `count` captions with the concept word (random template, other attributes and their synonyms);
    D_pr: the same captions with the concept replaced by another value of its attribute."""
    rng = numpy.random.default_rng(seed)
    erased = {attribute_of(concept) for concept in concepts}
    erase, anchors = [], []
    for index in range(count):
        concept = concepts[index % len(concepts)]
        attribute, value = attribute_of(concept)
        words = {}
        for name, values in ATTRIBUTES.items():
            # with several concepts, no caption shows another erased value: an anchor must never preserve one
            # (the concept's own attribute is drawn from every value, then replaced: one concept = the old stream)
            allowed = list(values) if name == attribute else [choice for choice in values if (name, choice) not in erased]
            choice = allowed[int(rng.integers(len(allowed)))]
            synonyms = values[choice]
            words[name] = synonyms[int(rng.integers(len(synonyms)))] if rng.random() < 0.3 else synonyms[0]
        template = TEMPLATES[int(rng.integers(len(TEMPLATES)))]
        others = [other for other in ATTRIBUTES[attribute] if (attribute, other) not in erased]
        if not others:
            raise ValueError(f"every {attribute} value is being erased ({concepts}); keep at least one as an anchor")
        erase.append(_fill(template, {**words, attribute: concept}))
        anchors.append(_fill(template, {**words, attribute: others[int(rng.integers(len(others)))]}))
    return PromptSet(erase=tuple(erase), keywords=tuple(concepts), anchors=tuple(anchors))


def combinations(attribute: str, value: str, word: str | None = None) -> list[tuple[str, dict[str, str]]]:
    """Every caption (template 0, canonical words; `word` for the attribute if given) whose `attribute` is
    `value`: (prompt, expected attributes)."""
    others = [name for name in ATTRIBUTES if name != attribute]
    results = []
    for chosen in itertools.product(*(ATTRIBUTES[name] for name in others)):
        expected = dict(zip(others, chosen), **{attribute: value})
        words = {name: ATTRIBUTES[name][expected[name]][0] for name in ATTRIBUTES}
        if word is not None:
            words[attribute] = word
        results.append((_fill(TEMPLATES[0], words), expected))
    return results


def evaluation_sets(concept: str) -> tuple[list[tuple[str, dict]], list[tuple[str, dict]]]:
    """(erase set, keep set) for a concept word: every combination with the concept's value, and the same
    combinations with every other value of that attribute."""
    attribute, value = attribute_of(concept)
    erase = combinations(attribute, value, concept)
    keep = [item for other in ATTRIBUTES[attribute] if other != value for item in combinations(attribute, other)]
    return erase, keep
