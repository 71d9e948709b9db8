"""Write a randomly initialised Z-Image DiT with Z-Image-Turbo's real width (dim 3840) for the real-format tests.

ComfyUI's UNETLoader recognises a Z-Image file only at dim 3840 (any number of joint layers); with 1 joint layer and
Z-Image's 2+2 refiners it has about 0.9B parameters (1.8 GB in bf16). The caption width is free (it is read from
`cap_embedder.1.weight`): 64 fits the tiny Qwen3 CLIP of the tests (tests/comfyui).

    python scripts/make_random_zimage.py --out /tmp/zimage-random.safetensors --layers 1 --cap-feat-dim 64
"""
from __future__ import annotations

import argparse
from pathlib import Path

import torch

from zerase_core.model.checkpoint import save_dit
from zerase_core.model.config import DiTConfig
from zerase_core.model.dit import ZImageDiT

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


def random_zimage(layers: int, cap_feat_dim: int, seed: int, dtype: torch.dtype) -> ZImageDiT:
    """Every weight random (Linear N(0, 1/fan_in), norms ≈ 1, biases small): no block is an identity."""
    model = ZImageDiT(DiTConfig.turbo(n_layers=layers, cap_feat_dim=cap_feat_dim), device="meta")
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            for name, parameter in list(module._parameters.items()):
                if parameter is None:
                    continue
                values = torch.randn(parameter.shape, generator=generator, dtype=torch.float32)
                if parameter.dim() == 2 and "pad_token" not in name:
                    values *= parameter.shape[1] ** -0.5
                elif name == "bias":
                    values *= 0.02
                elif "pad_token" not in name:
                    values = 1.0 + 0.05 * values
                module._parameters[name] = torch.nn.Parameter(values.to(dtype), requires_grad=False)
    return model.eval()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="file to write (.safetensors)")
    parser.add_argument("--layers", type=int, default=1, help="joint layers (Turbo: 30)")
    parser.add_argument("--cap-feat-dim", type=int, default=64, help="text feature width (Qwen3-4B: 2560)")
    parser.add_argument("--dtype", choices=list(DTYPES), default="bf16")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.out.suffix != ".safetensors":
        parser.error(f"--out {args.out} must end in .safetensors")
    model = random_zimage(args.layers, args.cap_feat_dim, args.seed, DTYPES[args.dtype])
    save_dit(model, args.out)
    count = sum(parameter.numel() for parameter in model.parameters())
    print(f"wrote {args.out}: dim 3840, {args.layers} joint layer(s), {count / 1e9:.2f}B parameters ({args.dtype})")


if __name__ == "__main__":
    main()
