"""Where a real DiT runs: the device of sampling (generate, evaluate) and of training (erase), and how many of its
joint blocks training checkpoints.

Training needs no wrapper: the engine runs the core model on its own device (engine/forwards.py). Sampling keeps its
latents in CPU memory, so it goes through `DeviceDenoiser`, which moves inputs in and float32 velocities back.
"""

from __future__ import annotations

import torch

from ..engine import memory_policy
from ..engine.erase_config import EraseConfig
from ..model.dit import ZImageDiT
from ..model.keyword_attention import AttentionCapture

GB = 2**30


class DeviceDenoiser:
    """`denoise(x, sigma, context, lengths, capture=None) -> v` running the model on an accelerator and returning
    float32 CPU velocities (a sampler's latents stay in CPU memory)."""

    def __init__(self, model: ZImageDiT, device: torch.device):
        self.model, self.device = model, device

    def __call__(self, x, sigma, context, lengths, capture: AttentionCapture | None = None):
        inner = None
        if capture is not None:
            mask = None if capture.column_mask is None else capture.column_mask.to(self.device)
            inner = AttentionCapture(columns=capture.columns.to(self.device), column_mask=mask, rows=capture.rows)
        v = self.model(x.to(self.device), sigma.to(self.device), context.to(self.device), lengths, inner)
        if capture is not None and inner is not None:  # inner is set exactly when capture is
            capture.maps.extend(maps.cpu() for maps in inner.maps)
        return v.float().cpu()


def dit_on_device(dit, device: torch.device):
    """(DiT, denoise) for sampling: on the CPU the DiT itself; on a GPU its weights copied there and a
    `DeviceDenoiser` around it."""
    if device.type == "cpu":
        return dit, None
    dit = dit.to(device)
    return dit, DeviceDenoiser(dit, device)


def training_budget(dit: ZImageDiT, device: torch.device) -> float | None:
    """Bytes the training step may use in all on `device`, weights included: a GPU's free memory plus the weights
    already there; a CPU's available RAM (the weights are memory-mapped)."""
    free = memory_policy.free_device_bytes(device)
    if free is None or device.type == "cpu":
        return free
    return free + sum(p.numel() * p.element_size() for p in dit.parameters())


def set_checkpointing(dit: ZImageDiT, config: EraseConfig, choice: str, device: torch.device) -> tuple[int, str]:
    """Checkpoint as many joint blocks as the policy `choice` ("auto", "all", "none" or a count) asks; "auto" takes
    the fewest whose predicted peak (engine/memory_model.py) fits the device's memory. Returns (blocks, words)."""
    dit.gradient_checkpointing, dit.checkpointed_layers = True, None
    problem = memory_policy.trainer_problem(dit, config, device.type)
    budget = training_budget(dit, device) if choice == "auto" else None
    blocks = memory_policy.checkpoint_blocks(choice, problem, budget)
    dit.gradient_checkpointing, dit.checkpointed_layers = blocks > 0, blocks
    layers = dit.config.n_layers
    where = f" within {budget / GB:.1f} GiB" if budget is not None else ""
    return blocks, f"checkpointing {blocks} of {layers} joint blocks ({choice}{where})"


def add_checkpointing_argument(parser) -> None:
    parser.add_argument(
        "--checkpointing",
        default="auto",
        help="real models: joint blocks recomputed in the backward instead of kept: auto (default: the fewest whose"
        " predicted peak fits the device's free memory), all, none, or a number",
    )


__all__ = ["DeviceDenoiser", "dit_on_device", "set_checkpointing", "training_budget", "add_checkpointing_argument"]
