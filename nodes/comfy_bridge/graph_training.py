"""Training inside the graph: on the MODEL's own NextDiT, inference mode off, gradients on, `in_training` set.

The NextDiT runs in its weights' own dtype while it trains, as the core engine does. ComfyUI computes bf16/fp16
weights in fp32 on a CPU (`unet_manual_cast`), so each cast op (`comfy_cast_weights`) makes an fp32 copy of its
weight per call; under autograd F.linear saves that copy for the backward: a full fp32 copy of the weights per
forward. With the input in the weights' dtype and the cast off, autograd saves the weights themselves.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

import comfy.ldm.lumina.model
import comfy.model_management as model_management
import comfy.model_patcher
import comfy.patcher_extension

from zerase_core.adapters.gated import AdapterSet
from zerase_core.model.keyword_attention import AttentionCapture, keyword_attention
from zerase_core.model.layout import TokenLayout

from .erasures import WRAPPER_KEY, ErasureInjection, _layout_wrapper
from .kept_prefix import KeptPrefix
from .models import zimage_network
from .recomputed_ops import recomputed_ops
from .vram import CHECKPOINTED, RECOMPUTING, MemoryPlan, layer_checkpointing, load_for_training

TRAINING_INJECTION_KEY = "zerase.training"
COMPUTE_DTYPES = (torch.float32, torch.bfloat16, torch.float16)  # dtypes torch computes in, on CPU too
_CLASS_VALUE = object()  # the module had no comfy_cast_weights of its own (the ops class's value applied)


def read_resume(path: Path, nano: bool):
    """`training.resume_state` with normal (not inference-mode) tensors: the optimizer updates them in place."""
    from .. import training as node_training

    with torch.inference_mode(False):
        return node_training.resume_state(path, nano)


def _make_trainable(network: nn.Module) -> None:
    """Replace inference-mode weights by normal tensors, one tensor at a time (values unchanged, no second copy).

    Weights created inside ComfyUI's `torch.inference_mode()` cannot be saved for backward, and the adapters'
    gradients must flow back through every later frozen layer.
    """
    for module in network.modules():
        for name, parameter in list(module._parameters.items()):
            if parameter is not None and parameter.is_inference():
                module._parameters[name] = nn.Parameter(parameter.clone(), requires_grad=False)
        for name, buffer in list(module._buffers.items()):
            if buffer is not None and buffer.is_inference():
                module._buffers[name] = buffer.clone()


@dataclass
class TrainingContext:
    patcher: comfy.model_patcher.ModelPatcher
    network: nn.Module
    denoiser: NextDiTDenoiser
    memory_report: str = ""

    @contextmanager
    def attached(self, adapters: AdapterSet):
        """The trainer's adapters on the training clone through a PatcherInjection, for the run."""
        self.patcher.eject_model()
        self.patcher.set_injections(TRAINING_INJECTION_KEY, [ErasureInjection([adapters]).patcher_injection()])
        self.patcher.inject_model()
        try:
            yield adapters
        finally:
            self.patcher.eject_model()
            self.patcher.remove_injections(TRAINING_INJECTION_KEY)


@contextmanager
def training(model, memory: MemoryPlan | None = None):
    """Inference mode off, grads on, `in_training` set, the MODEL's clone loaded by ComfyUI with `memory.reserve_bytes`
    kept free for training (vram.load_for_training; None: fully loaded, nothing reserved), the joint blocks
    checkpointed where `memory.checkpointing`, norms and SwiGLU gates recomputed in the backward (recomputed_ops);
    everything restored after. `TrainingContext.memory_report` says how the DiT was loaded."""
    patcher = model.clone()
    network = zimage_network(patcher)
    patcher.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.DIFFUSION_MODEL, WRAPPER_KEY, _layout_wrapper)
    previous = model_management.in_training
    with torch.inference_mode(False), torch.enable_grad():
        try:
            _make_trainable(network)
            if memory is None:
                model_management.load_models_gpu([patcher], memory_required=0, force_full_load=True)
                report = "DiT fully loaded (no memory plan)"
            else:
                report = load_for_training(patcher, memory)
            model_management.in_training = True
            blocks = None if memory is None else memory.blocks
            checkpointing = memory is not None and memory.checkpointing
            with layer_checkpointing(network, checkpointing, blocks), recomputed_ops(network):
                yield TrainingContext(patcher, network, NextDiTDenoiser(patcher, network), report)
        finally:
            model_management.in_training = previous
            patcher.eject_model()


def _plain(tensor: torch.Tensor) -> bool:
    """A tensor torch multiplies directly: not ComfyUI's QuantizedTensor, GGUF's GGMLTensor or another subclass."""
    return type(tensor) in (torch.Tensor, nn.Parameter)


def training_dtype(patcher, network: nn.Module) -> torch.dtype:
    """The dtype the NextDiT computes in while training: the weights' own where that needs no cast, else ComfyUI's.

    The weights' dtype when ComfyUI's cast only comes from its CPU policy (bf16/fp16 weights computed in fp32 on a
    CPU, for speed) and every weight is a plain fp32/bf16/fp16 tensor. ComfyUI's compute dtype is kept for fp8,
    quantized (mixed-precision) or GGUF weights, which cannot be multiplied directly; for a compute dtype the user
    set (ModelComputeDtype, `--force-fp32`); and on an accelerator, where ComfyUI casts a compute dtype only when
    the device lacks it.
    """
    base = patcher.model
    stored = base.get_dtype()
    inference = base.get_dtype_inference() if hasattr(base, "get_dtype_inference") else stored
    if stored == inference or stored not in COMPUTE_DTYPES:
        return inference
    if "manual_cast_dtype" in patcher.object_patches or model_management.FORCE_FP32:
        return inference
    if getattr(base.model_config, "quant_config", None) or not model_management.is_device_cpu(patcher.load_device):
        return inference
    if any(not _plain(tensor) for tensor in network.parameters()):
        return inference
    return stored


def _runs_uncast(module: nn.Module, dtype: torch.dtype, device: torch.device) -> bool:
    """True when `module`'s cast would be a no-op: plain `dtype` weights on `device`, no patch functions, no
    offload (ComfyUI's lowvram or forced cast sets `prev_comfy_cast_weights`; dynamic VRAM streams through `_v`)."""
    offloaded = hasattr(module, "_v") or hasattr(module, "prev_comfy_cast_weights")
    if offloaded or getattr(module, "comfy_force_cast_weights", False):
        return False
    if getattr(module, "weight_function", None) or getattr(module, "bias_function", None):
        return False
    weights = list(module.parameters(recurse=False))
    return bool(weights) and all(
        _plain(tensor) and tensor.dtype == dtype and _same_device(tensor.device, device) for tensor in weights
    )


def _same_device(found: torch.device, wanted: torch.device) -> bool:
    return found.type == wanted.type and (wanted.index is None or found.index in (None, wanted.index))


@contextmanager
def uncast_ops(network: comfy.ldm.lumina.model.NextDiT, dtype: torch.dtype, device: torch.device):
    """ComfyUI's per-op cast (`comfy_cast_weights`) off on the modules that `_runs_uncast`; restored after."""
    changed = []
    try:
        for module in network.modules():
            if getattr(module, "comfy_cast_weights", False) and _runs_uncast(module, dtype, device):
                changed.append((module, module.__dict__.get("comfy_cast_weights", _CLASS_VALUE)))
                module.comfy_cast_weights = False
        yield len(changed)
    finally:
        for module, previous in reversed(changed):
            if previous is _CLASS_VALUE:
                del module.comfy_cast_weights
            else:
                module.comfy_cast_weights = previous


class NextDiTDenoiser:
    """`denoise(x, sigma, context, lengths, capture=None) -> v` for EraseTrainer, on ComfyUI's own NextDiT.

    NextDiT takes one caption length per forward, so a batch of mixed lengths runs as one forward per length (as
    if each sample ran alone, which is what the core model computes with its masked batch padding). The groups
    share the weights: in the weights' dtype, autograd saves the weights themselves once, whatever the number of
    groups. Keyword attention for L_attn is captured through `optimized_attention_override` in the joint blocks.
    Each call runs in `training_dtype`, with the cast off (`uncast_ops`) for that call only: sampling outside
    ZEraseTrain (KSampler) sees the MODEL exactly as ComfyUI set it up.
    `stacks_rows = False`: the trainer runs its student forwards separately. Stacked, they would still run as one
    forward per caption length, and the anchor rows would join the erase rows' group and its keyword capture
    (`bench --flops`: 11.64 against 10.65 forward-equivalents at 1024², no block checkpointed).
    """

    stacks_rows = False

    def __init__(self, patcher, network: nn.Module):
        self.patcher, self.network = patcher, network
        self.device = patcher.load_device
        self.dtype = training_dtype(patcher, network)
        self.check_interrupt = True
        self.kept_prefix = KeptPrefix(network)
        # the engine's hook for the λ probe: calls inside repeat their inputs (forwards.TrainerForwards._probe)
        self.repeating = self.kept_prefix.repeating

    def _options(self, capture_sink=None) -> dict:
        # ComfyUI's transformer_options
        options: dict[str, Any] = {
            "wrappers": {comfy.patcher_extension.WrappersMP.DIFFUSION_MODEL: {WRAPPER_KEY: [_layout_wrapper]}}
        }
        for wrapper in self.patcher.get_all_wrappers(comfy.patcher_extension.WrappersMP.DIFFUSION_MODEL):
            if wrapper is not _layout_wrapper:
                options["wrappers"][comfy.patcher_extension.WrappersMP.DIFFUSION_MODEL].setdefault(None, []).append(
                    wrapper
                )
        if capture_sink is not None:
            options["optimized_attention_override"] = capture_sink
        return options

    def __call__(self, x, sigma, context, lengths, capture: AttentionCapture | None = None):
        if self.check_interrupt:
            model_management.throw_exception_if_processing_interrupted()
        lengths = (
            [int(n) for n in torch.as_tensor(lengths).tolist()]
            if lengths is not None
            else [context.shape[1]] * x.shape[0]
        )
        groups: dict[int, list[int]] = {}
        for row, length in enumerate(lengths):
            groups.setdefault(length, []).append(row)
        outputs, order = [], []
        maps: list[list[torch.Tensor]] = []  # per group, each joint block's keyword attention (with `capture`)
        with uncast_ops(self.network, self.dtype, torch.device(self.device)):
            for length, rows in groups.items():
                index = torch.tensor(rows)
                sink = None
                if capture is not None:
                    sink = _KeywordProbe(
                        capture.columns[index],
                        None if capture.column_mask is None else capture.column_mask[index],
                        x.shape[-2:],
                        length,
                        self.network,
                    )
                with self.kept_prefix.around_forward():
                    velocity = self.network(
                        x[index].to(self.device, self.dtype),
                        sigma[index].to(self.device, torch.float32),
                        context=context[index, :length].to(self.device, self.dtype),
                        num_tokens=length,
                        transformer_options=self._options(sink),
                    )
                outputs.append(velocity.float().to(x.device))
                if sink is not None:
                    maps.append(sink.maps)
                order.extend(rows)
        inverse = torch.argsort(torch.tensor(order))
        if capture is not None:
            for layer in range(len(maps[0])):
                merged = torch.cat([group[layer].to(x.device) for group in maps])
                capture.maps.append(merged[inverse])
        return torch.cat(outputs)[inverse]


class _KeywordProbe:
    """optimized_attention_override: in each joint block, image-query × keyword-key softmax attention."""

    def __init__(self, columns, column_mask, latent_hw, text_length: int, network):
        self.layout = TokenLayout.from_shapes(
            [text_length] * columns.shape[0], latent_hw, network.patch_size, network.pad_tokens_multiple or 1
        )
        self.columns, self.column_mask = columns, column_mask
        self.maps: list[torch.Tensor] = []

    def __call__(self, attention, *args, **kwargs):
        options = kwargs.get("transformer_options") or {}
        if options.get("block_type") == "double":
            query, key = args[0], args[1]  # (B, H, L, D), normalised and rotated (skip_reshape)
            recomputing, checkpointed = RECOMPUTING.get(), CHECKPOINTED.get()
            found = keyword_attention(
                query,
                key,
                None,
                self.layout.text_span,
                self.layout.image_tokens,
                self.columns.to(query.device),
                recompute=not (recomputing or checkpointed),  # a checkpointed block reruns it with the block
            )
            if self.column_mask is not None:
                found = found * self.column_mask[:, None, None, :].to(found.device, found.dtype)
            # A checkpointed block's recomputation runs the probe again, so that it saves what the forward saved
            # (the maps' backward needs those tensors), but records nothing a second time.
            if not recomputing:
                self.maps.append(found)
        return attention(*args, **kwargs)
