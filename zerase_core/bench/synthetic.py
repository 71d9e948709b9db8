"""Stand-ins for the real model's parts in the benchmarks: a random DiT of any size, a synthetic text conditioner of
any width (a step on an accelerator runs the same engine: engine/forwards.py)."""

from __future__ import annotations

import zlib
from typing import cast

import torch
from torch import nn

from ..model.config import DiTConfig
from ..model.dit import ZImageDiT
from ..model.layers import JointTransformerBlock


def random_dit(config: DiTConfig, dtype: torch.dtype = torch.float32, device="cpu", seed: int = 0) -> ZImageDiT:
    """A randomly initialised DiT created directly in `dtype` on `device` (no float32 copy of the weights), frozen.

    Default Linear init everywhere; the blocks' adaLN and the output layer, which training starts at zero, get small
    random values so that no block is an identity and the velocity is not zero.
    """
    torch.manual_seed(seed)
    model = ZImageDiT(config, device=device, dtype=dtype)
    blocks = cast(list[JointTransformerBlock], [*model.layers, *model.noise_refiner])
    final = model.final_layer
    # each block's adaLN Linear, then the output layer's adaLN Linear and projection (the order of the draws)
    linears = [*(block.adaLN_modulation[-1] for block in blocks), final.adaLN_modulation[1], final.linear]
    with torch.no_grad():
        for linear in cast(list[nn.Linear], linears):
            linear.weight.normal_(0.0, 0.02)
    return model.eval().requires_grad_(False)


class SyntheticConditioner:
    """A `TextConditioner` of any width: one fixed random vector per word, every caption padded with template
    tokens to `tokens` (the stand-in for Qwen3's chat-templated captions). The empty prompt is one token."""

    def __init__(self, width: int, tokens: int = 64):
        if tokens < 1:
            raise ValueError(f"caption tokens must be ≥ 1, got {tokens}")
        self.width, self.tokens = width, tokens

    def _vector(self, word: str) -> torch.Tensor:
        generator = torch.Generator().manual_seed(zlib.crc32(word.encode()))
        return torch.randn(self.width, generator=generator)

    @staticmethod
    def _words(prompt: str) -> list[str]:
        return prompt.lower().replace(",", " , ").split()

    def encode(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        rows = []
        for prompt in prompts:
            words = self._words(prompt)
            if not words:
                rows.append(["<empty>"])
                continue
            filler = [f"<template{index}>" for index in range(max(0, self.tokens - len(words)))]
            rows.append(words + filler)
        length = max(len(row) for row in rows)
        features = torch.zeros(len(prompts), length, self.width)
        for index, row in enumerate(rows):
            features[index, : len(row)] = torch.stack([self._vector(word) for word in row])
        return features, torch.tensor([len(row) for row in rows])

    def keyword_positions(self, prompt: str, keyword: str) -> list[int]:
        words, target = self._words(prompt), self._words(keyword)
        return [
            start + offset
            for start in range(len(words) - len(target) + 1)
            if words[start : start + len(target)] == target
            for offset in range(len(target))
        ]

    def check_keyword(self, keyword: str) -> None:
        if not self._words(keyword):
            raise ValueError("empty keyword")
