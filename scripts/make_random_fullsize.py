"""Write a random FULL-SIZE Z-Image-Turbo (or, with --family lumina2, Lumina-Image-2.0) DiT (30 layers, dim 3840, ~6.2B parameters, ~12 GB in bf16) and/or a
random full-size Qwen3-4B text encoder in ComfyUI's single-file layout (qwen_3_4b.safetensors: `model.` keys, ~8 GB
in bf16), streaming: each tensor is drawn and written in chunks, so writing needs well under 1 GB of RAM.

The files have the real shapes and key names, not the real weights: for memory measurements
(scripts/measure_erase_rss.py), never for images.

    python scripts/make_random_fullsize.py --dit /tmp/i14big/z_image_turbo_random.safetensors \
        --text-encoder /tmp/i14big/qwen_3_4b_random.safetensors
    python scripts/make_random_fullsize.py --family lumina2 --dit /tmp/i14big/lumina_2_random.safetensors \
        --text-encoder /tmp/i14big/gemma_2_2b_random.safetensors     # Lumina-2 (2.61B) + Gemma-2-2B (2.61B)
"""
from __future__ import annotations

import argparse
import json
import os
import struct
from pathlib import Path

import torch

from zerase_core.model.config import DiTConfig
from zerase_core.model.dit import ZImageDiT

# Qwen3-4B (Z-Image's text encoder): its config.json values
QWEN3_4B_SHAPES = {"vocab": 151936, "hidden": 2560, "layers": 36, "intermediate": 9728, "heads": 32, "kv_heads": 8,
                   "head_dim": 128}
CHUNK = 1 << 24          # values drawn at once


def dit_tensors(layers: int = 30) -> tuple[dict[str, tuple[int, ...]], dict[str, str]]:
    model = ZImageDiT(DiTConfig.turbo(n_layers=layers), device="meta")
    return {name: tuple(value.shape) for name, value in model.state_dict().items()}, model.config.to_metadata()


def lumina_dit_tensors() -> tuple[dict[str, tuple[int, ...]], dict[str, str]]:
    """Lumina-Image-2.0's DiT (dim 2304, 26 layers, 24 heads over 8 kv heads; 2.61B parameters)."""
    model = ZImageDiT(DiTConfig.lumina2(), device="meta")
    return {name: tuple(value.shape) for name, value in model.state_dict().items()}, model.config.to_metadata()


def gemma2_tensors() -> dict[str, tuple[int, ...]]:
    """Gemma-2-2B (Lumina-2's text encoder; transformers' Gemma2Config defaults) with gemma_2_2b_fp16's `model.`
    keys."""
    import transformers
    with torch.device("meta"):
        model = transformers.Gemma2Model(transformers.Gemma2Config())
    return {f"model.{name}": tuple(value.shape) for name, value in model.state_dict().items()}


def qwen3_tensors(shapes: dict = QWEN3_4B_SHAPES) -> dict[str, tuple[int, ...]]:
    hidden, head, inner = shapes["hidden"], shapes["head_dim"], shapes["intermediate"]
    names = {"model.embed_tokens.weight": (shapes["vocab"], hidden), "model.norm.weight": (hidden,)}
    for index in range(shapes["layers"]):
        prefix = f"model.layers.{index}."
        names.update({
            prefix + "input_layernorm.weight": (hidden,), prefix + "post_attention_layernorm.weight": (hidden,),
            prefix + "self_attn.q_proj.weight": (shapes["heads"] * head, hidden),
            prefix + "self_attn.k_proj.weight": (shapes["kv_heads"] * head, hidden),
            prefix + "self_attn.v_proj.weight": (shapes["kv_heads"] * head, hidden),
            prefix + "self_attn.o_proj.weight": (hidden, shapes["heads"] * head),
            prefix + "self_attn.q_norm.weight": (head,), prefix + "self_attn.k_norm.weight": (head,),
            prefix + "mlp.gate_proj.weight": (inner, hidden), prefix + "mlp.up_proj.weight": (inner, hidden),
            prefix + "mlp.down_proj.weight": (hidden, inner)})
    return names


def _values(name: str, shape: tuple[int, ...], count: int, generator: torch.Generator) -> torch.Tensor:
    """Linear weights N(0, 1/fan_in), norms ≈ 1, biases and pad tokens small: no block is an identity or explodes."""
    values = torch.randn(count, generator=generator)
    if len(shape) == 2 and "pad_token" not in name:
        return values * shape[1] ** -0.5
    if name.endswith("bias") or "pad_token" in name:
        return values * 0.02
    return 1.0 + 0.05 * values


def write_random(path: Path, shapes: dict[str, tuple[int, ...]], metadata: dict[str, str] | None = None,
                 seed: int = 0) -> int:
    """The safetensors file of `shapes` in bf16, random; atomically (temp file, then rename). Returns bytes."""
    header: dict[str, object] = {"__metadata__": metadata or {}}
    offset = 0
    for name, shape in shapes.items():
        size = 2 * int(torch.Size(shape).numel())
        header[name] = {"dtype": "BF16", "shape": list(shape), "data_offsets": [offset, offset + size]}
        offset += size
    encoded = json.dumps(header, separators=(",", ":")).encode()
    encoded += b" " * (-(8 + len(encoded)) % 64)
    temporary = path.with_name(f".{path.name}.tmp")
    generator = torch.Generator().manual_seed(seed)
    with open(temporary, "wb") as handle:
        handle.write(struct.pack("<Q", len(encoded)) + encoded)
        for name, shape in shapes.items():
            total = int(torch.Size(shape).numel())
            for start in range(0, total, CHUNK):
                count = min(CHUNK, total - start)
                chunk = _values(name, shape, count, generator).to(torch.bfloat16)
                handle.write(memoryview(chunk.view(torch.uint8).numpy()))
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)
    return 8 + len(encoded) + offset


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dit", type=Path, help="DiT file to write (.safetensors)")
    parser.add_argument("--layers", type=int, default=30, help="joint layers (Turbo: 30)")
    parser.add_argument("--text-encoder", type=Path, help="Qwen3-4B (Gemma-2-2B) file to write (.safetensors)")
    parser.add_argument("--family", choices=["z-image", "lumina2"], default="z-image",
                        help="z-image: Z-Image-Turbo + Qwen3-4B; lumina2: Lumina-Image-2.0 + Gemma-2-2B")
    args = parser.parse_args(argv)
    if args.dit is None and args.text_encoder is None:
        parser.error("give --dit and/or --text-encoder")
    if args.dit is not None:
        shapes, metadata = dit_tensors(args.layers) if args.family == "z-image" else lumina_dit_tensors()
        size = write_random(args.dit, shapes, metadata, seed=0)
        print(f"wrote {args.dit}: {sum(torch.Size(s).numel() for s in shapes.values()) / 1e9:.2f}B parameters,"
              f" {size / 2 ** 30:.2f} GiB")
    if args.text_encoder is not None:
        shapes = qwen3_tensors() if args.family == "z-image" else gemma2_tensors()
        size = write_random(args.text_encoder, shapes, seed=1)
        print(f"wrote {args.text_encoder}: {sum(torch.Size(s).numel() for s in shapes.values()) / 1e9:.2f}B"
              f" parameters, {size / 2 ** 30:.2f} GiB")


if __name__ == "__main__":
    main()
