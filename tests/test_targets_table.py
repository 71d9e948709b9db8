"""The bench's per-value target table (issue 18): each value checked against the targets, misses marked."""
from zerase_core.evaluation.tables import targets_table


def _row(concept, **values):
    base = {"acc_ir": 0.98, "erase_other": 0.95, "no_object": 0.04}
    row = {"method": "zerase", "concept": concept, "seed": 0, "strength": 0.75, "acc_e": 0.0,
           "attack_success_synonym": 0.0, "erase_other": 0.95, "no_object": 0.0, "acc_ir": 0.97, "base": base}
    return {**row, **values}


def test_a_value_meeting_every_target_passes_and_each_miss_is_marked():
    lines = targets_table([_row("circle"), _row("square", acc_e=0.06), _row("red", erase_other=0.80),
                           _row("dotted", no_object=0.25), _row("green", acc_ir=0.90),
                           _row("blue", attack_success_synonym=0.2)]).splitlines()[2:]
    passed = {line.split(" | ")[1]: line.rstrip(" |").endswith("yes") for line in lines}
    assert passed == {"circle": True, "square": False, "red": False, "dotted": False, "green": False, "blue": False}
    assert "**0.060** ✗" in lines[1] and "**0.842** ✗" in lines[2] and "**0.250** ✗ (0.04)" in lines[3]
    assert "**0.918** ✗" in lines[4] and "**0.200** ✗" in lines[5] and "✗" not in lines[0]
