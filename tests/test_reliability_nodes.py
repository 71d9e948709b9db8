"""Reliability of the nodes' inputs (issue 19), without ComfyUI: the helpers ZEraseTrain, ApplyErasedWeights and
ErasureCompare call before any work. Names stay inside the folder and are writable files; numbers are finite and in
the core's ranges (zerase_core.common.limits, the same as the CLI); concepts are read as the CLI reads them.
docs/safety.md lists the checks and their messages."""
from __future__ import annotations

import re
from dataclasses import replace

import pytest
from test_nodes_inputs import nodes_module
from zerase_fixtures import unwritable_folder  # noqa: F401 (fixture)

from zerase_core.common.limits import CFG_RANGE, STRENGTH_RANGE
from zerase_core.nano.erasure_runs import prompt_set as cli_prompt_set

names = nodes_module("names")
parsing = nodes_module("parsing")
training = nodes_module("training")

LOW, HIGH = STRENGTH_RANGE
ALLOWED = re.escape(f"[{LOW:g}, {HIGH:g}]")
ABSURD = ["nan", "inf", "-inf", "1e9", "-5", repr(HIGH * 2), repr(LOW - 1)]


# ---------------------------------------------------------------- names (save_name, resume_from, erasure files)


@pytest.mark.parametrize("name", ["CON", "con", "nul.safetensors", "Aux", "PRN.erasure", "COM1", "com9", "LPT1",
                                  "lpt0.safetensors", "NUL "])
def test_windows_device_names_are_refused(name):
    with pytest.raises(ValueError, match="device name Windows reserves"):
        names.check_name(name, "save_name")


@pytest.mark.parametrize("name", ["CONSOLE", "con-star", "com10", "nullify", "lpt", "auxiliary.v2"])
def test_names_that_only_start_like_a_device_are_accepted(name):
    assert names.check_name(name) == f"{name}.safetensors"


@pytest.mark.parametrize("name, fragment", [
    ("../escape", "path separator"), ("/etc/passwd", "path separator"), ("a\x00b", "contains"),
    (".hidden", "may not start with '.'"), ("model.ckpt", "pickle"), ("", "empty"), ("x" * 200, "at most 128"),
])
def test_names_that_already_were_refused_stay_refused(name, fragment):
    with pytest.raises(ValueError, match=re.escape(fragment)):
        names.check_name(name)


def test_a_save_name_that_is_a_folder_is_refused(tmp_path):
    (tmp_path / "star.safetensors").mkdir()
    for name in ("star", "star.safetensors"):
        with pytest.raises(ValueError, match="is a folder"):
            names.resolve_inside(tmp_path, name, "save_name")
        with pytest.raises(ValueError, match="is a folder"):
            names.resolve_inside(tmp_path, name, "resume_from", must_exist=True)


def test_the_save_folder_must_exist_and_be_writable_before_training(tmp_path, unwritable_folder):
    folder = tmp_path / "zerase"
    folder.mkdir()
    assert names.output_inside(folder, "star") == folder / "star.safetensors"
    assert list(folder.iterdir()) == []                   # the check leaves nothing behind
    with pytest.raises(ValueError, match="does not exist; create it first"):
        names.output_inside(tmp_path / "missing", "star")
    assert not (tmp_path / "missing").exists()
    with pytest.raises(ValueError, match="cannot write into the folder"):
        names.output_inside(unwritable_folder, "star")


def test_a_symlink_out_of_the_folder_is_still_refused(tmp_path):
    folder, outside = tmp_path / "zerase", tmp_path / "outside"
    folder.mkdir()
    outside.mkdir()
    (folder / "away.safetensors").symlink_to(outside / "new.safetensors")
    with pytest.raises(ValueError, match="outside the erasure folder"):
        names.output_inside(folder, "away")


# ---------------------------------------------------------------- numbers (strengths, sweep, training settings)


@pytest.mark.parametrize("value", ABSURD)
def test_non_finite_or_absurd_strengths_are_refused_with_the_range(value):
    with pytest.raises(ValueError, match=ALLOWED):
        parsing.parse_strengths(f"auto, {value}", 2)
    with pytest.raises(ValueError, match=ALLOWED):
        parsing.parse_sweep(f"0.5, {value}")


def test_strengths_at_the_ends_of_the_range_are_accepted():
    assert parsing.parse_strengths(f"{LOW!r}, auto, {HIGH!r}", 3) == [LOW, None, HIGH]
    assert parsing.parse_sweep(f"{LOW!r}; {HIGH!r}") == [LOW, HIGH]


def test_apply_strengths_are_checked_after_the_multiplier_and_the_one_over_n():
    recommended = [HIGH / 2, HIGH]
    assert parsing.erasure_strengths("", 1.0, recommended) == [value / len(recommended) for value in recommended]
    assert parsing.erasure_strengths("auto, 0.25", 1.0, recommended) == [recommended[0] / 2, 0.25]
    too_much = float(len(recommended) + 1)      # × HIGH / N goes past HIGH for the second file only
    with pytest.raises(ValueError, match=rf"strength of erasure 2 .*{ALLOWED}"):
        parsing.erasure_strengths("", too_much, recommended)
    for multiplier in (float("nan"), float("inf"), -1.0):
        with pytest.raises(ValueError, match=rf"strength multiplier.*{ALLOWED}"):
            parsing.erasure_strengths("", multiplier, recommended)


@pytest.mark.parametrize("field, value, fragment", [
    ("sample_cfg", float("nan"), f"[{CFG_RANGE[0]:g}, {CFG_RANGE[1]:g}]"),
    ("sample_cfg", CFG_RANGE[1] * 2, f"[{CFG_RANGE[0]:g}, {CFG_RANGE[1]:g}]"),
    ("learning_rate", float("nan"), "learning_rate=nan"), ("learning_rate", float("inf"), "learning_rate=inf"),
    ("eta", float("nan"), "eta=nan"), ("beta", float("inf"), "beta=inf"), ("epsilon", float("nan"), "epsilon=nan"),
])
def test_non_finite_training_settings_are_refused(field, value, fragment):
    inputs = replace(training.TrainInputs(concepts="star"), **{field: value})
    with pytest.raises(ValueError, match=re.escape(fragment)):
        training.erase_config(inputs, nano=True)


# ---------------------------------------------------------------- concepts


def test_nano_concepts_are_lower_cased_and_counted_once_as_in_the_cli():
    inputs = training.TrainInputs(concepts="Star\nstar\n STAR \ncircle", keywords="Star, CIRCLE")
    assert training.concept_list(inputs, nano=True) == ("star", "circle")
    assert training.prompt_set(inputs, nano=True) == cli_prompt_set(["star", "circle"], None, inputs.seed)
    assert training.erase_config(inputs, nano=True) == training.erase_config(
        training.TrainInputs(concepts="star\ncircle"), nano=True)


def test_prompt_concepts_of_other_models_keep_their_case_and_drop_repeats():
    inputs = training.TrainInputs(concepts="a painting by Van Gogh\na painting by Van Gogh\nVan Gogh at night")
    assert training.concept_list(inputs, nano=False) == ("a painting by Van Gogh", "Van Gogh at night")
    assert training.prompt_set(inputs, nano=False).erase == ("a painting by Van Gogh", "Van Gogh at night")


def test_an_unknown_nano_word_is_still_refused():
    with pytest.raises(ValueError, match="zebra"):
        training.concept_list(training.TrainInputs(concepts="Zebra"), nano=True)
