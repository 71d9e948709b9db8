"""Atomic file writes: a crash or a Ctrl-C never leaves a half-written file behind."""
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
