"""What one joint block keeps for the backward, per autograd op: bytes per (token · dim), weights left out.

The memory model's σ(L) (engine/memory_model.py) is fitted to totals measured on the CPU. This prints where those
bytes come from on the device given, so a CUDA run can be compared with the CPU one (torch computes RMSNorm there with
a fused kernel that keeps other tensors than the CPU's composite one).

    python scripts/block_saved_tensors.py [--device cpu|cuda] [--dtype bfloat16|float32] [--dim 512] [--heads 4]
        [--tokens 256]
"""

from __future__ import annotations

import argparse
import dataclasses
from collections import Counter

import torch

from zerase_core.model.config import DiTConfig
from zerase_core.model.layers import JointTransformerBlock, rope_frequencies


def saved_by_op(block: torch.nn.Module, output: torch.Tensor) -> Counter:
    """Bytes saved for the backward per (op, saved name, shape, dtype), each storage once, parameters left out."""
    parameters = {parameter.untyped_storage().data_ptr() for parameter in block.parameters()}
    seen: set[int] = set()
    found: Counter = Counter()
    stack, visited = [output.grad_fn], set()
    while stack:
        node = stack.pop()
        if node is None or node in visited:
            continue
        visited.add(node)
        saved = [(name, None) for name in dir(node) if name.startswith("_saved_")]
        if hasattr(node, "saved_tensors"):  # a custom autograd.Function's node keeps its own list
            saved += [(f"_saved_tensors[{index}]", tensor) for index, tensor in enumerate(node.saved_tensors)]
        for name, value in saved:
            if value is None:
                try:
                    value = getattr(node, name)
                except RuntimeError:  # freed or not saved for this call
                    continue
            if not isinstance(value, torch.Tensor) or value.numel() == 0:
                continue
            storage = value.untyped_storage().data_ptr()
            if storage in parameters or storage in seen:
                continue
            seen.add(storage)
            key = (type(node).__name__, name[len("_saved_") :], tuple(value.shape), str(value.dtype))
            found[key] += value.untyped_storage().nbytes()
        stack.extend(next_node for next_node, _ in node.next_functions)
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="bfloat16", choices=("bfloat16", "float32"))
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--tokens", type=int, default=256)
    args = parser.parse_args()
    dtype, device = getattr(torch, args.dtype), torch.device(args.device)
    config = dataclasses.replace(DiTConfig(), dim=args.dim, n_heads=args.heads, n_layers=1)
    torch.manual_seed(0)
    block = JointTransformerBlock(config, True, device=device, dtype=dtype).requires_grad_(False)
    x = torch.randn(1, args.tokens, config.dim, device=device, dtype=dtype, requires_grad=True)
    positions = torch.zeros(1, args.tokens, 3, dtype=torch.long, device=device)
    positions[..., 1] = torch.arange(args.tokens, device=device)
    cos, sin = rope_frequencies(positions, config.axes_dims, config.rope_theta)
    output = block(x, cos, sin, torch.randn(1, config.adaln_width, device=device, dtype=dtype))
    found = saved_by_op(block, output)
    unit = args.tokens * config.dim
    print(
        f"torch {torch.__version__}, {device}, {args.dtype}, dim {config.dim}, ffn {config.ffn_hidden}, "
        f"{args.tokens} tokens; bytes per (token · dim)"
    )
    for (op, name, shape, kind), size in found.most_common():
        print(f"  {size / unit:7.2f}  {op}.{name} {list(shape)} {kind}")
    print(f"  {sum(found.values()) / unit:7.2f}  total")


if __name__ == "__main__":
    main()
