"""File helpers: outputs checked before the work (`check_output`), atomic writes (a crash or a Ctrl-C never leaves a
half-written file behind) and a safetensors reader whose errors say why a file cannot be read.

`atomic_write` writes `.<name>.<pid>-<random>.partial` next to the target (created with mode 0666 minus the umask,
like any new file), fsyncs it and renames it over the target. A process killed during that leaves the hidden file
behind; the next save of the same target removes it once its process is gone (or, without a readable process id,
after STALE_SECONDS).
"""

from __future__ import annotations

import json
import os
import secrets
import time
from pathlib import Path

import torch

PARTIAL_SUFFIX = ".partial"
STALE_SECONDS = 3600  # a temporary file whose writer cannot be identified is stale after this long
# the dtypes a safetensors header names, and their names (the writer's and the memory-mapped reader's table)
SAFETENSORS_DTYPES = {
    torch.float64: "F64",
    torch.float32: "F32",
    torch.float16: "F16",
    torch.bfloat16: "BF16",
    torch.float8_e4m3fn: "F8_E4M3",
    torch.float8_e5m2: "F8_E5M2",
    torch.int64: "I64",
    torch.int32: "I32",
    torch.int16: "I16",
    torch.int8: "I8",
    torch.uint8: "U8",
    torch.bool: "BOOL",
}


class OutputError(ValueError):
    """An output path that cannot be written (a folder, a missing or unwritable parent): said before any work."""


def check_output(path: str | os.PathLike, what: str = "output") -> Path:
    """`path` if a file can be written there: refuses an existing folder, a missing parent folder (nothing is created
    silently) and a folder that cannot be written (tried with a real temporary file, so it holds for root too)."""
    path = Path(path)
    if path.is_dir():
        raise OutputError(f"{what} {path} is an existing folder; give a file name, e.g. {path / 'name'}")
    parent = path.parent
    if not parent.exists():
        raise OutputError(
            f"{what} {path}: the folder {parent} does not exist; create it first (mkdir -p {parent}) "
            f"or pick another folder"
        )
    if not parent.is_dir():
        raise OutputError(f"{what} {path}: {parent} is not a folder; pick a path inside a folder")
    try:
        probe = _create_partial(path)
    except OSError as error:
        raise OutputError(
            f"{what} {path}: cannot write into the folder {parent} ({error.strerror}); pick a writable folder"
        ) from None
    os.remove(probe)
    if path.exists() and not path.is_file():
        raise OutputError(f"{what} {path} exists and is not a regular file; pick another name")
    return path


def _create_partial(path: Path) -> str:
    """A new empty temporary file beside `path`, mode 0666 minus the umask; its name carries this process id."""
    while True:
        temporary = os.path.join(path.parent, f".{path.name}.{os.getpid()}-{secrets.token_hex(4)}{PARTIAL_SUFFIX}")
        try:
            os.close(os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
            return temporary
        except FileExistsError:
            continue


def _writer_gone(name: str, prefix: str) -> bool:
    """Whether the process that created the temporary file `name` has ended (False when that cannot be told)."""
    pid = name[len(prefix) : -len(PARTIAL_SUFFIX)].split("-", 1)[0]
    if os.name != "posix" or not pid.isdigit():
        return False  # on Windows os.kill would end the process; unknown writers go by age alone
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except OSError:
        return False  # alive, owned by another user
    return False


def remove_stale_partials(path: str | os.PathLike) -> list[Path]:
    """Remove the temporary files a killed save of `path` left behind; returns them."""
    path = Path(path)
    prefix = f".{path.name}."
    removed: list[Path] = []
    try:
        entries = list(os.scandir(path.parent))
    except OSError:
        return removed
    for entry in entries:
        if not (entry.name.startswith(prefix) and entry.name.endswith(PARTIAL_SUFFIX)) or not entry.is_file():
            continue
        try:
            stale = _writer_gone(entry.name, prefix) or time.time() - entry.stat().st_mtime > STALE_SECONDS
            if stale:
                os.remove(entry.path)
                removed.append(Path(entry.path))
        except OSError:
            continue
    return removed


def atomic_write(path: str | Path, write, make_parents: bool = False) -> Path:
    """Write `path` through `write(temporary_name)` and a rename; the parent folder must exist unless
    `make_parents` (reports and caches) creates it."""
    path = Path(path)
    if make_parents:
        path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_partials(path)
    temporary = _create_partial(path)
    mode = os.stat(temporary).st_mode  # 0666 minus the umask; some writers (safetensors) recreate the file 0600
    try:
        write(temporary)
        os.chmod(temporary, mode)
        with open(temporary, "rb") as stream:
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.remove(temporary)
        raise
    return path


def atomic_save_safetensors(
    tensors: dict[str, torch.Tensor], path: str | Path, metadata: dict[str, str] | None = None
) -> Path:
    from safetensors.torch import save_file  # imported here: JSON writers (e.g. a GPU check with torch only) need none

    contiguous = {name: tensor.detach().contiguous().cpu() for name, tensor in tensors.items()}
    return atomic_write(path, lambda temporary: save_file(contiguous, temporary, metadata=metadata))


def atomic_write_json(data, path: str | Path, make_parents: bool = True) -> Path:
    def write(temporary):
        with open(temporary, "w") as stream:
            json.dump(data, stream, indent=1)

    return atomic_write(path, write, make_parents)


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
            tensors = {key: handle.get_tensor(key) for key in handle.keys()}  # noqa: SIM118 (a safetensors handle, not iterable)
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
        return (
            "it is a pickled PyTorch checkpoint (.pt/.ckpt/.bin), which ZErase never unpickles;"
            " convert it to .safetensors"
        )
    if head == b"GGUF":
        return "it is a GGUF (quantized) file; use the bf16 or fp32 .safetensors"
    return "truncated, damaged or not a safetensors file"
