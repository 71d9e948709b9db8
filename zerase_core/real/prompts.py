"""The prompts of a real-model run and their encoding: the erase prompts, keywords and mapped prompts of a concept
(as ZEraseTrain builds them), every prompt the trainer will encode, and `encode_all`, which encodes them and then
releases the text encoder (the memory rule of `run.py`: it is never resident together with the DiT)."""

from __future__ import annotations

import gc

from ..common.progress import PhaseCounter, Progress
from ..common.prompts import PromptSet, without_keywords
from ..engine.erase_config import EraseConfig
from ..engine.methods import shuffles
from ..engine.shuffle_bank import PreparedConditioner, ShuffleBank
from .sources import ModelSource
from .world import conditioner

ERASE_TEMPLATES = ("{}", "a picture of {}", "a photo of {}", "a painting of {}")


class _NoKeywords:
    """A PromptSet stand-in for prompts whose keywords nobody asks for (generate's)."""

    @staticmethod
    def keywords_in(prompt: str) -> list[str]:
        return []


class _Counting:
    """A conditioner that reports each encoded prompt to a PhaseCounter."""

    def __init__(self, inner, counter: PhaseCounter):
        self.inner, self.counter = inner, counter

    def encode(self, prompts):
        result = self.inner.encode(prompts)
        self.counter.advance(len(prompts))
        return result

    def keyword_positions(self, prompt, keyword):
        return self.inner.keyword_positions(prompt, keyword)


def encode_all(
    source: ModelSource, prompts, prompt_set=None, progress: Progress | None = None, keywords=()
) -> PreparedConditioner:
    """Features (and keyword rows) of every prompt, then the text encoder is released: the result holds none."""
    unique = list(dict.fromkeys(prompts))
    text = conditioner(source)
    try:
        for keyword in keywords:
            text.check_keyword(keyword)
        counted = _Counting(text, PhaseCounter(progress, "encode prompts", len(unique)))
        # PreparedConditioner reads only `keywords_in` of its PromptSet, which the stand-in has
        return PreparedConditioner(counted, unique, prompt_set or _NoKeywords())  # type: ignore[arg-type]
    finally:
        text.release()
        del text
        gc.collect()


def real_prompt_set(concepts: list[str], prompts: list[str] | None, anchors: list[str] | None) -> PromptSet:
    """Erase prompts (given, else templates around each concept), the concepts as keywords, mapped prompts (the
    anchors, else each erase prompt without its keywords) as ZEraseTrain builds them."""
    keywords = tuple(dict.fromkeys(concept.strip() for concept in concepts if concept.strip()))
    if not keywords:
        raise ValueError("give at least one --concept (the word or words to erase, e.g. 'Van Gogh')")
    erase = tuple(
        dict.fromkeys(prompts or [template.format(keyword) for keyword in keywords for template in ERASE_TEMPLATES])
    )
    targets = tuple(anchors) if anchors else tuple(without_keywords(prompt, keywords) for prompt in erase)
    return PromptSet(erase=erase, keywords=keywords, anchors=targets, targets=targets)


def training_prompts(prompts: PromptSet, config: EraseConfig) -> list[str]:
    """Every prompt the trainer encodes: erase, anchors, mapped, empty, and the bank's word orders."""
    needed = [*prompts.erase, *prompts.anchors, *prompts.targets, *prompts.preserve, ""]
    if config.shuffle_bank and shuffles(config.method):
        needed += ShuffleBank(prompts, prompts.erase, config.shuffle_bank, config.seed).prompts()
    return needed


__all__ = ["ERASE_TEMPLATES", "encode_all", "real_prompt_set", "training_prompts"]
