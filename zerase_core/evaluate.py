"""Evaluation with a judge that knows the ground truth (the nano evaluator by default).

`accuracy` compares the judge's verdicts on images with the attributes their prompts asked for; a `none` verdict
(no clean single shape, colour, ...) always counts as wrong.
"""
from __future__ import annotations

from collections import defaultdict

import torch

from .nano.vocab import ATTRIBUTES


def _judge(evaluator):
    if evaluator is None:
        from .nano import paths
        from .nano.evaluator import Evaluator
        evaluator = Evaluator.load(paths.EVALUATOR).eval()
    return evaluator


@torch.no_grad()
def verdicts(images: torch.Tensor, evaluator=None, batch_size: int = 256) -> list[dict[str, str]]:
    """Per image, the judge's value (or "none") for every attribute."""
    judge = _judge(evaluator)
    results: list[dict[str, str]] = []
    for start in range(0, len(images), batch_size):
        predicted = judge.predict(images[start:start + batch_size])
        names = list(predicted)
        results.extend(dict(zip(names, values)) for values in zip(*(predicted[name] for name in names)))
    return results


def accuracy(images: torch.Tensor, expected: list[dict[str, str]], evaluator=None) -> dict[str, float]:
    """Fraction of images whose verdict matches `expected` per attribute (only attributes named in `expected`)."""
    if len(images) != len(expected):
        raise ValueError(f"{len(images)} images but {len(expected)} expected attribute sets")
    found = verdicts(images, evaluator)
    hits: dict[str, list[bool]] = defaultdict(list)
    for verdict, wanted in zip(found, expected):
        for attribute, value in wanted.items():
            if attribute not in ATTRIBUTES:
                raise ValueError(f"unknown attribute {attribute!r}; expected one of {list(ATTRIBUTES)}")
            hits[attribute].append(verdict[attribute] == value)
    return {attribute: sum(values) / len(values) for attribute, values in hits.items()}


def per_value_accuracy(images: torch.Tensor, expected: list[dict[str, str]], attribute: str,
                       evaluator=None) -> dict[str, float]:
    """Accuracy on `attribute`, split by the expected value of that attribute."""
    found = verdicts(images, evaluator)
    hits: dict[str, list[bool]] = defaultdict(list)
    for verdict, wanted in zip(found, expected):
        hits[wanted[attribute]].append(verdict[attribute] == wanted[attribute])
    return {value: sum(values) / len(values) for value, values in hits.items()}
