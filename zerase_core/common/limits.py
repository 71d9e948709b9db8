"""The allowed ranges of the numbers a user can type or a file can carry, and the one check every front end uses.

A value outside its range (NaN and ±inf included) is refused with a one-line ValueError naming the value, the range
and the fix; nothing is clamped silently. The CLI, the ComfyUI nodes and the erasure-file reader all call these
functions, so the three agree (docs/safety.md lists them).
"""

from __future__ import annotations

import math
import numbers

# Erasure strength (the multiplier of the adapter delta / weight edit). 0 = the base model; the paper's code release
# applies its nudity erasure at ×15, so the range leaves room above that. Negative values amplify the concept.
STRENGTH_RANGE = (0.0, 20.0)
# Classifier-free guidance (0 = the unconditional velocity, 1 = none, as Z-Image-Turbo; ComfyUI's Z-Image workflows use
# 1…5, and ErasureCompare's input goes up to 30).
CFG_RANGE = (0.0, 30.0)
# Adapter alpha (delta scale = alpha / rank; the paper: alpha = rank ≤ 256): at most 4 × the largest rank.
ALPHA_RANGE = (0.0, 1024.0)  # the lower end is excluded: alpha must be > 0


def check_range(name: str, value: object, low: float, high: float, hint: str = "", low_open: bool = False) -> float:
    """`value` as a float if it is a finite number in [low, high] (or (low, high] with `low_open`), else ValueError.

    The message names the setting, the value and the allowed range, then `hint` (what the value means or the fix).
    """
    # a setting's name reads `eta=nan`, `--cfg=inf`; a longer description reads `strength 2 of '1, nan' (nan)`
    named = f"{name}={value!r}" if name.lstrip("-").replace("-", "_").isidentifier() else f"{name} ({value!r})"
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{named} is not a number; give a number in {_interval(low, high, low_open)}{hint}")
    number = float(value)
    inside = math.isfinite(number) and (low < number if low_open else low <= number) and number <= high
    if not inside:
        raise ValueError(f"{named} is out of range {_interval(low, high, low_open)}{hint}")
    return number


def _interval(low: float, high: float, low_open: bool) -> str:
    return f"{'(' if low_open else '['}{low:g}, {high:g}]"


def check_strength(value: object, what: str = "strength") -> float:
    low, high = STRENGTH_RANGE
    return check_range(
        what,
        value,
        low,
        high,
        " (erasure strength: 0 = the base model, 1 = as trained; the file's recommended strength is the usual choice)",
    )


def check_cfg(value: object, what: str = "cfg") -> float:
    low, high = CFG_RANGE
    return check_range(what, value, low, high, " (classifier-free guidance: 1 = none, as Turbo; 3 is the nano default)")


def check_alpha(value: object, what: str = "alpha") -> float:
    low, high = ALPHA_RANGE
    return check_range(
        what, value, low, high, " (adapter alpha; delta scale = alpha / rank, usually alpha = rank)", low_open=True
    )
