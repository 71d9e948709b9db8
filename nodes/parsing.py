"""Parsing of the nodes' text inputs (no ComfyUI import); each error names the value and the fix."""

from __future__ import annotations

import re

from zerase_core.common.limits import check_strength


def lines(text: str) -> tuple[str, ...]:
    """Non-empty stripped lines of a multiline input."""
    return tuple(line.strip() for line in (text or "").splitlines() if line.strip())


def words_list(text: str) -> tuple[str, ...]:
    """Keywords separated by commas or new lines ("Van Gogh, starry" -> ("Van Gogh", "starry"))."""
    return tuple(part.strip() for part in re.split(r"[,\n]", text or "") if part.strip())


def parse_strengths(text: str, count: int) -> list[float | None]:
    """Per-erasure explicit strengths, in order ("" or "auto" = None: the 1/N default), padded to `count`."""
    parts = [part.strip() for part in (text or "").split(",")] if (text or "").strip() else []
    if len(parts) > count:
        raise ValueError(
            f"strengths {text!r} gives {len(parts)} values for {count} erasure(s); give at most one per "
            f"erasure, in order (ERASURE input first, then the files)"
        )
    values: list[float | None] = []
    for index, part in enumerate(parts):
        if part in ("", "auto"):
            values.append(None)
            continue
        try:
            number = float(part)
        except ValueError:
            raise ValueError(f"strength {part!r} in {text!r} is not a number; write e.g. '1.0, auto, 0.5'") from None
        values.append(check_strength(number, f"strength {index + 1} of strengths {text!r}"))
    return values + [None] * (count - len(values))


def erasure_strengths(text: str, multiplier: float, recommended: list[float]) -> list[float]:
    """ApplyErasedWeights' strength per erasure: the explicit one from `text`, else multiplier × the file's
    recommended strength / N (the paper's 1/N merge); each checked against the core's range."""
    explicit = parse_strengths(text, len(recommended))
    check_strength(multiplier, "strength multiplier")
    return [
        check_strength(
            value if value is not None else multiplier * own / len(recommended),
            f"strength of erasure {index + 1} = {multiplier:g} × recommended {own:g} / {len(recommended)}",
        )
        for index, (value, own) in enumerate(zip(explicit, recommended, strict=True))
    ]


def parse_sweep(text: str) -> list[float]:
    """Strength multipliers for extra compare columns ("0.5, 2")."""
    values: list[float] = []
    for part in (text or "").replace(";", ",").split(","):
        if part.strip():
            try:
                number = float(part)
            except ValueError:
                raise ValueError(
                    f"strength sweep {text!r}: {part.strip()!r} is not a number; write e.g. '0.5, 2'"
                ) from None
            values.append(check_strength(number, f"multiplier {len(values) + 1} of strength sweep {text!r}"))
    return values
