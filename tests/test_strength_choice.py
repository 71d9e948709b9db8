"""The nano CLI's strength choice on held-out prompts (`zerase_core.nano.scoring.choose_strength`)."""
from __future__ import annotations

import pytest

from zerase_core.nano.scoring import choose_strength


def rows(*values):
    return [{"strength": s, "acc_e": e, "keep_ratio": k, "h": h} for s, e, k, h in values]


@pytest.mark.parametrize("table, expected", [
    # the first strength inside the margin (0.05) wins, even when a weaker one met the plain target
    (rows((0.5, 0.08, 1.0, 0.90), (0.75, 0.02, 0.99, 0.95)), 0.75),
    # nothing inside the margin before the keep ratio broke: the smallest meeting the plain target
    (rows((0.5, 0.30, 1.0, 0.60), (1.0, 0.09, 0.97, 0.88), (1.5, 0.03, 0.80, 0.75)), 1.0),
    # meeting Acc_e only by breaking the keep ratio never counts as passing (here it still has the best H)
    (rows((0.5, 0.40, 1.0, 0.55), (1.0, 0.20, 0.96, 0.76), (1.5, 0.00, 0.90, 0.86)), 1.5),
    # nothing passes: the best mean H
    (rows((0.5, 0.60, 1.0, 0.40), (1.0, 0.30, 0.97, 0.67), (1.5, 0.25, 0.85, 0.60)), 1.0),
])
def test_choose_strength(table, expected):
    assert choose_strength(table, target_acc_e=0.1, keep_ratio=0.95, margin=0.5) == expected
