"""Markdown tables of benchmark and sweep rows (means over seeds, and over concepts)."""

from __future__ import annotations

from collections import defaultdict

# the metrics both per-method tables average, and the attacks (synonym / shuffle / vector / max) of `method_table`
_COMMON_KEYS = ("acc_e", "acc_ir", "h", "no_object", "h_content", "train_seconds")
_ATTACK_KEYS = ("attack_success_synonym", "attack_success_shuffle", "attack_success_vector", "attack_success")


def _mean(values) -> float | None:
    found = [value for value in values if value is not None]
    return sum(found) / len(found) if found else None


def _means(rows: list[dict], keys: tuple[str, ...]) -> dict[str, float | None]:
    """Each key's mean over the rows that have it."""
    return {key: _mean(row.get(key) for row in rows) for key in keys}


def _cell(value, digits: int = 3) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _ratio(row: dict) -> float | None:
    floor = row.get("collapse_reference")
    return row["collapse"] / floor if floor else None


def _kept_ratio(row: dict) -> float | None:
    """Other stated attributes on erase prompts, as a multiple of the base's on the same prompts and seeds."""
    base = (row.get("base") or {}).get("erase_other")
    return row["erase_other"] / base if row.get("erase_other") is not None and base else None


def _grouped(rows: list[dict], key) -> dict:
    groups: dict = defaultdict(list)
    for row in rows:
        groups[key(row)].append(row)
    return groups


def _content(metrics: dict) -> str:
    return " / ".join(_cell(metrics.get(key), 2) for key in ("erase_other", "no_object", "blank"))


def method_concept_table(rows: list[dict], bases: dict[str, dict]) -> str:
    """One line per (method, concept), means over seeds; the base model first for each concept."""
    lines = [
        "| method | concept | seeds | Acc_e | Acc_ir | H | erase prompts: other kept / no object / blank | "
        "H_content | collapse (FD) | attack success | train s |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for concept, base in bases.items():
        lines.append(
            f"| base | {concept} | – | {_cell(base['acc_e'])} | {_cell(base['acc_ir'])} | {_cell(base['h'])} | "
            f"{_content(base)} | {_cell(base.get('h_content'))} | "
            f"{_cell(base['collapse'], 4)} (seed floor) | {_cell(base['attack_success'])} | – |"
        )
    for (method, concept), group in _grouped(rows, lambda row: (row["method"], row["concept"])).items():
        mean = _means(group, (*_COMMON_KEYS, "collapse", "attack_success", "erase_other", "blank"))
        diverged = sum(bool(row.get("diverged")) for row in group)
        name = f"{method} (diverged in {diverged})" if diverged else method
        lines.append(
            f"| {name} | {concept} | {len(group)} | {_cell(mean['acc_e'])} | {_cell(mean['acc_ir'])} | "
            f"{_cell(mean['h'])} | {_content(mean)} | {_cell(mean['h_content'])} | "
            f"{_cell(mean['collapse'], 4)} | {_cell(mean['attack_success'])} | "
            f"{_cell(mean['train_seconds'], 0)} |"
        )
    return "\n".join(lines)


def method_table(rows: list[dict]) -> str:
    """One line per method, means over concepts and seeds; collapse also as a multiple of the base seed floor."""
    lines = [
        "| method | cells | Acc_e | Acc_ir | H | other kept ÷ base | no object | H_content | collapse ÷ seed floor | "
        "attack: synonym / shuffle / vector / max | train s |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for method, group in _grouped(rows, lambda row: row["method"]).items():
        mean = _means(group, (*_COMMON_KEYS, *_ATTACK_KEYS))
        attacks = " / ".join(_cell(mean[key], 2) for key in _ATTACK_KEYS)
        lines.append(
            f"| {method} | {len(group)} | {_cell(mean['acc_e'])} | {_cell(mean['acc_ir'])} | {_cell(mean['h'])} | "
            f"{_cell(_mean(_kept_ratio(row) for row in group), 2)} | {_cell(mean['no_object'], 2)} | "
            f"{_cell(mean['h_content'])} | {_cell(_mean(_ratio(row) for row in group), 2)} | {attacks} | "
            f"{_cell(mean['train_seconds'], 0)} |"
        )
    return "\n".join(lines)


def sweep_table(rows: list[dict], parameter: str) -> str:
    """One line per value of the swept parameter (means over concepts and seeds)."""
    lines = [
        f"| {parameter} | cells | Acc_e | Acc_ir | H | collapse ÷ seed floor | final λ |",
        "|---|---|---|---|---|---|---|",
    ]
    swept = [row for row in rows if parameter in row]
    for value, group in sorted(_grouped(swept, lambda row: row[parameter]).items()):
        mean = _means(group, ("acc_e", "acc_ir", "h", "final_lambda"))
        lines.append(
            f"| {value:g} | {len(group)} | {_cell(mean['acc_e'])} | {_cell(mean['acc_ir'])} | {_cell(mean['h'])} | "
            f"{_cell(_mean(_ratio(row) for row in group), 2)} | {_cell(mean['final_lambda'], 2)} |"
        )
    return "\n".join(lines)


def sweep_series(rows: list[dict], parameter: str) -> tuple[list[float], dict[str, list[float | None]]]:
    """(sorted values, {"Acc_e": [...], "Acc_ir": [...], "H": [...]}) for a plot."""
    groups = _grouped([row for row in rows if parameter in row], lambda row: row[parameter])
    values = sorted(groups)
    series = {
        label: [_mean(row[key] for row in groups[value]) for value in values]
        for label, key in (("Acc_e", "acc_e"), ("Acc_ir", "acc_ir"), ("H", "h"))
    }
    return values, series


# Issue 18's targets per erased value (held-out phrasings, a judge other than the strength search's):
TARGETS = {"acc_e": 0.05, "attack_success_synonym": 0.05, "other_ratio": 0.90, "no_object": 0.05, "keep_ratio": 0.95}


def _checked(value: float | None, bound: float, at_most: bool) -> str:
    if value is None:
        return "–"
    passed = value <= bound if at_most else value >= bound
    return f"{value:.3f}" if passed else f"**{value:.3f}** ✗"


def targets_table(rows: list[dict]) -> str:
    """One line per (method, concept), means over seeds, each cell checked against TARGETS (✗ marks a miss):
    detected on held-out phrasings and on synonyms (≤ 0.05), other stated attributes on erase prompts ÷ base
    (≥ 0.90), no-object share (≤ 0.05), keep-set accuracy ÷ base (≥ 0.95)."""
    lines = [
        "| method | concept | strength | detected (held-out phrasings) | detected (synonyms) | other kept ÷ base | "
        "no object (base) | keep ÷ base | all met |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for (method, concept), group in _grouped(rows, lambda row: (row["method"], row["concept"])).items():
        values = {
            "acc_e": _mean(row["acc_e"] for row in group),
            "attack_success_synonym": _mean(row.get("attack_success_synonym") for row in group),
            "other_ratio": _mean(_kept_ratio(row) for row in group),
            "no_object": _mean(row.get("no_object") for row in group),
            "keep_ratio": _mean(row["acc_ir"] / row["base"]["acc_ir"] for row in group if row["base"].get("acc_ir")),
        }
        at_most = {
            "acc_e": True,
            "attack_success_synonym": True,
            "other_ratio": False,
            "no_object": True,
            "keep_ratio": False,
        }
        cells = {key: _checked(values[key], TARGETS[key], at_most[key]) for key in TARGETS}
        met = all(values[key] is not None and "✗" not in cells[key] for key in TARGETS)
        base_no_object = _mean((row.get("base") or {}).get("no_object") for row in group)
        lines.append(
            f"| {method} | {concept} | {_cell(_mean(row.get('strength') for row in group), 2)} | "
            f"{cells['acc_e']} | {cells['attack_success_synonym']} | {cells['other_ratio']} | "
            f"{cells['no_object']} ({_cell(base_no_object, 2)}) | {cells['keep_ratio']} | "
            f"{'yes' if met else 'no'} |"
        )
    return "\n".join(lines)
