"""Evaluation with a judge that knows the ground truth (the nano evaluator by default).

`accuracy` compares the judge's verdicts on images with the attributes their prompts asked for; a `none` verdict
(no clean single shape, colour, ...) always counts as wrong.
"""

from __future__ import annotations

import torch


def _judge(evaluator):
    if evaluator is None:
        from . import paths
        from .evaluator import Evaluator

        evaluator = Evaluator.load(paths.EVALUATOR).eval()
    return evaluator


@torch.no_grad()
def verdicts(images: torch.Tensor, evaluator=None, batch_size: int = 256) -> list[dict[str, str]]:
    """Per image, the judge's value (or "none") for every attribute."""
    judge = _judge(evaluator)
    results: list[dict[str, str]] = []
    for start in range(0, len(images), batch_size):
        predicted = judge.predict(images[start : start + batch_size])
        names = list(predicted)
        results.extend(
            dict(zip(names, values, strict=True)) for values in zip(*(predicted[name] for name in names), strict=True)
        )
    return results
