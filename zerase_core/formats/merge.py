"""One multi-concept erasure file from N single-concept files: the paper's merge Δθ_mul = Σ_i w_i·Δθ_i, w_i = 1/N
(§2.9), each Δθ_i at its file's recommended strength (as `apply_erasures` with strength None).

Gated LoRAs with the same gate, families and layers merge exactly by stacking ranks: for each qkv slice,
Σ_i c_i·B_i·A_i = [c_1·B_1 … c_N·B_N]·[A_1; …; A_N] with c_i = w_i·s_i·(alpha_i/rank_i); the merged file has
rank Σ rank_i, alpha = rank (scale 1) and recommended strength 1. A slice adapted by some files only gets zero
blocks from the others. Past the adapter rank limit (256) each slice's summed delta is truncated by SVD to 256,
and the relative Frobenius error is recorded in the file's summary. uce-text files (weight deltas of
cap_embedder.1) merge as Σ_i w_i·s_i·delta_i. Adapter and uce-text files do not mix.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch

from ..adapters.gated import KEY_PREFIX, SLICES, AdapterConfig
from .erasure_file import (
    UCE_DELTA_KEY,
    UCE_TEXT_METHOD,
    ErasureFileError,
    ErasureInfo,
    adapter_dict,
    read_erasure,
    save_erasure,
)

MAX_RANK = 256
MERGED_METHOD = "merged"


def _read_all(paths):
    files = []
    for path in paths:
        info, tensors, _ = read_erasure(path)
        if info.partial:
            raise ErasureFileError(
                f"{path} is a partial erasure ({info.steps_done}/{info.steps_total} steps); "
                f"finish it (rerun erase-many) before merging"
            )
        files.append((Path(path), info, tensors))
    if not files:
        raise ErasureFileError("merge needs at least one finished erasure file")
    first = files[0][1]
    for path, info, _ in files[1:]:
        if info.base_fingerprint != first.base_fingerprint:
            raise ErasureFileError(
                f"{path} was made for base {info.base_fingerprint}, {files[0][0]} for "
                f"{first.base_fingerprint}; only erasures of one base model merge"
            )
    return files


def _merged_info(files, method, adapter, strength_note: dict) -> ErasureInfo:
    first = files[0][1]
    concepts, keywords, anchors = [], [], []
    for _, info, _ in files:
        concepts += [c for c in info.concepts if c not in concepts]
        keywords += [k for k in info.keywords if k not in keywords]
        anchors += [a for a in info.anchors if a not in anchors]
    sources = [
        {
            "file": path.name,
            "method": info.method,
            "concepts": list(info.concepts),
            "recommended_strength": info.recommended_strength,
            "weight": 1.0 / len(files),
        }
        for path, info, _ in files
    ]
    return ErasureInfo(
        method=method,
        concepts=tuple(concepts),
        keywords=tuple(keywords),
        anchors=tuple(anchors[:8]),
        adapter=adapter,
        base_fingerprint=first.base_fingerprint,
        base_config=first.base_config,
        recommended_strength=1.0,
        seed=first.seed,
        summary={"merge": "1/N (paper §2.9)", "merged_from": sources, **strength_note},
    )


def merge_files(paths, out: Path) -> Path:
    """Write the 1/N merge of the finished erasure files `paths` to `out` (atomically); returns `out`."""
    files = _read_all(paths)
    count = len(files)
    methods = {info.method == UCE_TEXT_METHOD for _, info, _ in files}
    if len(methods) > 1:
        raise ErasureFileError(
            "cannot merge uce-text files (weight edits of cap_embedder.1) with adapter files; "
            "merge each kind separately"
        )
    if methods == {True}:
        delta = sum(tensors[UCE_DELTA_KEY].double() * (info.recommended_strength / count) for _, info, tensors in files)
        info = _merged_info(files, UCE_TEXT_METHOD, {}, {})
        return save_erasure(out, {UCE_DELTA_KEY: delta.float()}, info)
    configs = [info.adapter_config() for _, info, _ in files]
    shared = {(config.families, config.layers, config.gate) for config in configs}
    if len(shared) > 1:
        raise ErasureFileError(
            f"these erasures adapt different blocks or gates ({sorted(map(str, shared))}); only "
            f"files with the same families, layers and gate merge into one adapter set"
        )
    slices = tuple(name for name in SLICES if any(name in config.slices for config in configs))
    total = sum(config.rank for config in configs)
    rank = min(total, MAX_RANK)
    base = configs[0]
    merged_config = AdapterConfig(
        rank=rank, alpha=float(rank), slices=slices, families=base.families, layers=base.layers, gate=base.gate
    )
    modules = sorted({key[len(KEY_PREFIX) :].rsplit(".", 2)[0] for _, _, tensors in files for key in tensors})
    tensors_out: dict[str, torch.Tensor] = {}
    worst = 0.0
    for module in modules:
        for name in slices:
            ups, downs = [], []
            for (_, info, tensors), config in zip(files, configs, strict=True):
                up = tensors.get(f"{KEY_PREFIX}{module}.{name}.up")
                down = tensors.get(f"{KEY_PREFIX}{module}.{name}.down")
                if up is None:
                    width, inputs = _shape_of(files, module, name)
                    up, down = torch.zeros(width, config.rank), torch.zeros(config.rank, inputs)
                ups.append(up.double() * (info.recommended_strength * config.scale / count))
                downs.append(down.double())
            up, down = torch.cat(ups, dim=1), torch.cat(downs, dim=0)
            if total > rank:
                dense = up @ down
                left, values, right = torch.linalg.svd(dense, full_matrices=False)
                up, down = left[:, :rank] * values[:rank], right[:rank]
                norm = float(dense.norm())
                if norm > 0:
                    worst = max(worst, float((dense - up @ down).norm()) / norm)
            tensors_out[f"{KEY_PREFIX}{module}.{name}.up"] = up.float()
            tensors_out[f"{KEY_PREFIX}{module}.{name}.down"] = down.float()
    note = (
        {"rank_sum": total, "svd_truncated": total > rank, "svd_relative_error": worst}
        if total > rank
        else {"rank_sum": total, "svd_truncated": False}
    )
    info = _merged_info(files, MERGED_METHOD, adapter_dict(merged_config), note)
    if not all(math.isfinite(float(t.abs().max())) for t in tensors_out.values()):
        raise ErasureFileError("the merged adapters are not finite")
    return save_erasure(out, tensors_out, info)


def _shape_of(files, module, name):
    for _, _, tensors in files:
        up = tensors.get(f"{KEY_PREFIX}{module}.{name}.up")
        if up is not None:
            return up.shape[0], tensors[f"{KEY_PREFIX}{module}.{name}.down"].shape[1]
    raise ErasureFileError(f"no file adapts {module}.{name}")


__all__ = ["merge_files", "MERGED_METHOD"]
