"""Make the nano erasure files of a few concepts with the CLI, or compare two such folders tensor by tensor.

    python scripts/erasure_identity.py make DIR      # DIR/red.safetensors, DIR/star.safetensors, ... (quick settings)
    python scripts/erasure_identity.py compare A B   # exit 0 when every tensor and the metadata agree

A refactoring that must not change behaviour makes the files before and after and compares them. Only timings
(`train_seconds`) and the creation time may differ, and the second folder may add `ADDED` keys under `training`;
everything else, tensors bit for bit, must be equal.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
from safetensors import safe_open

# concept -> extra CLI options: quick runs at the defaults otherwise (red with the strength search, star without)
RUNS = {"red": ["--steps", "20", "--pool-prompts", "8"],
        "star": ["--steps", "20", "--pool-prompts", "8", "--no-strength-search"]}
VOLATILE = ("train_seconds", "created")     # wall-clock values: allowed to differ
# metadata the second folder may add (a fix, not a change of behaviour): since issue 15 the CLI's files also store the
# erase and mapped prompts under `training`, as the node's files did (engine/run.py)
ADDED = ("erase", "targets")


def make(folder: Path) -> None:
    from zerase_core.cli import main
    folder.mkdir(parents=True, exist_ok=True)
    for concept, options in RUNS.items():
        status = main(["erase", "--concept", concept, "--out", str(folder / f"{concept}.safetensors"), *options])
        if status:
            raise SystemExit(f"erase {concept} failed with status {status}")


def _without_volatile(value):
    if isinstance(value, dict):
        return {key: _without_volatile(item) for key, item in value.items() if key not in VOLATILE}
    if isinstance(value, list):
        return [_without_volatile(item) for item in value]
    return value


def _read(path: Path) -> tuple[dict[str, torch.Tensor], dict]:
    with safe_open(str(path), "pt") as handle:
        tensors = {key: handle.get_tensor(key) for key in handle.keys()}  # noqa: SIM118 (safe_open is no dict)
        metadata = handle.metadata() or {}
    decoded = {}
    for key, text in metadata.items():
        try:
            decoded[key] = _without_volatile(json.loads(text))
        except json.JSONDecodeError:
            decoded[key] = text
    return tensors, decoded


def compare(first: Path, second: Path) -> list[str]:
    """The differences between two folders of erasure files (empty when identical)."""
    problems = []
    for concept in RUNS:
        name = f"{concept}.safetensors"
        tensors_a, meta_a = _read(first / name)
        tensors_b, meta_b = _read(second / name)
        training_a = meta_a.get("zerase.erasure", {}).get("training", {})
        training_b = meta_b.get("zerase.erasure", {}).get("training", {})
        for key in ADDED:
            if key in training_b and key not in training_a:
                print(f"{name}: training.{key} added: {training_b.pop(key)}")
        if tensors_a.keys() != tensors_b.keys():
            problems.append(f"{name}: tensor keys differ: {sorted(tensors_a.keys() ^ tensors_b.keys())}")
        for key in sorted(tensors_a.keys() & tensors_b.keys()):
            a, b = tensors_a[key], tensors_b[key]
            if a.dtype != b.dtype or a.shape != b.shape or not torch.equal(a, b):
                problems.append(f"{name}: tensor {key} differs")
        if meta_a != meta_b:
            problems.append(f"{name}: metadata differs:\n  {meta_a}\n  {meta_b}")
        print(f"{name}: {len(tensors_a)} tensors compared, metadata keys {sorted(meta_a)}")
    return problems


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "make":
        make(Path(sys.argv[2]))
    elif len(sys.argv) == 4 and sys.argv[1] == "compare":
        differences = compare(Path(sys.argv[2]), Path(sys.argv[3]))
        print("\n".join(differences) or "identical: every tensor and the metadata agree")
        raise SystemExit(1 if differences else 0)
    else:
        raise SystemExit(__doc__)
