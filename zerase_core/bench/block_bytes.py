"""σ measured: the bytes the autograd graph keeps per joint block and sample, which memory_model.py's fitted σ(L)
(SAVED_COEFFICIENTS) predicts; tests/test_perf.py checks the fit against it."""

from __future__ import annotations

from dataclasses import replace

import torch

from ..adapters.gated import AdapterConfig, AdapterSet
from ..model.config import DiTConfig
from ..model.keyword_attention import AttentionCapture
from .synthetic import random_dit


def _recorder(weights: set[int], seen: dict[int, int]):
    """A saved-tensor pack hook that records in `seen` the bytes of each storage not in `weights`."""

    def pack(tensor):
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in weights:
            seen[storage.data_ptr()] = storage.nbytes()
        return tensor

    return pack


def measure_block_bytes(
    config: DiTConfig, dtype: torch.dtype, caption_tokens: int, image_size: int, capture: bool, batch: int = 1
) -> float:
    """Measured σ: bytes the autograd graph keeps per joint block and sample (saved-tensor hooks, unique storages,
    frozen weights excluded), from the difference between a 1- and a 2-layer model of the same width."""
    totals = []
    for layers in (1, 2):
        model = random_dit(replace(config, n_layers=layers, n_refiner_layers=0), dtype)
        AdapterSet(model, AdapterConfig(rank=8)).attach(model)
        weights = {p.untyped_storage().data_ptr() for p in model.parameters()}
        seen: dict[int, int] = {}
        pack = _recorder(weights, seen)
        latent = image_size // 8
        x = torch.randn(batch, config.in_channels, latent, latent)
        context = torch.randn(batch, caption_tokens, config.cap_feat_dim)
        probe = AttentionCapture(columns=torch.zeros(batch, 1, dtype=torch.long)) if capture else None
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
            model(x, torch.full((batch,), 0.5), context, None, probe)
        totals.append(sum(seen.values()))
    return (totals[1] - totals[0]) / batch
