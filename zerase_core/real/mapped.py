"""Memory-mapped safetensors: tensors that are views of the file's pages (copy-on-write), never read into RAM
up front. A model whose dtype equals the file's then holds no second copy of its weights; a cast (fp8 -> bf16)
makes one tensor at a time. Only the header is parsed here (JSON); the bytes are never unpickled."""

from __future__ import annotations

import json
import mmap
import struct
from pathlib import Path

import torch

from ..common.files import SAFETENSORS_DTYPES
from ..model.checkpoint_keys import CheckpointError

_DTYPES = {name: dtype for dtype, name in SAFETENSORS_DTYPES.items()}


def read_header(path: Path) -> tuple[dict[str, dict], dict[str, str], int]:
    """(tensor entries {name: {dtype, shape, data_offsets}}, string metadata, where the data starts)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path} does not exist or is not a file")
    with open(path, "rb") as handle:
        head = handle.read(8)
        if len(head) < 8:
            raise CheckpointError(f"{path} is not a safetensors file (only {len(head)} bytes)")
        (length,) = struct.unpack("<Q", head)
        header = None
        if length <= 100_000_000:
            try:
                header = json.loads(handle.read(length))
            except (json.JSONDecodeError, UnicodeDecodeError) as error:
                problem = f"a damaged safetensors header ({error})"
        else:
            problem = f"no safetensors header (header length {length})"
    if not isinstance(header, dict):
        if head[:1] == b"\x80" or head[:2] == b"PK":  # pickle protocol 2+ / torch.save's zip
            raise CheckpointError(
                f"{path} is a pickled (torch.save / .pt / .ckpt / .bin) file; ZErase reads"
                f" .safetensors only, never pickled files"
            )
        raise CheckpointError(
            f"{path} has {problem if header is None else 'a header that is not a JSON object'};"
            f" ZErase reads .safetensors only"
        )
    metadata = header.pop("__metadata__", None) or {}
    return header, metadata, 8 + length


def mapped_safetensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Every tensor of a `.safetensors` file as a view of a private memory map of it, and its metadata."""
    path = Path(path)
    header, metadata, start = read_header(path)
    size = path.stat().st_size
    with open(path, "rb") as handle:
        mapped = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_COPY) if size else None
    tensors = {}
    for name, entry in header.items():
        if entry.get("dtype") not in _DTYPES:
            raise CheckpointError(f"{path}: tensor {name} has dtype {entry.get('dtype')}, which ZErase does not read")
        dtype, shape = _DTYPES[entry["dtype"]], tuple(entry["shape"])
        begin, end = entry["data_offsets"]
        count = 1
        for side in shape:
            count *= side
        if start + end > size or end - begin != count * torch.empty((), dtype=dtype).element_size():
            raise CheckpointError(f"{path} is truncated or damaged: tensor {name} at bytes {begin}..{end}")
        if count == 0:
            tensors[name] = torch.empty(shape, dtype=dtype)
            continue
        tensors[name] = torch.frombuffer(mapped, dtype=dtype, count=count, offset=start + begin).view(shape)
    return tensors, metadata


def mapped_folder(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of every `.safetensors` file in a folder (a diffusers component), memory-mapped."""
    files = sorted(Path(path).glob("*.safetensors"))
    if not files:
        raise CheckpointError(f"{path} holds no .safetensors weights (pickled .bin files are never read)")
    tensors: dict[str, torch.Tensor] = {}
    for file in files:
        tensors.update(mapped_safetensors(file)[0])
    return tensors


__all__ = ["read_header", "mapped_safetensors", "mapped_folder"]
