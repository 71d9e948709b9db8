"""File helpers: atomic writes (a crash or a Ctrl-C never leaves a half-written file behind) and a safetensors
reader whose errors say why a file cannot be read."""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import torch


def atomic_write(path: str | Path, write) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent)
    os.close(handle)
    try:
        write(temporary)
        with open(temporary, "rb") as stream:
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.remove(temporary)
        raise
    return path


def atomic_save_safetensors(tensors: dict[str, torch.Tensor], path: str | Path, metadata: dict[str, str] | None = None) -> Path:
    from safetensors.torch import save_file   # imported here: JSON writers (e.g. a GPU check with torch only) need none
    contiguous = {name: tensor.detach().contiguous().cpu() for name, tensor in tensors.items()}
    return atomic_write(path, lambda temporary: save_file(contiguous, temporary, metadata=metadata))


def atomic_write_json(data, path: str | Path) -> Path:
    def write(temporary):
        with open(temporary, "w") as stream:
            json.dump(data, stream, indent=1)
    return atomic_write(path, write)


def read_safetensors(path: Path, error: type[Exception], what: str) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Tensors and string metadata of one `.safetensors` file (never unpickles).

    A missing or unreadable file raises `error` naming `what` it should be (e.g. "checkpoint"), the path and why.
    """
    from safetensors import SafetensorError, safe_open
    if not path.is_file():
        raise error(f"{what} {path} does not exist or is not a file")
    try:
        with safe_open(str(path), framework="pt", device="cpu") as handle:
            metadata = dict(handle.metadata() or {})
            tensors = {key: handle.get_tensor(key) for key in handle.keys()}
    except (SafetensorError, OSError, RuntimeError, ValueError) as cause:
        raise error(f"cannot read {what} {path}: {_why_unreadable(path)} ({cause})") from cause
    return tensors, metadata


def _why_unreadable(path: Path) -> str:
    try:
        with open(path, "rb") as handle:
            head = handle.read(4)
    except OSError as error:
        return f"the file cannot be opened ({error.strerror})"
    if not head:
        return "the file is empty"
    if head.startswith(b"PK\x03\x04") or head[:1] == b"\x80":
        return ("it is a pickled PyTorch checkpoint (.pt/.ckpt/.bin), which ZErase never unpickles;"
                " convert it to .safetensors")
    if head == b"GGUF":
        return "it is a GGUF (quantized) file; use the bf16 or fp32 .safetensors"
    return "truncated, damaged or not a safetensors file"
