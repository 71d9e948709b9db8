"""The concept list of `erase-many`: one erasure a line.

    # comments and blank lines are ignored
    star
    red | kind=attribute
    circle | anchor=a red square | anchor=a blue triangle on a white background
    star + red | name=star-red

A line is fields separated by `|`. The first names the concept; `a + b` makes one joint erasure of several concepts.
The others are `key=value`: `anchor=PROMPT` (repeatable: the preservation prompts, default generated from the
concept), `kind=KIND` (the ε / qkv-slice preset: object, attribute, style, abstract, nudity, violence, identity;
default chosen from the concept) and `name=NAME` (the file stem in the output folder; default the concepts joined
by `-`, lower-cased, characters other than letters, digits, `.`, `_` and `-` replaced by `_`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from .engine.erase_config import EPSILON_PRESETS

_NAME = re.compile(r"[a-z0-9][a-z0-9._-]{0,99}")
_KEYS = ("anchor", "kind", "name")


class ConceptListError(ValueError):
    """A concept list that cannot be used; the message names the file, the line and the fix."""


@dataclass(frozen=True)
class ConceptEntry:
    concepts: tuple[str, ...]
    name: str
    anchors: tuple[str, ...] = ()
    kind: str | None = None
    line: int = 0

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "concepts": list(self.concepts),
            "anchors": list(self.anchors),
            "kind": self.kind,
            "line": self.line,
        }


def default_name(concepts) -> str:
    name = re.sub(r"[^a-z0-9._-]+", "_", "-".join(concepts).lower()).strip("._-")
    return name[:100] or "concept"


def parse_line(text: str, line: int, where: str) -> ConceptEntry | None:
    text = text.strip()
    if not text or text.startswith("#"):
        return None
    fields = [field.strip() for field in text.split("|")]
    concepts = tuple(part.strip() for part in fields[0].split("+"))
    if not all(concepts):
        raise ConceptListError(f"{where}:{line}: empty concept in {fields[0]!r}; write `a + b` for a joint erasure")
    if len(set(concepts)) != len(concepts):
        raise ConceptListError(f"{where}:{line}: {fields[0]!r} repeats a concept")
    values: dict[str, list[str]] = {key: [] for key in _KEYS}
    for field in fields[1:]:
        key, equals, value = field.partition("=")
        key, value = key.strip(), value.strip()
        if not equals or key not in _KEYS or not value:
            raise ConceptListError(
                f"{where}:{line}: field {field!r} must be key=value with key one of {list(_KEYS)} "
                f"(e.g. `{concepts[0]} | anchor=a photo of a cat`)"
            )
        values[key].append(value)
    for key in ("kind", "name"):
        if len(values[key]) > 1:
            raise ConceptListError(f"{where}:{line}: {key}= given {len(values[key])} times; give it once")
    kind = values["kind"][0] if values["kind"] else None
    if kind is not None and kind not in EPSILON_PRESETS:
        raise ConceptListError(f"{where}:{line}: kind={kind!r} is not one of {list(EPSILON_PRESETS)}")
    name = values["name"][0] if values["name"] else default_name(concepts)
    if not _NAME.fullmatch(name) or name.endswith(".safetensors") or ".." in name:
        raise ConceptListError(
            f"{where}:{line}: name={name!r} must be 1-100 characters of a-z, 0-9, '.', '_', '-', "
            f"starting with a letter or digit (it becomes NAME.safetensors in the output folder)"
        )
    return ConceptEntry(concepts, name, tuple(values["anchor"]), kind, line)


def parse_concepts(text: str, where: str = "<list>") -> list[ConceptEntry]:
    entries = [
        entry
        for number, line in enumerate(text.splitlines(), 1)
        if (entry := parse_line(line, number, where)) is not None
    ]
    if not entries:
        raise ConceptListError(f"{where} names no concept; write one concept a line (see `erase-many --help`)")
    seen: dict[str, int] = {}
    for entry in entries:
        if entry.name in seen:
            raise ConceptListError(
                f"{where}:{entry.line}: name {entry.name!r} is already used on line "
                f"{seen[entry.name]}; give one of them `| name=...`"
            )
        seen[entry.name] = entry.line
    return entries


def read_concepts(path: Path) -> list[ConceptEntry]:
    path = Path(path)
    if not path.is_file():
        raise ConceptListError(f"concept list {path} does not exist or is not a file")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise ConceptListError(f"cannot read concept list {path}: {error}") from None
    return parse_concepts(text, str(path))


def assign(entries: list[ConceptEntry], rank: int, world: int) -> list[ConceptEntry]:
    """Round-robin by list order: entry i runs on rank i % world (deterministic; a rerun gives each rank the
    same entries, so its partial files are its own)."""
    return [entry for index, entry in enumerate(entries) if index % world == rank]
