"""ZEraseTrain's device memory on ComfyUI's model management: the text encoder released, the DiT loaded with what
training needs reserved, per-block checkpointing of the joint layers.

Order of a run (nodes/train_node.py): every prompt encoded (shuffle_bank.PreparedConditioner), the text encoder
unloaded (`release_text_encoder`), then the DiT loaded through `load_models_gpu` with `memory_required` set to the
memory model's prediction of training's own needs (zerase_core/engine/memory_model.py: activations, backward, adapters,
pool build). Where the card cannot hold both, ComfyUI loads the DiT partially (lowvram: the rest streamed per op);
`load_for_training` says which, in words, for the node's report.
"""

from __future__ import annotations

import contextvars
import logging
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass

import torch
import torch.utils.checkpoint

import comfy.ldm.lumina.model
import comfy.model_management as model_management

from zerase_core.engine import memory_model, memory_policy
from zerase_core.engine.methods import shuffles
from zerase_core.model.config import DiTConfig
from zerase_core.model.layout import active_layout, current_layout

from .conditioners import prepare

logger = logging.getLogger(__name__)
GB = 2**30
GPU_SHUFFLE_BANK = 8  # word orders per erase prompt when shuffle_bank is 0 (auto) and the DiT is on a GPU
PER_STEP = -1  # shuffle_bank value: a fresh order every step on every device (the paper)


def on_gpu(model) -> bool:
    return not model_management.is_device_cpu(model.load_device)


def resolve_shuffle_bank(value: int, gpu: bool) -> int:
    """The node's shuffle_bank: 0 (auto) = GPU_SHUFFLE_BANK on a GPU and a fresh order per step on a CPU, -1 = a
    fresh order per step everywhere, K ≥ 1 = K orders. Returns EraseConfig's value (0 = per step)."""
    if value == PER_STEP:
        return 0
    if value < PER_STEP:
        raise ValueError(
            f"shuffle_bank {value} is not valid: 0 = auto ({GPU_SHUFFLE_BANK} orders on a GPU, per step "
            f"on a CPU), -1 = a fresh order every step, K ≥ 1 = K orders per erase prompt"
        )
    if value == 0:
        return GPU_SHUFFLE_BANK if gpu else 0
    return value


def encode_before_training(clip, conditioner, prompts, config, gpu: bool):
    """(conditioner for the trainer, a note). Where every prompt of the run is known (a shuffle bank; or a method
    without shuffles, on a GPU) all are encoded now and the text encoder is unloaded; on a CPU a method without
    shuffles keeps encoding as the CLI does (same numbers). With per-step shuffles the text encoder stays in use."""
    shuffled = shuffles(config.method)
    if (shuffled and config.shuffle_bank) or (not shuffled and gpu):
        prepared = prepare(conditioner, prompts, config)
        return prepared, f"{len(prepared)} prompts encoded before training; " + release_text_encoder(clip)
    if shuffled:
        return conditioner, (
            "text encoder used at every step (a fresh word order per step; shuffle_bank 0 on a GPU "
            "or K > 0 encodes the orders before training instead)"
        )
    return conditioner, "text encoder used by the trainer as the CLI uses it (CPU)"


@dataclass(frozen=True)
class MemoryPlan:
    reserve_bytes: int  # training's needs beside the weights (memory_required of load_models_gpu)
    checkpointing: bool  # per-block checkpointing of the joint layers
    build_batch: int | None  # forwards per pool / teacher-cache batch (None: the trainer's defaults)
    predicted_peak_gb: float
    blocks: int | None = None  # with checkpointing: how many joint blocks (the first ones); None = all


def training_budget(device) -> float | None:
    """Bytes training may use on `device`: its total memory less ComfyUI's own reserve (--reserve-vram); the DiT
    load frees what other models hold. None where the device cannot say."""
    try:
        return float(model_management.get_total_memory(device) - model_management.extra_reserved_memory())
    except (RuntimeError, AssertionError, AttributeError, KeyError):  # no CUDA behind the device (tests)
        return None


def weight_bytes(patcher) -> int:
    """Bytes per stored weight of the MODEL's NextDiT: 1 for fp8 (plain or scaled), else its dtype's size."""
    dtype = patcher.model.get_dtype()
    quantized = getattr(patcher.model.model_config, "quant_config", None)
    return 1 if quantized or dtype in (torch.float8_e4m3fn, torch.float8_e5m2) else max(2, dtype.itemsize)


def plan(
    patcher,
    config: DiTConfig,
    image_size: int,
    batch: int,
    rank: int,
    caption_tokens: int = 64,
    checkpointing: bool | None = None,
) -> MemoryPlan:
    """Checkpointing on a GPU (None: the device decides; off on a CPU, where results stay those of the CLI path), the
    pool build batch that fits beside the step's own needs, and the reserve to ask model management for. On a GPU
    only as many joint blocks are checkpointed as the memory needs (memory_policy.checkpoint_blocks, "auto", within
    the device's memory; all of them where the device cannot say)."""
    gpu = on_gpu(patcher)
    checkpointing = gpu if checkpointing is None else checkpointing
    bytes_per_weight = weight_bytes(patcher)
    blocks = None
    if checkpointing and gpu:
        budget = training_budget(patcher.load_device)
        blocks = memory_policy.comfy_checkpoint_blocks(
            config, image_size, bytes_per_weight, batch, rank, caption_tokens, budget
        )
        checkpointing = blocks > 0
    step = memory_model.comfy_problem(
        config, image_size, bytes_per_weight, checkpointing, batch, rank, caption_tokens, 1, checkpointed_layers=blocks
    )
    predicted = memory_model.predict(step)
    extra = (predicted["step_peak_gb"] - predicted["weights"]) * GB
    build = None
    if gpu:  # the trainer's defaults (32 / 64 forwards, sized for nano) need 20–29 GiB at 512² on Z-Image
        build = memory_model.build_batch_within(config, image_size, caption_tokens, extra, 32)
    problem = memory_model.comfy_problem(
        config,
        image_size,
        bytes_per_weight,
        checkpointing,
        batch,
        rank,
        caption_tokens,
        build or 32,
        checkpointed_layers=blocks,
    )
    final = memory_model.predict(problem)
    return MemoryPlan(memory_model.training_reserve_bytes(problem), checkpointing, build, final["peak_gb"], blocks)


def release_text_encoder(clip) -> str:
    """Unload the CLIP's model (and its clones) through ComfyUI's model management; says what was freed."""
    patcher = getattr(clip, "patcher", None)
    if patcher is None:
        return "text encoder: nothing to release"
    freed = 0
    for loaded in list(model_management.current_loaded_models):
        if loaded.model is not None and loaded.model.is_clone(patcher):
            keep = [other for other in model_management.current_loaded_models if other is not loaded]
            freed += loaded.model_loaded_memory()
            model_management.free_memory(1e30, loaded.device, keep_loaded=keep)
    still = [
        loaded
        for loaded in model_management.current_loaded_models
        if loaded.model is not None and loaded.model.is_clone(patcher)
    ]
    if still:
        raise RuntimeError(
            "ComfyUI's model management kept the text encoder loaded after free_memory; it would "
            "stay resident beside the DiT during training"
        )
    return f"text encoder released after encoding ({freed / GB:.2f} GiB unloaded)"


def load_for_training(patcher, memory: MemoryPlan) -> str:
    """The DiT loaded by ComfyUI with `memory.reserve_bytes` kept free for training; the choice in words."""
    model_management.load_models_gpu([patcher], memory_required=memory.reserve_bytes)
    size, loaded = patcher.model_size(), patcher.loaded_size()
    device = patcher.load_device
    reserve = memory.reserve_bytes / GB
    checkpointed = "all joint blocks" if memory.blocks is None else f"{memory.blocks} joint blocks"
    how = (
        f"predicted peak {memory.predicted_peak_gb:.2f} GiB, per-block checkpointing "
        f"{checkpointed if memory.checkpointing else 'off'}"
    )
    if model_management.is_device_cpu(device):
        return f"DiT on the CPU ({size / GB:.2f} GiB); {how}"
    if loaded >= size:
        return f"DiT fully loaded on {device} ({size / GB:.2f} GiB), {reserve:.2f} GiB kept for training; {how}"
    free = model_management.get_free_memory(device) / GB
    message = (
        f"DiT partially loaded (lowvram): {loaded / GB:.2f} of {size / GB:.2f} GiB on {device}, the rest "
        f"streamed from RAM at every forward (slower), because training needs {reserve:.2f} GiB beside it "
        f"and {free:.2f} GiB is free now (ComfyUI reserves {model_management.extra_reserved_memory() / GB:.2f}"
        f" GiB: --reserve-vram); {how}. fp8 weights (weight_dtype fp8_e4m3fn) halve the DiT"
    )
    logger.warning(message)
    return message


@contextmanager
def layer_checkpointing(network: comfy.ldm.lumina.model.NextDiT, enabled: bool, blocks: int | None = None):
    """The first `blocks` joint blocks (None: all) of ComfyUI's NextDiT run under torch.utils.checkpoint
    (non-reentrant) while training: a block keeps only its input until the backward recomputes it. Sets
    `gradient_checkpointing`, which the trainer reads to keep the student forwards separate. Restored after."""
    layers = list(network.layers)[:blocks]
    if not enabled or not layers:
        yield 0
        return
    previous = network.__dict__.get("gradient_checkpointing")
    for layer in layers:
        layer.forward = _checkpointed(layer.forward)
    network.gradient_checkpointing = True
    try:
        yield len(layers)
    finally:
        for layer in layers:
            del layer.forward
        if previous is None:
            network.__dict__.pop("gradient_checkpointing", None)
        else:
            network.gradient_checkpointing = previous


RECOMPUTING: contextvars.ContextVar[bool] = contextvars.ContextVar("zerase_recomputing", default=False)
# set while a checkpointed block's first forward runs (RECOMPUTING: while the backward reruns it)
CHECKPOINTED: contextvars.ContextVar[bool] = contextvars.ContextVar("zerase_checkpointed", default=False)


@contextmanager
def _recomputing(layout):
    """The backward's recomputation of a block: the forward's token layout again (gated adapters), and RECOMPUTING
    set, so the keyword probe recomputes the block's attention maps without recording them a second time."""
    token = RECOMPUTING.set(True)
    try:
        with active_layout(layout) if layout is not None else nullcontext():
            yield
    finally:
        RECOMPUTING.reset(token)


def _contexts():
    return nullcontext(), _recomputing(current_layout())


def _checkpointed(forward):
    def run(*args, **kwargs):
        if not torch.is_grad_enabled():
            return forward(*args, **kwargs)
        token = CHECKPOINTED.set(True)
        try:
            return torch.utils.checkpoint.checkpoint(
                forward, *args, use_reentrant=False, context_fn=_contexts, **kwargs
            )
        finally:
            CHECKPOINTED.reset(token)

    return run
