"""Where the memory model decides: how many joint blocks to checkpoint for a memory budget (the fewest that fit),
the memory free on a device, and whether the pool and caches can stay on it. Predictions from `memory_model`."""

from __future__ import annotations

from dataclasses import replace

from ..model.config import DiTConfig
from .memory_model import GB, Problem, comfy_problem, predict

CHECKPOINTING_CHOICES = ("auto", "all", "none")


def checkpoint_blocks_within(problem: Problem, budget_bytes: float) -> int:
    """The fewest checkpointed joint blocks (the first ones) whose predicted peak fits `budget_bytes`; all of them
    when even that does not fit. Each checkpointed block costs its forward again in the backward (docs/performance.md:
    all of them ≈ one forward of the student rows per step), so fewer is faster."""
    layers = problem.config.n_layers
    for blocks in range(layers + 1):
        candidate = replace(problem, checkpointing=blocks > 0, checkpointed_layers=blocks)
        if predict(candidate)["peak_gb"] * GB <= budget_bytes:
            return blocks
    return layers


def comfy_checkpoint_blocks(
    config: DiTConfig,
    image_size: int,
    weight_bytes: int,
    batch: int,
    rank: int,
    caption_tokens: int,
    budget: float | None,
) -> int:
    """ZEraseTrain's checkpointed joint blocks on a GPU with `budget` bytes for training (nodes/comfy_bridge/vram.plan):
    the auto policy on its own problem (ComfyUI's NextDiT, the pool in CPU memory, a build batch of 1 for the plan)."""
    every = comfy_problem(config, image_size, weight_bytes, True, batch, rank, caption_tokens, build_batch=1)
    return checkpoint_blocks("auto", every, budget)


def checkpoint_blocks(choice: str | int, problem: Problem, budget_bytes: float | None) -> int:
    """Checkpointed joint blocks for a policy: "all", "none", a count, or "auto" (`checkpoint_blocks_within` the
    budget; all blocks when the budget is unknown)."""
    layers = problem.config.n_layers
    if isinstance(choice, int) or str(choice).isdigit():
        return max(0, min(layers, int(choice)))
    if choice == "all":
        return layers
    if choice == "none":
        return 0
    if choice != "auto":
        raise ValueError(f"checkpointing {choice!r}: choose auto, all, none or a number of joint blocks")
    return layers if budget_bytes is None else checkpoint_blocks_within(problem, budget_bytes)


def free_device_bytes(device) -> int | None:
    """Memory free for training on `device` now: a GPU's free memory, a CPU's available RAM (None if unknown)."""
    import torch

    device = torch.device(device)
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    if device.type == "cpu":
        try:
            with open("/proc/meminfo") as meminfo:
                for line in meminfo:
                    if line.startswith("MemAvailable:"):
                        return int(line.split()[1]) * 1024
        except OSError:
            return None
    return None


def trainer_problem(model, config, device_type: str, caption_tokens: int = 64, build_batch: int = 2) -> Problem:
    """The Problem of an EraseTrainer on the core model `model` (a ZImageDiT, its checkpointing as set) with
    `config` (an EraseConfig), its pool and caches kept on `device_type`."""
    height, _ = config.latent_size
    return Problem(
        config=model.config,
        image_size=height * 8,
        caption_tokens=caption_tokens,
        batch=config.batch_size,
        rank=config.rank,
        weight_bytes=model.dtype.itemsize,
        checkpointing=bool(model.gradient_checkpointing),
        checkpointed_layers=model.checkpointed_layers,
        pool=(min(config.pool_prompts, 32), config.sample_steps),
        cache=config.cache,
        build_batch=build_batch,
        device=device_type,
        store_on_device=True,
    )


def store_fits(problem: Problem, free_bytes: float) -> bool:
    """Whether the pool, teacher cache and kept segments fit on the device beside what training needs there
    (`free_bytes` measured with the weights already resident)."""
    result = predict(problem)
    kept = result["cache"] + result["segments"]
    training = max(result["step_peak_gb"], result["build_peak_gb"]) - result["weights"] - kept
    return (kept + training) * GB <= free_bytes
