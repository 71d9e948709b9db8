"""ZEraseTrain runs ComfyUI's NextDiT in the weights' own dtype, so autograd saves the weights, not fp32 copies.

On a CPU ComfyUI computes bf16 weights in fp32 (`unet_manual_cast`): every cast op copies its weight to fp32 per call,
and under autograd F.linear keeps that copy for the backward. The nano-shaped models here are built by ComfyUI's own
classes with that policy; fp8 weights and a compute dtype the user set keep ComfyUI's cast.
"""
from __future__ import annotations

import pytest
import torch
from torch import nn

from zerase_core.adapters.gated import AdapterConfig, AdapterSet


@pytest.fixture(scope="module")
def nano_state(pack, nano_weights):
    from zerase_core.model.checkpoint import (
        infer_config,
        normalize_keys,
        read_state_dict,
    )
    from zerase_core.nano import paths
    state, metadata = read_state_dict(paths.DIT)
    state = normalize_keys(state)
    return infer_config(state, metadata), state


def build(pack, nano_state, dtype, manual_cast_dtype):
    config, state = nano_state
    return pack["bridge"].build_zimage_patcher(config, state, nano=True, dtype=dtype,
                                               manual_cast_dtype=manual_cast_dtype)


def cast_flags(network: nn.Module) -> list:
    """Each module's own comfy_cast_weights (None where the ops class's value applies)."""
    return [module.__dict__.get("comfy_cast_weights") for module in network.modules()]


def inputs(config):
    """Two samples with different caption lengths: two forward groups in NextDiTDenoiser."""
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(2, config.in_channels, 8, 8, generator=generator)
    context = torch.randn(2, 9, config.cap_feat_dim, generator=generator)
    return x, torch.tensor([0.7, 0.3]), context, torch.tensor([9, 5])


def traced_step(pack, patcher, nano_state):
    """One denoiser forward + backward inside ZEraseTrain's training context, with an adapter set attached.

    Returns (denoiser dtype, the tensors autograd saved, the parameters' storages, weight shapes, adapter grad norm);
    the modules' cast flags after the call are those before it.
    """
    config, _ = nano_state
    saved = []
    with pack["bridge"].training(patcher) as context:
        network = context.network
        weights = {parameter.untyped_storage().data_ptr() for parameter in network.parameters()}
        shapes = {tuple(parameter.shape) for parameter in network.parameters() if parameter.dim() == 2}
        adapters = AdapterSet(network, AdapterConfig(rank=4))
        flags = cast_flags(network)        # as ComfyUI loaded the model for training
        with context.attached(adapters):
            with torch.autograd.graph.saved_tensors_hooks(lambda tensor: saved.append(tensor) or tensor,
                                                          lambda tensor: tensor):
                velocity = context.denoiser(*inputs(config))
            velocity.square().mean().backward()
        assert cast_flags(network) == flags, "a module's comfy_cast_weights was not restored"
        grad = sum(parameter.grad.norm() for parameter in adapters.parameters() if parameter.grad is not None)
        return context.denoiser.dtype, saved, weights, shapes, float(grad)


def test_bf16_weights_train_in_bf16_without_fp32_weight_copies(pack, nano_state):
    import comfy.model_management
    cpu_compute = comfy.model_management.unet_manual_cast(torch.bfloat16, torch.device("cpu"))
    assert cpu_compute == torch.float32, "ComfyUI's CPU policy changed: bf16 weights are no longer cast on a CPU"
    patcher = build(pack, nano_state, torch.bfloat16, cpu_compute)
    network = patcher.model.diffusion_model
    assert patcher.model.get_dtype_inference() == torch.float32 and network.layers[0].attention.qkv.comfy_cast_weights
    flags = cast_flags(network)

    dtype, saved, weights, shapes, grad = traced_step(pack, patcher, nano_state)
    assert dtype == torch.bfloat16
    assert grad > 0, "no gradient reached the adapters"
    copies = [(tensor.dtype, tuple(tensor.shape)) for tensor in saved
              if tuple(tensor.shape) in shapes and tensor.untyped_storage().data_ptr() not in weights]
    assert not copies, f"autograd saved copies of weights: {copies[:5]}"
    saved_weights = {tensor.untyped_storage().data_ptr() for tensor in saved} & weights
    assert len(saved_weights) >= len(network.layers) * 4, "the bf16 weights themselves should be saved for backward"
    assert cast_flags(network) == flags, "a module's comfy_cast_weights was not restored"
    assert network.layers[0].attention.qkv.comfy_cast_weights


def test_sampling_outside_training_is_unchanged(pack, nano_state):
    """ComfyUI's fp32 compute of the bf16 weights, bitwise the same before and after a training context."""
    config, _ = nano_state
    patcher = build(pack, nano_state, torch.bfloat16, torch.float32)
    network = patcher.model.diffusion_model
    x, sigma, context, _ = inputs(config)

    def sample():
        with torch.inference_mode():
            return network(x, sigma, context=context, num_tokens=context.shape[1])

    before = sample()
    assert before.dtype == torch.float32
    traced_step(pack, patcher, nano_state)
    assert torch.equal(sample(), before)


@pytest.mark.parametrize("case", ["fp8 weights", "compute dtype set by the user"])
def test_comfyui_cast_is_kept_where_it_is_needed(pack, nano_state, case):
    uncast_ops = pack["bridge"].graph_training.uncast_ops
    if case == "fp8 weights":
        patcher = build(pack, nano_state, torch.float8_e4m3fn, torch.float32)
    else:
        patcher = build(pack, nano_state, torch.bfloat16, None)
        patcher.set_model_compute_dtype(torch.float32)        # what ComfyUI's ModelComputeDtype node does
    network = patcher.model.diffusion_model
    dtype, _, _, _, grad = traced_step(pack, patcher, nano_state)
    assert dtype == torch.float32 and grad > 0
    if case == "fp8 weights":
        with uncast_ops(network, dtype, torch.device("cpu")) as changed:
            assert changed == 0, "fp8 weights cannot be multiplied by fp32 inputs without ComfyUI's cast"
