"""One source for every setting: EraseConfig's field metadata gives the range check, the CLI options and the node's
inputs (the node side runs inside ComfyUI: tests/comfyui/test_comfyui_nodes.py)."""

from __future__ import annotations

import dataclasses

import pytest
from test_nodes_inputs import nodes_module

from zerase_core.cli import build_parser, erase_config_from_args
from zerase_core.engine.erase_config import EraseConfig
from zerase_core.engine.settings import Setting, described, node_input

REQUIRED = ["erase", "--concept", "star", "--out", "x.safetensors"]


def _erase_parser():
    parser = build_parser()
    commands = next(action for action in parser._actions if action.dest == "command")
    return commands.choices["erase"]


def test_every_cli_setting_is_an_option_with_the_configs_default_and_help():
    options = {option: action for action in _erase_parser()._actions for option in action.option_strings}
    settings = {name: spec for name, (_, spec) in described(EraseConfig).items() if spec.cli}
    assert {
        "steps",
        "learning_rate",
        "rank",
        "eta",
        "target_eta",
        "epsilon",
        "beta",
        "pool_prompts",
        "sample_steps",
        "shuffle_bank",
    } <= set(settings)
    for name, spec in settings.items():
        action = options[spec.cli]
        assert action.dest == name and action.default is None and spec.help.rstrip(".") in action.help
        default = getattr(EraseConfig(), name)
        if default is not None:
            assert f"(default {default:g})" in action.help
    assert erase_config_from_args(build_parser().parse_args(REQUIRED)) == EraseConfig()


def test_each_cli_option_reaches_its_field():
    for name, (field, spec) in described(EraseConfig).items():
        if not spec.cli:
            continue
        value = spec.kind(spec.maximum)  # a value other than the default, inside the range
        config = erase_config_from_args(build_parser().parse_args([*REQUIRED, spec.cli, str(value)]))
        assert getattr(config, name) == value != field.default, name


@pytest.mark.parametrize(
    "name", [name for name, (_, spec) in described(EraseConfig).items() if spec.minimum is not None]
)
def test_the_range_of_every_setting_is_enforced_at_its_ends(name):
    spec = described(EraseConfig)[name][1]
    for inside in (spec.minimum, spec.maximum):
        assert getattr(EraseConfig(**{name: spec.kind(inside)}), name) == inside
    span = spec.maximum - spec.minimum
    for outside in (spec.minimum - max(1, span), spec.maximum + max(1, span)):
        with pytest.raises(ValueError, match=f"{name}=.* is out of range"):
            EraseConfig(**{name: spec.kind(outside)})


def test_node_inputs_and_train_inputs_take_the_settings_defaults():
    training = nodes_module("training")
    inputs = training.TrainInputs(concepts="star")
    for name, (field, spec) in described(EraseConfig).items():
        if spec.node is None:
            continue
        widget = node_input(EraseConfig, name)
        minimum = spec.minimum if spec.node_minimum is None else spec.node_minimum  # shuffle_bank: -1 = per step
        assert (widget["min"], widget["max"], widget["tooltip"]) == (minimum, spec.maximum, spec.node_help or spec.help)
        assert widget["default"] == getattr(inputs, spec.node) == (0.0 if name == "epsilon" else field.default)
    assert dataclasses.replace(inputs).steps == EraseConfig().steps


@pytest.mark.parametrize("bounds", [{"minimum": 0.0}, {"maximum": 1.0}])
def test_a_setting_with_one_bound_is_refused_where_it_is_written(bounds):
    # a range check against a missing bound would fail with a TypeError on the first user's value instead
    with pytest.raises(ValueError, match="give both minimum and maximum"):
        Setting("learning rate", **bounds)
    assert Setting("learning rate", minimum=0.0, maximum=1.0).maximum == 1.0


def test_bench_set_reaches_every_trained_cells_config_and_refuses_bad_text(capsys):
    from zerase_core.cli.bench import plan_from_arguments

    args = build_parser().parse_args(["bench", "--set", "probe_size=1", "--set", "beta=0.5", "--concepts", "red"])
    plan = plan_from_arguments(args)
    config = plan.config(plan.cells()[0])
    assert (config.probe_size, config.beta) == (1, 0.5)
    assert plan.identity()["erase_overrides"] == {"probe_size": 1, "beta": 0.5}  # a resumed state must match it
    for text, named in (("probe_size=0", "out of range"), ("probe=1", "not a setting"), ("probe_size", "NAME=VALUE")):
        with pytest.raises(SystemExit):
            build_parser().parse_args(["bench", "--set", text])
        assert named in capsys.readouterr().err
