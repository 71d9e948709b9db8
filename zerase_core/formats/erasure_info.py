"""ErasureInfo: the metadata of an erasure file (one JSON object under `zerase.erasure`) and its validation.

Every field is checked on construction (`base_config` must be a valid DiTConfig, `adapter` a valid AdapterConfig or
`{}` for a uce-text erasure), so forged or damaged metadata fails with a message naming the field. `erasure_file`
checks the tensors against it and reads, writes and applies erasure files.
"""

from __future__ import annotations

import dataclasses
import json
import math
import numbers
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from ..adapters.gated import KEY_PREFIX, AdapterConfig
from ..common.limits import check_alpha, check_strength
from ..model.config import DiTConfig

ERASURE_FORMAT_VERSION = 1
METADATA_KEY = "zerase.erasure"
UCE_TEXT_METHOD = "uce-text"  # closed-form edit of cap_embedder.1: W' = W + strength·delta
UCE_DELTA_KEY = f"{KEY_PREFIX}cap_embedder.1.delta"  # [dim, cap_feat_dim]


class ErasureFileError(ValueError):
    """An erasure file or its metadata that cannot be used; the message names the file and the problem."""


def adapter_dict(config: AdapterConfig) -> dict[str, Any]:
    """The JSON form of an AdapterConfig, as stored in `ErasureInfo.adapter`."""
    return {
        "rank": int(config.rank),
        "alpha": float(config.alpha),
        "slices": list(config.slices),
        "families": list(config.families),
        "layers": None if config.layers is None else [int(index) for index in config.layers],
        "gate": config.gate,
    }


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _is_int(value: object) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)  # numpy integers included


def _is_number(value: object) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


def _is_strings(value: object) -> bool:
    return isinstance(value, (list, tuple)) and all(isinstance(item, str) for item in value)


def _field_error(name: str, value: object, expected: str) -> ErasureFileError:
    return ErasureFileError(f"erasure metadata field '{name}' must be {expected}, got {_short(value)}")


@dataclass(frozen=True, kw_only=True)
class ErasureInfo:
    method: str  # "z-erase", "esd", "uce-text", ...
    concepts: tuple[str, ...]  # erased concepts, as the user named them
    adapter: dict[str, Any]  # adapter_dict(AdapterConfig); {} for uce-text
    base_fingerprint: str  # checkpoint.fingerprint of the base model it was trained on
    base_config: dict[str, Any]  # DiTConfig.to_dict() of that base
    recommended_strength: float = 1.0  # adapter strength to apply at (code release: ×15 for nudity, §2.10)
    keywords: tuple[str, ...] = ()  # tokens whose attention the erasure suppresses
    anchors: tuple[str, ...] = ()  # preservation prompts / mapping concepts
    steps_done: int = 0
    steps_total: int = 0
    seed: int = 0
    partial: bool = False  # training not finished: resume state may follow under zerase_state.*
    summary: dict[str, Any] = field(default_factory=dict)  # final λ, losses ... (JSON values)
    training: dict[str, Any] = field(default_factory=dict)  # the full training config, for resume; opaque here
    created: str = field(default_factory=_now)  # ISO 8601
    format_version: int = ERASURE_FORMAT_VERSION

    def __post_init__(self) -> None:
        if not _is_int(self.format_version) or self.format_version != ERASURE_FORMAT_VERSION:
            raise ErasureFileError(
                f"unsupported erasure format_version {_short(self.format_version)}; this ZErase "
                f"reads version {ERASURE_FORMAT_VERSION} (update ZErase to read newer files)"
            )
        if not isinstance(self.method, str) or not self.method:
            raise _field_error("method", self.method, "a non-empty string")
        for name in ("concepts", "keywords", "anchors"):
            value = getattr(self, name)
            if not _is_strings(value):
                raise _field_error(name, value, "a list of strings")
            object.__setattr__(self, name, tuple(value))
        try:
            strength = check_strength(self.recommended_strength, "erasure metadata field 'recommended_strength'")
            object.__setattr__(self, "recommended_strength", strength)
        except ValueError as error:
            raise ErasureFileError(str(error)) from None
        for name in ("steps_done", "steps_total", "seed"):
            if not _is_int(getattr(self, name)) or getattr(self, name) < 0:
                raise _field_error(name, getattr(self, name), "an integer ≥ 0")
            object.__setattr__(self, name, int(getattr(self, name)))
        if self.steps_done > self.steps_total:
            raise _field_error("steps_done", self.steps_done, f"≤ steps_total ({self.steps_total})")
        if not isinstance(self.partial, bool):
            raise _field_error("partial", self.partial, "true or false")
        for name in ("summary", "training"):
            if not isinstance(getattr(self, name), dict):
                raise _field_error(name, getattr(self, name), "a JSON object")
        if not isinstance(self.base_fingerprint, str) or not self.base_fingerprint:
            raise _field_error("base_fingerprint", self.base_fingerprint, "a non-empty string")
        try:
            datetime.fromisoformat(self.created)
        except (TypeError, ValueError):
            raise _field_error("created", self.created, "an ISO 8601 time string") from None
        object.__setattr__(self, "base_config", _checked_base_config(self.base_config))
        object.__setattr__(self, "adapter", _checked_adapter(self.method, self.adapter))

    def adapter_config(self) -> AdapterConfig:
        if self.method == UCE_TEXT_METHOD:
            raise ErasureFileError("a uce-text erasure edits cap_embedder.1 and has no gated adapters")
        values = dict(self.adapter)
        for name in ("slices", "families", "layers"):
            if values[name] is not None:
                values[name] = tuple(values[name])
        return AdapterConfig(**values)

    def dit_config(self) -> DiTConfig:
        return DiTConfig.from_dict(self.base_config)

    def to_metadata(self) -> dict[str, str]:
        data = dataclasses.asdict(self)
        try:
            return {METADATA_KEY: json.dumps(data, allow_nan=False)}
        except (TypeError, ValueError) as error:
            raise ErasureFileError(
                f"erasure metadata is not JSON-serialisable (check 'summary' and 'training'): {error}"
            ) from None

    @classmethod
    def from_metadata(cls, metadata: Mapping[str, str] | None) -> ErasureInfo:
        if not metadata or METADATA_KEY not in metadata:
            raise ErasureFileError(f"no '{METADATA_KEY}' metadata: not a ZErase erasure file")
        try:
            data = json.loads(metadata[METADATA_KEY])
        except json.JSONDecodeError as error:
            raise ErasureFileError(f"metadata '{METADATA_KEY}' is not valid JSON: {error}") from None
        if not isinstance(data, dict):
            raise ErasureFileError(f"metadata '{METADATA_KEY}' must be a JSON object, got {_short(data)}")
        if "format_version" not in data:
            raise ErasureFileError(f"metadata '{METADATA_KEY}' has no 'format_version'")
        version = data["format_version"]
        if not _is_int(version) or version != ERASURE_FORMAT_VERSION:
            raise ErasureFileError(
                f"unsupported erasure format_version {_short(version)}; this ZErase reads version "
                f"{ERASURE_FORMAT_VERSION} (update ZErase to read newer files)"
            )
        known = [item.name for item in dataclasses.fields(cls)]
        unknown = sorted(set(data) - set(known))
        if unknown:
            raise ErasureFileError(f"unknown erasure metadata fields {unknown}; valid fields: {known}")
        missing = [name for name in known if name not in data]
        if missing:
            raise ErasureFileError(f"erasure metadata lacks the fields {missing}")
        return cls(**data)


def _checked_base_config(value: object) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _field_error("base_config", value, "a JSON object (DiTConfig.to_dict())")
    try:
        return DiTConfig.from_dict(value).to_dict()
    except (TypeError, ValueError) as error:
        raise _field_error("base_config", value, f"a valid DiTConfig ({error})") from None


def _checked_adapter(method: str, value: object) -> dict[str, Any]:
    if method == UCE_TEXT_METHOD:
        if value != {}:
            raise _field_error("adapter", value, "{} for a uce-text erasure (it has no gated adapters)")
        return {}
    if not isinstance(value, dict):
        raise _field_error("adapter", value, "a JSON object (AdapterConfig)")
    known = [item.name for item in dataclasses.fields(AdapterConfig)]
    unknown, missing = sorted(set(value) - set(known)), [name for name in known if name not in value]
    if unknown or missing:
        raise _field_error(
            "adapter", value, f"an object with exactly the keys {known} (unknown {unknown}, missing {missing})"
        )
    layers = value["layers"]
    checks = {
        "rank": (_is_int(value["rank"]), "an integer"),
        "alpha": (_is_number(value["alpha"]), "a finite number"),
        "gate": (isinstance(value["gate"], str), "a string"),
        "slices": (_is_strings(value["slices"]), "a list of strings"),
        "families": (_is_strings(value["families"]), "a list of strings"),
        "layers": (
            layers is None or (isinstance(layers, (list, tuple)) and all(_is_int(i) for i in layers)),
            "null or a list of integers",
        ),
    }
    for name, (ok, expected) in checks.items():
        if not ok:
            raise _field_error(f"adapter.{name}", value[name], expected)
    try:
        check_alpha(value["alpha"], "erasure metadata field 'adapter.alpha'")
    except ValueError as error:
        raise ErasureFileError(str(error)) from None
    values: dict[str, Any] = {
        name: tuple(item) if isinstance(item, (list, tuple)) else item for name, item in value.items()
    }
    try:
        return adapter_dict(AdapterConfig(**values))
    except (TypeError, ValueError) as error:
        raise _field_error("adapter", value, f"a valid AdapterConfig ({error})") from None


__all__ = [
    "ERASURE_FORMAT_VERSION",
    "METADATA_KEY",
    "UCE_TEXT_METHOD",
    "UCE_DELTA_KEY",
    "ErasureFileError",
    "ErasureInfo",
    "adapter_dict",
]
