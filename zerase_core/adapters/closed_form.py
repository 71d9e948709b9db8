"""Training-free baselines: UCE's closed-form edit of the text-only `cap_embedder` projection, and token zeroing.

uce-text (UCE, Gandikota et al. 2024, ported to the single-stream text path): for the caption projection W
(`cap_embedder.1`, cap_feat_dim → dim, seen only by text tokens), with c_i the normalised features of the keyword
tokens, c*_i the features of the anchor token at the same position, and c_j every token of the anchor prompts:
    W* = (Σ_i W c*_i c_iᵀ + Σ_j W c_j c_jᵀ + λ W) (Σ_i c_i c_iᵀ + Σ_j c_j c_jᵀ + λ I)⁻¹
The delta W* − W is stream-pure (text tokens only), so it can also be exported as a stock LoRA/diff.
Token zeroing: keyword tokens are removed from the keys of every joint layer at inference.
"""

from __future__ import annotations

from typing import cast

import torch
from torch import nn

from ..common.limits import check_strength
from ..common.prompts import PromptSet, TextConditioner
from .forward_wraps import unwrap_forwards, wrap_forward
from .gated import KEY_PREFIX

UCE_TARGET = "cap_embedder.1"


class WeightDelta(nn.Module):
    """ΔW on a text-only Linear, added as x·ΔWᵀ·strength by a reversible forward wrapper."""

    def __init__(self, path: str, delta: torch.Tensor):
        super().__init__()
        self.path = path
        self.delta = nn.Parameter(delta.float(), requires_grad=False)
        self.strength = 1.0
        self._attached: list[tuple[nn.Module, object, object]] = []

    def attach(self, model: nn.Module) -> WeightDelta:
        linear = cast(nn.Linear, model.get_submodule(self.path))  # the edited projection
        if tuple(self.delta.shape) != (linear.out_features, linear.in_features):
            raise ValueError(
                f"{self.path} delta has shape {tuple(self.delta.shape)}, the model needs "
                f"{(linear.out_features, linear.in_features)}"
            )
        self._attached.append(
            wrap_forward(
                linear,
                lambda original: (
                    lambda x: original(x) + (x.to(self.delta.dtype) @ self.delta.t() * self.strength).to(x.dtype)
                ),
            )
        )
        return self

    def detach(self) -> None:
        unwrap_forwards(self._attached)
        self._attached = []

    def set_strength(self, strength: float) -> None:
        self.strength = check_strength(strength)

    def export_tensors(self) -> dict[str, torch.Tensor]:
        return {f"{KEY_PREFIX}{self.path}.delta": self.delta.detach().cpu()}


@torch.no_grad()
def uce_text(
    model: nn.Module, conditioner: TextConditioner, prompts: PromptSet, lamb: float = 0.5, preserve_scale: float = 1.0
) -> WeightDelta:
    if lamb <= 0:
        raise ValueError(f"UCE regulariser λ must be > 0, got {lamb}")
    norm = model.get_submodule("cap_embedder.0")
    linear = cast(nn.Linear, model.get_submodule(UCE_TARGET))
    weight = linear.weight.detach().double()
    width = weight.shape[1]
    keys = torch.zeros(width, width, dtype=torch.float64)
    values = torch.zeros_like(weight)
    for index, prompt in enumerate(prompts.erase):
        anchor = prompts.anchors[index % len(prompts.anchors)]
        features, lengths = conditioner.encode([prompt, anchor, ""])
        normed = norm(features.to(linear.weight.dtype)).double()
        positions = sorted(
            {p for word in prompts.keywords_in(prompt) for p in conditioner.keyword_positions(prompt, word)}
        )
        for position in positions:
            concept = normed[0, position]
            guide = normed[1, position] if position < int(lengths[1]) else normed[2, 0]
            keys += torch.outer(concept, concept)
            values += torch.outer(weight @ guide, concept)
        for position in range(int(lengths[1])):
            token = normed[1, position]
            keys += preserve_scale * torch.outer(token, token)
            values += preserve_scale * torch.outer(weight @ token, token)
    keys += lamb * torch.eye(width, dtype=torch.float64)
    values += lamb * weight
    edited = torch.linalg.solve(keys, values.t()).t()  # values · keys⁻¹ (keys is symmetric)
    return WeightDelta(UCE_TARGET, (edited - weight).float())


def keyword_suppression(conditioner: TextConditioner, prompts: list[str], keywords: list[str]) -> torch.Tensor:
    """(B, L) bool: the keyword tokens of each prompt (for `ZImageDiT.forward(suppress_keys=...)`)."""
    positions = [
        sorted({p for word in keywords for p in conditioner.keyword_positions(prompt, word)}) for prompt in prompts
    ]
    width = max([max(found) + 1 for found in positions if found] or [1])
    mask = torch.zeros(len(prompts), width, dtype=torch.bool)
    for row, found in enumerate(positions):
        mask[row, found] = True
    return mask
