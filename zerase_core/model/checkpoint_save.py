"""Saving a DiT as a safetensors file with ComfyUI's bare NextDiT keys and its config as metadata, written one
tensor at a time (no second copy) and atomically (temporary file, fsync, replace)."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import struct
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import BinaryIO

import torch

from ..common.files import SAFETENSORS_DTYPES
from .checkpoint_keys import StateDict
from .dit import ZImageDiT

PathLike = str | os.PathLike[str]


def save_dit(
    model: ZImageDiT, path: PathLike, extra_metadata: Mapping[str, str] | None = None, dtype: torch.dtype | None = None
) -> None:
    """Writes the model with bare ComfyUI keys and its config as metadata, atomically (temp file, fsync, replace).

    Tensors are cast (when `dtype` is given) and written one at a time, so saving needs no second copy.
    """
    metadata = model.config.to_metadata()
    for key, value in (extra_metadata or {}).items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise ValueError(
                f"extra_metadata {key!r}: keys and values must be str, got {type(value).__name__}; json.dumps it first"
            )
        if key in metadata:
            raise ValueError(f"extra_metadata may not set '{key}': save_dit writes it from model.config")
        metadata[key] = value
    tensors = {key: value.detach() for key, value in model.state_dict().items()}
    if dtype is not None:
        targets = {key: dtype if value.is_floating_point() else value.dtype for key, value in tensors.items()}
    else:
        targets = {key: value.dtype for key, value in tensors.items()}
    _write_atomically(Path(path), lambda handle: _write_safetensors(handle, tensors, targets, metadata))


def _write_safetensors(
    handle: BinaryIO, tensors: StateDict, targets: dict[str, torch.dtype], metadata: dict[str, str]
) -> None:
    """The safetensors layout: u64 header length, JSON header (space-padded to 8 bytes), raw little-endian data."""
    if sys.byteorder != "little":
        raise RuntimeError("save_dit writes tensor bytes as they lie in memory and needs a little-endian machine")
    header: dict[str, object] = {"__metadata__": metadata}
    offset = 0
    for key, value in tensors.items():
        if targets[key] not in SAFETENSORS_DTYPES:
            raise ValueError(f"{key} has dtype {targets[key]}, which safetensors cannot store")
        size = value.numel() * torch.empty((), dtype=targets[key]).element_size()
        header[key] = {
            "dtype": SAFETENSORS_DTYPES[targets[key]],
            "shape": list(value.shape),
            "data_offsets": [offset, offset + size],
        }
        offset += size
    encoded = json.dumps(header, separators=(",", ":")).encode("utf-8")
    # Space-pad so the data starts on a 64-byte boundary: readers that map the file (safetensors, real/mapped.py)
    # then hand out tensors with the alignment of freshly allocated ones, and matmul kernels round the same way
    # (an 8-byte-aligned fp32 weight gave outputs 3e-6 off the in-memory model's).
    encoded += b" " * (-(8 + len(encoded)) % 64)
    handle.write(struct.pack("<Q", len(encoded)))
    handle.write(encoded)
    for key, value in tensors.items():
        data = value.to("cpu", targets[key]).contiguous().reshape(-1).view(torch.uint8)
        handle.write(data.numpy().data)  # the array's buffer: no copy


def _write_atomically(path: Path, write: Callable[[BinaryIO], None]) -> None:
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    try:
        with open(temporary, "xb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
    with contextlib.suppress(OSError):  # make the rename durable; directories can't be opened on Windows
        directory = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)


__all__ = ["save_dit"]
