"""Measured bytes autograd keeps per joint block in ZEraseTrain's NextDiT (ComfyUI's own), against the memory model.

    COMFYUI_PATH=... comfyui-venv/bin/python scripts/comfy_block_bytes.py [--size 256] [--json FILE]

Z-Image-Turbo's width (dim 3840, 30 heads, FFN 10240), bf16 weights computed in bf16, rank-8 adapters through the
bridge's PatcherInjection, one sample, a 64-token caption. Saved-tensor hooks count the unique storages autograd
saves in one forward (frozen weights excluded), for a 1- and a 2-joint-layer model: the difference is one block.
Runs: the erase forward with keyword-attention capture and a plain forward, each without and with the bridge's
per-block checkpointing (nodes/comfy_bridge/vram.py). Prediction: zerase_core/engine/memory_model.py — σ(L) (+ κ(L)
with capture, + the CPU attention's softmax) without checkpointing, L·d·a (+ 4·H·N·K keyword maps) with it. About
1 GB of RAM and a minute on one core.
"""
from __future__ import annotations

import argparse
import atexit
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import gpu_comfy_check

MB = 1e6


def measure(bridge, layers: int, size: int, caption: int, capture: bool, checkpointing: bool) -> int:
    import torch

    from zerase_core.adapters.gated import AdapterConfig, AdapterSet
    from zerase_core.model.config import DiTConfig
    from zerase_core.model.keyword_attention import AttentionCapture
    from zerase_core.bench.synthetic import random_dit
    config = DiTConfig.turbo(n_layers=layers, n_refiner_layers=0)
    state = random_dit(config, torch.bfloat16).state_dict()
    patcher = bridge.build_zimage_patcher(config, state, nano=False, dtype=torch.bfloat16)
    del state
    saved: dict[int, int] = {}
    with bridge.training(patcher, bridge.MemoryPlan(0, checkpointing, None, 0.0)) as context:
        weights = {parameter.untyped_storage().data_ptr() for parameter in context.network.parameters()}

        def pack(tensor):
            storage = tensor.untyped_storage()
            if storage.data_ptr() not in weights:
                saved[storage.data_ptr()] = storage.nbytes()
            return tensor

        adapters = AdapterSet(context.network, AdapterConfig(rank=8))
        x = torch.randn(1, 16, size // 8, size // 8)
        features = torch.randn(1, caption, config.cap_feat_dim)
        probe = AttentionCapture(columns=torch.tensor([[3]])) if capture else None
        with context.attached(adapters), torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
            context.denoiser(x, torch.tensor([0.5]), features, torch.tensor([caption]), probe)
    return sum(saved.values())


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--caption", type=int, default=64)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    comfyui = Path(os.environ.get("COMFYUI_PATH", "../shared/comfyui")).resolve()
    gpu_comfy_check._import_comfyui(comfyui, ["--cpu"])
    import torch
    torch.set_num_threads(1)

    from zerase_core.engine import memory_model
    from zerase_core.model.config import DiTConfig
    work = Path(tempfile.mkdtemp(prefix="zerase-block-bytes-"))
    atexit.register(shutil.rmtree, work, True)
    _, bridge = gpu_comfy_check._load_pack(work)
    config = DiTConfig.turbo()
    counts = memory_model.tokens(config, args.size, args.caption)
    length, image = counts["caption"], counts["image"]
    rows = []
    for capture in (True, False):
        for checkpointing in (False, True):
            one, two = (measure(bridge, layers, args.size, args.caption, capture, checkpointing) for layers in (1, 2))
            if checkpointing:
                predicted = length * config.dim * 2 + (4 * config.n_heads * image if capture else 0)
            else:  # + the softmax (H·L² bf16) that ComfyUI's CPU attention (sub-quadratic) keeps; on NVIDIA
                # ComfyUI runs torch's SDPA, which keeps no L² tensor, so the memory model leaves it out
                predicted = memory_model.block_saved_bytes(config, length, image, 2, capture)
                predicted += config.n_heads * length**2 * 2
            rows.append({"capture": capture, "checkpointing": checkpointing, "L": length,
                         "measured_mb": round((two - one) / MB, 2), "predicted_mb": round(predicted / MB, 2),
                         "error_pct": round(100 * (predicted - (two - one)) / (two - one), 1)})
            print(json.dumps(rows[-1]), flush=True)
    if args.json:
        temporary = args.json.with_suffix(".tmp")
        temporary.write_text(json.dumps(rows, indent=1) + "\n")
        temporary.replace(args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
