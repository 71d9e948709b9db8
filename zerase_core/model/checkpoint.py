"""Reading, loading, saving and fingerprinting single-stream Z-Image DiT checkpoints (safetensors only, never pickle).

Flow of `load_dit`: read -> strip `model.diffusion_model.` -> detect_architecture -> diffusers/official names to
ComfyUI names -> infer_config (metadata `zerase.dit_config`, else tensor shapes) -> check keys and shapes against a
meta-device ZImageDiT -> cast -> `load_state_dict(assign=True)`, so the weights are never held twice.
`save_dit` writes ComfyUI's bare NextDiT keys (ComfyUI's UNETLoader reads them as Z-Image when dim = 3840).
Key names (`checkpoint_keys`), architecture detection (`checkpoint_detect`), config inference (`checkpoint_config`)
and saving (`checkpoint_save`) live beside it; this module re-exports them.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from ..common.files import read_safetensors
from .checkpoint_config import infer_config
from .checkpoint_detect import detect_architecture
from .checkpoint_keys import (
    CheckpointError,
    StateDict,
    UnsupportedModelError,
    comfy_names,
    normalize_keys,
    strip_prefix,
)
from .checkpoint_save import save_dit
from .config import DiTConfig
from .dit import ZImageDiT

PathLike = str | os.PathLike[str]


# ---------------------------------------------------------------- reading


def read_state_dict(path: PathLike) -> tuple[StateDict, dict[str, str]]:
    """Tensors and string metadata of a `.safetensors` file, or of every `.safetensors` shard in a folder."""
    path = Path(path)
    if path.is_dir():
        return _read_shards(path)
    return read_safetensors(path, CheckpointError, "checkpoint")


def _read_shards(folder: Path) -> tuple[StateDict, dict[str, str]]:
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise CheckpointError(f"checkpoint folder {folder} holds no .safetensors files")
    tensors: StateDict = {}
    metadata: dict[str, str] = {}
    for file in files:
        part, part_metadata = read_state_dict(file)
        repeated = sorted(set(part) & set(tensors))
        if repeated:
            raise CheckpointError(f"{file} repeats keys of another shard in {folder}: {repeated[:5]}")
        tensors.update(part)
        for key, value in part_metadata.items():
            metadata.setdefault(key, value)
    return tensors, metadata


# ---------------------------------------------------------------- loading


def load_dit(
    source: PathLike | Mapping[str, torch.Tensor],
    metadata: Mapping[str, str] | None = None,
    dtype: torch.dtype | None = None,
    device: torch.device | str = "cpu",
) -> ZImageDiT:
    """A frozen ZImageDiT (eval mode, requires_grad False) from a file, shard folder or state dict.

    `metadata` overrides the file's. Without `dtype` the weights keep the dtype of `x_embedder.weight` (bf16 if it
    is not a float type torch computes in). Tensors of a passed state dict are used without a copy when they
    already have the target dtype and device: the model then shares their storage.
    """
    file_metadata: dict[str, str]
    if isinstance(source, Mapping):
        label, tensors, file_metadata = "state dict", dict(source), {}
    else:
        label = str(source)
        tensors, file_metadata = read_state_dict(source)
    try:
        return _build(tensors, {**file_metadata, **(metadata or {})}, dtype, torch.device(device))
    except CheckpointError as error:
        raise type(error)(f"{label}: {error}") from None


def _build(tensors: StateDict, metadata: dict[str, str], dtype: torch.dtype | None, device: torch.device) -> ZImageDiT:
    state_dict = strip_prefix(tensors)
    tensors.clear()  # our dict only: lets comfy_names free the to_q/to_k/to_v parts
    detect_architecture(state_dict)
    state_dict = comfy_names(state_dict)
    config = infer_config(state_dict, metadata)
    model = ZImageDiT(config, device="meta")
    _check_tensors(state_dict, {key: tuple(value.shape) for key, value in model.state_dict().items()}, config)
    target = dtype or _default_dtype(state_dict["x_embedder.weight"])
    for key, value in state_dict.items():
        if value.is_meta and device.type != "meta":
            raise CheckpointError(f"{key} is on the meta device (no data); load_dit needs real weights")
        state_dict[key] = value.to(device, target) if value.is_floating_point() else value.to(device)
    try:
        model.load_state_dict(state_dict, strict=True, assign=True)
    except RuntimeError as error:
        raise CheckpointError(f"loading the weights failed: {error}") from None
    return model.eval().requires_grad_(False)


def _default_dtype(reference: torch.Tensor) -> torch.dtype:
    return reference.dtype if reference.dtype in (torch.float32, torch.bfloat16, torch.float16) else torch.bfloat16


def _check_tensors(state_dict: StateDict, expected: dict[str, tuple[int, ...]], config: DiTConfig) -> None:
    missing = [key for key in expected if key not in state_dict]
    unexpected = [key for key in state_dict if key not in expected]
    wrong = [key for key in expected if key in state_dict and tuple(state_dict[key].shape) != expected[key]]
    problems = []
    if missing:
        listed = ", ".join(f"{key} (expected {list(expected[key])})" for key in missing[:5])
        problems.append(f"{len(missing)} missing: {listed}")
    if unexpected:
        listed = ", ".join(f"{key} (found {list(state_dict[key].shape)})" for key in unexpected[:5])
        problems.append(f"{len(unexpected)} unexpected: {listed}")
    if wrong:
        listed = ", ".join(
            f"{key} (expected {list(expected[key])}, found {list(state_dict[key].shape)})" for key in wrong[:5]
        )
        problems.append(f"{len(wrong)} with the wrong shape: {listed}")
    if problems:
        raise CheckpointError(
            f"the tensors do not fit a Z-Image DiT with dim {config.dim}, {config.n_layers} layers"
            f" and {config.n_heads} heads: {'; '.join(problems)}"
        )


# ---------------------------------------------------------------- fingerprint


_FINGERPRINT_TENSORS = (
    "cap_embedder.0.weight",
    "t_embedder.mlp.0.bias",
    "layers.0.attention.q_norm.weight",
    "final_layer.linear.bias",
    "x_pad_token",
    "cap_pad_token",
    "x_embedder.weight",
)
_FINGERPRINT_ENDS = 256


def fingerprint(model_or_state_dict: nn.Module | Mapping[str, torch.Tensor]) -> str:
    """16 hex digits naming a base model: sha256 over every tensor's name and shape plus the values of a few small
    tensors (the first and last 256 elements of large ones); about 10k values are read, nothing at 6B scale.

    Key prefixes and diffusers names don't matter (normalize_keys), nor does the dtype of the shapes. Values are
    rounded to bf16 before hashing, so an fp32 model and its bf16 copy share a fingerprint; an fp16 copy need not.
    """
    if isinstance(model_or_state_dict, nn.Module):
        model_or_state_dict = model_or_state_dict.state_dict()
    tensors = normalize_keys(model_or_state_dict)
    digest = hashlib.sha256(b"zerase-fingerprint-v1\n")
    for key in sorted(tensors):
        digest.update(f"{key}:{list(tensors[key].shape)}\n".encode())
    for key in _FINGERPRINT_TENSORS:
        value = tensors.get(key)
        if value is None:
            digest.update(f"{key}:absent\n".encode())
            continue
        if value.is_meta:
            raise CheckpointError(f"{key} is on the meta device; a fingerprint needs real weights")
        flat = value.detach().reshape(-1)
        if flat.numel() > 2 * _FINGERPRINT_ENDS:
            flat = torch.cat([flat[:_FINGERPRINT_ENDS], flat[-_FINGERPRINT_ENDS:]])
        sample = flat.to("cpu", torch.bfloat16).to(torch.float32).contiguous()
        digest.update(key.encode())
        digest.update(sample.numpy().tobytes())
    return digest.hexdigest()[:16]


__all__ = [
    "CheckpointError",
    "UnsupportedModelError",
    "read_state_dict",
    "normalize_keys",
    "detect_architecture",
    "infer_config",
    "load_dit",
    "save_dit",
    "fingerprint",
]
