"""Training inside the graph: on the MODEL's own NextDiT, inference mode off, gradients on, `in_training` set."""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

import comfy.model_management as model_management
import comfy.patcher_extension

from zerase_core.adapters import AdapterSet
from zerase_core.layout import TokenLayout
from zerase_core.model import AttentionCapture, keyword_attention

from .erasures import WRAPPER_KEY, ErasureInjection, _layout_wrapper
from .models import zimage_network

TRAINING_INJECTION_KEY = "zerase.training"


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
    patcher: object
    network: nn.Module
    denoiser: "NextDiTDenoiser"

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
def training(model):
    """Inference mode off, grads on, `in_training` set, the MODEL's clone loaded; everything restored after."""
    patcher = model.clone()
    network = zimage_network(patcher)
    patcher.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.DIFFUSION_MODEL, WRAPPER_KEY, _layout_wrapper)
    previous = model_management.in_training
    with torch.inference_mode(False), torch.enable_grad():
        try:
            _make_trainable(network)
            model_management.load_models_gpu([patcher], memory_required=0, force_full_load=True)
            model_management.in_training = True
            yield TrainingContext(patcher, network, NextDiTDenoiser(patcher, network))
        finally:
            model_management.in_training = previous
            patcher.eject_model()


class NextDiTDenoiser:
    """`denoise(x, sigma, context, lengths, capture=None) -> v` for EraseTrainer, on ComfyUI's own NextDiT.

    NextDiT takes one caption length per forward, so a batch of mixed lengths runs as one forward per length (as
    if each sample ran alone, which is what the core model computes with its masked batch padding). Keyword
    attention for L_attn is captured through `optimized_attention_override` in the joint blocks.
    """

    def __init__(self, patcher, network: nn.Module):
        self.patcher, self.network = patcher, network
        self.device = patcher.load_device
        self.dtype = patcher.model.get_dtype_inference() if hasattr(patcher.model, "get_dtype_inference") else \
            patcher.model.get_dtype()
        self.check_interrupt = True

    def _options(self, capture_sink=None) -> dict:
        options = {"wrappers": {comfy.patcher_extension.WrappersMP.DIFFUSION_MODEL:
                                {WRAPPER_KEY: [_layout_wrapper]}}}
        for wrapper in self.patcher.get_all_wrappers(comfy.patcher_extension.WrappersMP.DIFFUSION_MODEL):
            if wrapper is not _layout_wrapper:
                options["wrappers"][comfy.patcher_extension.WrappersMP.DIFFUSION_MODEL].setdefault(None, []).append(
                    wrapper)
        if capture_sink is not None:
            options["optimized_attention_override"] = capture_sink
        return options

    def __call__(self, x, sigma, context, lengths, capture: AttentionCapture | None = None):
        if self.check_interrupt:
            model_management.throw_exception_if_processing_interrupted()
        lengths = [int(n) for n in torch.as_tensor(lengths).tolist()] if lengths is not None else \
            [context.shape[1]] * x.shape[0]
        groups: dict[int, list[int]] = {}
        for row, length in enumerate(lengths):
            groups.setdefault(length, []).append(row)
        outputs, maps, order = [], [], []
        for length, rows in groups.items():
            index = torch.tensor(rows)
            sink = None
            if capture is not None:
                sink = _KeywordProbe(capture.columns[index], None if capture.column_mask is None else
                                     capture.column_mask[index], x.shape[-2:], length, self.network)
            velocity = self.network(
                x[index].to(self.device, self.dtype), sigma[index].to(self.device, torch.float32),
                context=context[index, :length].to(self.device, self.dtype), num_tokens=length,
                transformer_options=self._options(sink))
            outputs.append(velocity.float().to(x.device))
            maps.append(sink.maps if sink is not None else None)
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
        self.layout = TokenLayout.from_shapes([text_length] * columns.shape[0], latent_hw, network.patch_size,
                                              network.pad_tokens_multiple or 1)
        self.columns, self.column_mask = columns, column_mask
        self.maps: list[torch.Tensor] = []

    def __call__(self, attention, *args, **kwargs):
        options = kwargs.get("transformer_options") or {}
        if options.get("block_type") == "double":
            query, key = args[0], args[1]          # (B, H, L, D), normalised and rotated (skip_reshape)
            found = keyword_attention(query, key, None, self.layout.text_span, self.layout.image_tokens,
                                      self.columns.to(query.device))
            if self.column_mask is not None:
                found = found * self.column_mask[:, None, None, :].to(found.device, found.dtype)
            self.maps.append(found)
        return attention(*args, **kwargs)
