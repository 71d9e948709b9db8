"""The adapters' optimizer: AdamW, with its fused kernel where the adapters are on CUDA."""

from __future__ import annotations

import torch


def fused_on_cuda(optimizer: torch.optim.Optimizer, parameters: list[torch.nn.Parameter], learning_rate: float):
    """`optimizer`, or where `parameters` are on CUDA an `AdamW(fused=True)` carrying its state over (a resumed
    run's moments and step counts). Elsewhere the optimizer stays as built, so CPU results do not change."""
    if not parameters or parameters[0].device.type != "cuda" or optimizer.defaults.get("fused"):
        return optimizer
    fused = torch.optim.AdamW(parameters, lr=learning_rate, weight_decay=0.0, fused=True)
    fused.load_state_dict(optimizer.state_dict())
    return fused
