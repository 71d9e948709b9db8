"""Prompt sets for erasure, word shuffling and keyword token positions.

A `TextConditioner` turns prompts into caption features and finds where a keyword's tokens sit in an encoded
prompt (a keyword may span several tokens, e.g. "Van Gogh" with Qwen's BPE). The nano world's conditioner is
`NanoConditioner`; the ComfyUI bridge provides one over the real Qwen3 tokenizer and CLIP.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Protocol

import numpy
import torch


class TextConditioner(Protocol):
    def encode(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """-> features (B, L, cap_feat_dim), lengths (B,)"""

    def keyword_positions(self, prompt: str, keyword: str) -> list[int]:
        """Token positions (0-based, in the encoded caption) of every token of every occurrence of `keyword`."""

    def check_keyword(self, keyword: str) -> None:
        """Raise ValueError if the text encoder cannot represent `keyword`."""


@dataclass(frozen=True)
class PromptSet:
    erase: tuple[str, ...]  # D_er: prompts that contain a keyword
    keywords: tuple[str, ...]  # the words to erase (attention suppression targets)
    anchors: tuple[str, ...]  # D_pr: c_pr prompts, paired with erase prompts by index modulo len
    preserve: tuple[str, ...] = ()  # extra prompts whose outputs must not change
    # the mapped prompt c_t of each erase prompt (paired by index modulo len), the reference of the "anchor" erase
    # target (EraseConfig.erase_target): the erase prompt with the concept replaced or removed. Empty: the anchors.
    targets: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not self.erase:
            raise ValueError("no erase prompts: give at least one prompt that contains the concept")
        if not self.keywords:
            raise ValueError("no keywords: name the word(s) to erase")
        if not self.anchors:
            raise ValueError(
                "no anchor prompts: give at least one prompt to preserve (e.g. the erase prompt without the concept)"
            )
        for keyword in self.keywords:
            if not any(_contains(prompt, keyword) for prompt in self.erase):
                raise ValueError(
                    f"keyword {keyword!r} appears in none of the {len(self.erase)} erase prompts; "
                    "add it to the prompts or fix the keyword"
                )

    def target_of(self, index: int) -> str:
        """The mapped prompt of erase prompt `index` (the anchors where no targets were given)."""
        targets = self.targets or self.anchors
        return targets[index % len(targets)]

    def keywords_in(self, prompt: str) -> list[str]:
        return [keyword for keyword in self.keywords if _contains(prompt, keyword)]


def without_keywords(prompt: str, keywords) -> str:
    """The prompt with every keyword (whole words, any case) taken out: the mapped prompt of an erase prompt."""
    text = prompt
    for keyword in sorted(keywords, key=len, reverse=True):
        text = re.sub(rf"(?i)\b{re.escape(keyword)}\b", " ", text)
    return " ".join(text.split())


def _words(text: str) -> list[str]:
    return text.lower().replace(",", " , ").split()


def _contains(prompt: str, keyword: str) -> bool:
    words, target = _words(prompt), _words(keyword)
    return any(words[index : index + len(target)] == target for index in range(len(words) - len(target) + 1))


def shuffle_words(prompt: str, keywords: list[str], rng: numpy.random.Generator, probability: float) -> str:
    """With `probability`, shuffle the word order, keeping each (multi-word) keyword in one piece (Z-Erase §2.4b)."""
    if rng.random() >= probability:
        return prompt
    original = prompt.replace(",", " , ").split()  # matching is case-insensitive; the output keeps the case
    words, units, index = [word.lower() for word in original], [], 0
    phrases = sorted((_words(keyword) for keyword in keywords), key=len, reverse=True)
    while index < len(words):
        for phrase in phrases:
            if words[index : index + len(phrase)] == phrase:
                units.append(" ".join(original[index : index + len(phrase)]))
                index += len(phrase)
                break
        else:
            units.append(original[index])
            index += 1
    order = rng.permutation(len(units))
    return " ".join(units[position] for position in order)


def keyword_columns(conditioner: TextConditioner, prompts: list[str], keywords: list[list[str]]):
    """(columns (B, K) long, mask (B, K) bool): text-token positions of each prompt's keywords, padded to K."""
    positions = []
    for prompt, words in zip(prompts, keywords, strict=True):
        found = sorted({position for word in words for position in conditioner.keyword_positions(prompt, word)})
        if not found:
            raise ValueError(f"no keyword of {words} found in the tokens of {prompt!r}")
        positions.append(found)
    return padded_columns(positions)


def padded_columns(positions: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    """(columns (B, K) long, mask (B, K) bool): each row's token positions, zero-padded to the longest row K."""
    width = max(len(found) for found in positions)
    columns = torch.zeros(len(positions), width, dtype=torch.long)
    mask = torch.zeros(len(positions), width, dtype=torch.bool)
    for row, found in enumerate(positions):
        columns[row, : len(found)] = torch.tensor(found)
        mask[row, : len(found)] = True
    return columns, mask
