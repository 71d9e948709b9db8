"""User-supplied file names (save name, resume file, erasure file) resolved strictly inside one folder.

No ComfyUI import: the rules are tested without it. A name is one path component of letters, digits, space,
`-`, `_`, `.` (no separators, no `..`, not hidden, ≤ 128 characters, not a name Windows reserves for a device such as
`CON` or `LPT1`); the resolved path, symlinks followed, must lie inside the folder and may not be a directory.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

SUFFIX = ".safetensors"
_ALLOWED = re.compile(r"[A-Za-z0-9 _.\-]+")
# Device names Windows reserves in every folder, with any extension ("nul.safetensors" opens the null device).
WINDOWS_RESERVED = frozenset(
    {"CON", "PRN", "AUX", "NUL", *(f"COM{digit}" for digit in range(10)), *(f"LPT{digit}" for digit in range(10))}
)


class UnsafeNameError(ValueError):
    """A file name that could escape the pack's folder or is not a safetensors file."""


def check_name(name: str, what: str = "file name") -> str:
    """The name with `.safetensors` appended if missing; ValueError naming the problem and the fix."""
    if not isinstance(name, str):
        raise UnsafeNameError(f"{what} must be text, got {type(name).__name__}")
    text = name.strip()
    if not text:
        raise UnsafeNameError(f"{what} is empty; give a name such as 'star-erased'")
    if len(text) > 128:
        raise UnsafeNameError(f"{what} {text[:40]!r}... is {len(text)} characters long; use at most 128")
    if "/" in text or "\\" in text or os.sep in text or (os.altsep and os.altsep in text):
        raise UnsafeNameError(
            f"{what} {text!r} contains a path separator; give a plain name, the file always goes "
            f"into the pack's erasure folder"
        )
    if text in (".", "..") or text.startswith("."):
        raise UnsafeNameError(f"{what} {text!r} may not start with '.'; give a plain name such as 'star-erased'")
    if not _ALLOWED.fullmatch(text):
        bad = sorted({character for character in text if not _ALLOWED.fullmatch(character)})
        raise UnsafeNameError(f"{what} {text!r} contains {bad}; use letters, digits, space, '-', '_' and '.'")
    if text.split(".", 1)[0].rstrip(" ").upper() in WINDOWS_RESERVED:
        raise UnsafeNameError(
            f"{what} {text!r} is a device name Windows reserves ({text.split('.', 1)[0].upper()}); "
            f"pick another name such as 'star-erased'"
        )
    if not text.endswith(SUFFIX):
        if "." in text and text.rsplit(".", 1)[1].lower() in ("pt", "pth", "ckpt", "bin", "pkl"):
            raise UnsafeNameError(f"{what} {text!r} names a pickle format; erasure files are .safetensors only")
        text += SUFFIX
    return text


def output_inside(folder: str | os.PathLike, name: str, what: str = "save_name") -> Path:
    """`resolve_inside` for a file to write: the folder must also exist and be writable (checked before training)."""
    from zerase_core.common.files import check_output

    return check_output(resolve_inside(folder, name, what), what)


def resolve_inside(folder: str | os.PathLike, name: str, what: str = "file name", must_exist: bool = False) -> Path:
    """`folder/name` after `check_name`, refusing anything that resolves (symlinks followed) outside `folder`."""
    root = Path(folder).resolve()
    target = root / check_name(name, what)
    resolved = target.resolve()
    if resolved.parent != root and root not in resolved.parents:
        raise UnsafeNameError(
            f"{what} {name!r} resolves to {resolved}, outside the erasure folder {root} "
            f"(a symlink?); "
            f"pick a file inside the folder"
        )
    if resolved.is_dir():
        raise UnsafeNameError(f"{what} {name!r} is a folder in {root}, not a file; pick another name")
    if must_exist and not resolved.is_file():
        raise UnsafeNameError(f"{what} {name!r} does not exist in {root}; pick one of the listed files")
    return target
