"""The DiTConfig a NextDiT state dict with ComfyUI names describes: `infer_config` reads it from metadata
`zerase.dit_config`, checked against the tensor shapes, or from the shapes alone for the two known families.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch

from .checkpoint_detect import kind_of
from .checkpoint_keys import CheckpointError
from .config import METADATA_KEY, DiTConfig


@dataclass(frozen=True)
class _Shapes:
    """What the tensors say about the architecture."""

    dim: int
    cap_feat_dim: int
    n_layers: int
    n_refiner_layers: int
    patch_features: int
    head_dim: int | None
    ffn_hidden: int | None
    kind: str = "z-image"
    kv_heads: int | None = None


def infer_config(state_dict: Mapping[str, torch.Tensor], metadata: Mapping[str, str] | None = None) -> DiTConfig:
    """The DiTConfig of a state dict with ComfyUI names: from metadata `zerase.dit_config`, checked against the
    tensor shapes, else from the shapes alone (Z-Image: head dim 128; Lumina-2: head dim 96, axes 32/32/32)."""
    shapes = _read_shapes(state_dict)
    try:
        config = DiTConfig.from_metadata(dict(metadata) if metadata else None)
    except (ValueError, TypeError) as error:
        raise CheckpointError(f"metadata '{METADATA_KEY}' is invalid: {error}") from None
    if config is None:
        return _config_from_shapes(shapes)
    stated = {
        "dim": config.dim,
        "cap_feat_dim": config.cap_feat_dim,
        "n_layers": config.n_layers,
        "n_refiner_layers": config.n_refiner_layers,
        "head_dim": config.head_dim,
        "patch features (p·p·C)": config.patch_size**2 * config.in_channels,
        "ffn_hidden": config.ffn_hidden,
        "kind": config.kind,
        "kv heads": config.kv_heads,
    }
    found = {
        "kind": shapes.kind,
        "kv heads": shapes.kv_heads,
        "dim": shapes.dim,
        "cap_feat_dim": shapes.cap_feat_dim,
        "n_layers": shapes.n_layers,
        "n_refiner_layers": shapes.n_refiner_layers,
        "head_dim": shapes.head_dim,
        "patch features (p·p·C)": shapes.patch_features,
        "ffn_hidden": shapes.ffn_hidden,
    }
    wrong = [
        f"{name} {stated[name]} in metadata but {value} in the tensors"
        for name, value in found.items()
        if value is not None and value != stated[name]
    ]
    if wrong:
        raise CheckpointError(f"metadata '{METADATA_KEY}' does not match the tensors: {'; '.join(wrong)}")
    return config


def _read_shapes(tensors: Mapping[str, torch.Tensor]) -> _Shapes:
    for key in ("cap_embedder.1.weight", "x_embedder.weight"):
        if key not in tensors:
            raise CheckpointError(
                f"{key} is missing, so the model's width is unknown (keys must have ComfyUI names: see normalize_keys)"
            )
        if tensors[key].dim() != 2:
            raise CheckpointError(f"{key} has shape {list(tensors[key].shape)}; a Linear weight is 2-D")
    dim, cap_feat_dim = tensors["cap_embedder.1.weight"].shape
    n_noise, n_context = _count_blocks(tensors, "noise_refiner"), _count_blocks(tensors, "context_refiner")
    if n_noise != n_context:
        raise CheckpointError(
            f"{n_noise} noise_refiner blocks but {n_context} context_refiner blocks; Z-Image has as many of each"
        )
    head = _first_block_tensor(tensors, "attention.q_norm.weight")
    ffn = _first_block_tensor(tensors, "feed_forward.w1.weight")
    qkv = _first_block_tensor(tensors, "attention.qkv.weight")
    kv_heads = None
    if head is not None and qkv is not None and (qkv.shape[0] - dim) % (2 * head.shape[0]) == 0:
        kv_heads = int((qkv.shape[0] - dim) // (2 * head.shape[0]))
    return _Shapes(
        kind=kind_of(tensors),
        kv_heads=kv_heads,
        dim=int(dim),
        cap_feat_dim=int(cap_feat_dim),
        n_layers=_count_blocks(tensors, "layers"),
        n_refiner_layers=n_noise,
        patch_features=int(tensors["x_embedder.weight"].shape[1]),
        head_dim=None if head is None else int(head.shape[0]),
        ffn_hidden=None if ffn is None else int(ffn.shape[0]),
    )


def _first_block_tensor(tensors: Mapping[str, torch.Tensor], name: str) -> torch.Tensor | None:
    keys = (f"{block}.{name}" for block in ("layers.0", "noise_refiner.0", "context_refiner.0"))
    return next((tensors[key] for key in keys if key in tensors), None)


def _count_blocks(tensors: Mapping[str, torch.Tensor], family: str) -> int:
    pattern = re.compile(rf"^{family}\.(\d+)\.")
    indices = {int(match[1]) for match in map(pattern.match, tensors) if match}
    absent = sorted(set(range(max(indices, default=-1) + 1)) - indices)
    if absent:
        raise CheckpointError(f"{family} blocks {absent[:5]} are missing (found indices up to {max(indices)})")
    return len(indices)


@dataclass(frozen=True)
class _Family:
    """What the shapes of a family's state dict cannot say: its head dim, fixed by the published model."""

    head_dim: int
    build: Callable[..., DiTConfig]  # the family's DiTConfig with the widths read from the shapes
    gqa: bool  # whether the kv heads (read from the qkv rows) are a setting of the family
    described: str  # what was found, from `dim` and `head_dim`
    published: str  # the RoPE axes of the published model
    ffn_rule: str  # how the family's feed-forward width follows from dim


_FAMILIES = {
    # dim 3840 gives exactly DiTConfig.turbo(): 30 heads, axes (32, 48, 48), theta 256, t·1000, pad to 32.
    "z-image": _Family(
        128, DiTConfig, False, "dim {dim} with head dim {head_dim}", "32/48/48, as Z-Image", "8/3·dim rounded up"
    ),
    # head dim 96 is Lumina-Image-2.0's (dim 2304: 24 heads, 8 kv heads, axes 32/32/32, theta 10000), as ComfyUI.
    "lumina2": _Family(
        96,
        DiTConfig.lumina2,
        True,
        "Lumina-2 with dim {dim}, head dim {head_dim}",
        "32/32/32, as Lumina-Image-2.0",
        "4·dim rounded up",
    ),
}


def _config_from_shapes(shapes: _Shapes) -> DiTConfig:
    def uninferable(reason: str) -> CheckpointError:
        return CheckpointError(
            f"cannot infer the DiT config without '{METADATA_KEY}' metadata: {reason}; save the"
            f" checkpoint with save_dit or pass metadata=DiTConfig(...).to_metadata()"
        )

    patch_size = 2  # Z-Image and Lumina-2 patchify 2×2 (ComfyUI hard-codes it too)
    if shapes.patch_features % (patch_size * patch_size):
        raise uninferable(f"x_embedder takes {shapes.patch_features} features per patch, not 2·2·channels")
    if shapes.head_dim is None:
        raise uninferable("no attention.q_norm.weight to read the head dim from")
    family = _FAMILIES[shapes.kind]
    if shapes.head_dim != family.head_dim or shapes.dim % family.head_dim or (family.gqa and shapes.kv_heads is None):
        found = family.described.format(dim=shapes.dim, head_dim=shapes.head_dim)
        raise uninferable(f"{found}; only head dim {family.head_dim} (RoPE axes {family.published}) is known")
    kv_heads = {"n_kv_heads": shapes.kv_heads} if family.gqa else {}
    try:
        config = family.build(
            dim=shapes.dim,
            n_heads=shapes.dim // family.head_dim,
            n_layers=shapes.n_layers,
            n_refiner_layers=shapes.n_refiner_layers,
            cap_feat_dim=shapes.cap_feat_dim,
            in_channels=shapes.patch_features // (patch_size * patch_size),
            patch_size=patch_size,
            **kv_heads,
        )
    except ValueError as error:
        raise uninferable(str(error)) from None
    if shapes.ffn_hidden is not None and shapes.ffn_hidden != config.ffn_hidden:
        raise uninferable(
            f"feed_forward.w1 has {shapes.ffn_hidden} rows but dim {shapes.dim} gives"
            f" {config.ffn_hidden} ({family.ffn_rule} to a multiple of 256)"
        )
    return config


__all__ = ["infer_config"]
