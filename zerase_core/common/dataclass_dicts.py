"""Building frozen config dataclasses from JSON-style dicts: unknown keys raise, JSON lists become tuples."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

Config = TypeVar("Config", bound="DataclassInstance")


def config_from_dict(cls: type[Config], data: Mapping, tuple_fields: Iterable[str] = ()) -> Config:
    """`cls(**data)`, rejecting keys `cls` does not have and turning the (non-None) `tuple_fields` into tuples."""
    valid = [field.name for field in dataclasses.fields(cls)]
    unknown = sorted(set(data) - set(valid))
    if unknown:
        raise ValueError(f"unknown {cls.__name__} keys {unknown}; valid keys: {valid}")
    values = dict(data)
    for name in tuple_fields:
        if values.get(name) is not None:
            values[name] = tuple(values[name])
    return cls(**values)
