"""ZEraseTrain's NextDiT norms and SwiGLU gates recomputed in the backward (nodes/comfy_bridge/recomputed_ops.py): the
same velocity and adapter gradients bit for bit, less kept for the backward, every module restored after training."""
from __future__ import annotations

from contextlib import nullcontext

import pytest
import torch
from torch import nn
from test_comfyui_vram import TINY, _node_module, _step, _tiny_dit


@pytest.mark.parametrize("checkpointing", [False, True], ids=["kept", "checkpointed"])
def test_recomputed_ops_give_the_same_gradients_and_keep_less(pack, monkeypatch, checkpointing):
    # bf16 weights computed in bf16, as on a GPU (a CPU load of a bf16 file computes in fp32: no copy to save)
    patcher = pack["bridge"].build_zimage_patcher(TINY, _tiny_dit().state_dict(), nano=False, dtype=torch.bfloat16)
    velocity, grads, saved = _step(pack, patcher, checkpointing, capture=True)
    graph_training = _node_module(pack, "comfy_bridge.graph_training")
    monkeypatch.setattr(graph_training, "recomputed_ops", lambda network: nullcontext(0))
    stock_velocity, stock_grads, stock_saved = _step(pack, patcher, checkpointing, capture=True)
    assert torch.equal(velocity, stock_velocity)
    for ours, stock in zip(grads, stock_grads, strict=True):
        assert torch.equal(ours, stock)
    if checkpointing:  # a checkpointed block keeps its input only, with or without
        assert saved == stock_saved
    else:  # 11 norms recomputed (2 joint layers × 6, the first one's input needs no gradient), each input
        # (2 rows, 64 tokens, 256 wide): 11 float32 copies gone, at most 11 bf16 inputs and the 2 layers' qkv
        # buffers (the Q/K norms' inputs are views of it) kept instead; and 2 layers' silu(w1·x) (2 · 64 · FFN)
        element = 2 * 64 * 256
        norms = 11 * element * 4 - (11 * element * 2 + 2 * 3 * element * 2)
        assert stock_saved - saved >= norms + 2 * (2 * 64 * TINY.ffn_hidden * 2), (stock_saved, saved)
    network = patcher.model.diffusion_model
    assert not [module for module in network.modules()
                if {"forward", "_forward_silu_gating"} & set(module.__dict__)], "a module was not restored"
