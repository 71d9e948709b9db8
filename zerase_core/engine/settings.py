"""Settings described once. Each user-facing EraseConfig field carries a `Setting` (range, help, its CLI option and
its ZEraseTrain widget) in its dataclass metadata; from it come the range check of EraseConfig, the options of
`python -m zerase_core erase` and the node's inputs, so the three cannot disagree (tests/test_settings.py).
"""

from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass
from typing import Any

from ..common.limits import check_range

KEY = "setting"
_UNSET: Any = object()


@dataclass(frozen=True)
class Setting:
    help: str
    minimum: float | None = None  # range [minimum, maximum], checked by EraseConfig
    maximum: float | None = None
    hint: str = ""  # appended to the out-of-range message: what the value means
    kind: type = float  # int or float (the field's default may be None)
    cli: str | None = None  # the `erase` option ("--lr"); None: not a CLI option
    node: str | None = None  # the ZEraseTrain widget; None: not a node input
    node_default: Any = _UNSET  # where the widget's default differs from the field's (epsilon: 0 = preset)
    node_minimum: float | None = None  # where the widget takes values the node resolves first (shuffle_bank: -1)
    node_help: str | None = None  # the widget's tooltip where the node's meaning is wider than the field's
    step: float | None = None  # the widget's increment and rounding
    round: float | None = None
    metavar: str | None = None
    unset: str = "the concept kind's preset"  # what a None default means, for the CLI's help

    def __post_init__(self) -> None:
        if (self.minimum is None) != (self.maximum is None):
            raise ValueError(
                f"setting {self.help!r}: give both minimum and maximum, or neither "
                f"(got {self.minimum} and {self.maximum})"
            )


def setting(default: Any, help: str, **options: Any) -> Any:
    """A dataclass field with `default` and its Setting(help, **options)."""
    return dataclasses.field(default=default, metadata={KEY: Setting(help, **options)})


def cli_and_node(name: str) -> dict[str, str]:
    """The `cli` and `node` options of a setting that is both the `erase` option `--name` (dashed) and the ZEraseTrain
    widget `name` (the field's own name, where the two agree)."""
    return {"cli": "--" + name.replace("_", "-"), "node": name}


def count_setting(default: int, help: str, maximum: int, name: str) -> Any:
    """A whole-number setting from 1 to `maximum` set in either place (`cli_and_node`): steps, rank, batch and pool
    sizes."""
    return setting(default, help, minimum=1, maximum=maximum, kind=int, **cli_and_node(name))


def described(config_class) -> dict[str, tuple[dataclasses.Field, Setting]]:
    """Field name -> (field, Setting) of every described field, in field order."""
    return {
        field.name: (field, field.metadata[KEY]) for field in dataclasses.fields(config_class) if KEY in field.metadata
    }


def check_ranges(config, names: tuple[str, ...] | None = None) -> None:
    """Check each described field's value (None = its preset, not checked) against its range."""
    for name, (_, spec) in described(type(config)).items():
        value = getattr(config, name)
        if (
            (names is None or name in names)
            and value is not None
            and spec.minimum is not None
            and spec.maximum is not None
        ):
            check_range(name, value, spec.minimum, spec.maximum, spec.hint)


def _parse(spec: Setting):
    kind = spec.kind

    def parse(text: str):
        try:
            return kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a valid {kind.__name__}") from None

    parse.__name__ = kind.__name__
    return parse


def add_arguments(parser: argparse.ArgumentParser, config_class) -> None:
    """The CLI options of the described fields that have one; each defaults to None (= the config's default)."""
    for name, (field, spec) in described(config_class).items():
        if spec.cli is None:
            continue
        shown = spec.unset if field.default is None else f"{field.default:g}"
        parser.add_argument(
            spec.cli,
            dest=name,
            type=_parse(spec),
            metavar=spec.metavar,
            help=f"{spec.help.rstrip('.')} (default {shown})",
        )


def from_arguments(args: argparse.Namespace, config_class) -> dict[str, Any]:
    """The fields given on the command line (options left out keep the config's defaults)."""
    return {
        name: getattr(args, name)
        for name, (_, spec) in described(config_class).items()
        if spec.cli is not None and getattr(args, name, None) is not None
    }


def parse_assignment(text: str, config_class) -> tuple[str, Any]:
    """`NAME=VALUE` for a described field of `config_class` (bench's --set): the name and the value of its kind,
    range-checked; a clear error naming the text and the fix otherwise."""
    fields = described(config_class)
    name, separator, value = text.partition("=")
    name = name.strip().replace("-", "_")
    if not separator or not value.strip():
        raise argparse.ArgumentTypeError(f"--set {text!r}: write NAME=VALUE, e.g. probe_size=1")
    if name not in fields:
        raise argparse.ArgumentTypeError(f"--set {text!r}: {name!r} is not a setting; choose from {sorted(fields)}")
    spec = fields[name][1]
    parsed = _parse(spec)(value.strip())
    if spec.minimum is not None and spec.maximum is not None:
        try:
            check_range(name, parsed, spec.minimum, spec.maximum, spec.hint)
        except ValueError as error:
            raise argparse.ArgumentTypeError(f"--set {text!r}: {error}") from None
    return name, parsed


def node_input(config_class, name: str) -> dict[str, Any]:
    """Keyword arguments of the ComfyUI input of field `name`: default, min, max, step, round, tooltip."""
    field, spec = described(config_class)[name]
    default = field.default if spec.node_default is _UNSET else spec.node_default
    minimum = spec.minimum if spec.node_minimum is None else spec.node_minimum
    options = {
        "default": default,
        "min": spec.kind(minimum),
        "max": spec.kind(spec.maximum),
        "tooltip": spec.help if spec.node_help is None else spec.node_help,
    }
    if spec.step is not None:
        options["step"] = spec.step
    if spec.round is not None:
        options["round"] = spec.round
    return options
