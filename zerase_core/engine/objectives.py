"""Erasure and preservation objectives (Z-Erase §2.4–§2.5), in ComfyUI's velocity convention v = noise − x0.

ESD target (flow form):  v*(x_t) = v(x_t, ∅) − η·(v(x_t, c_er) − v(x_t, ∅))   (frozen teacher, η = 2)
  anchor-mapped form (`esd_target` with the mapped prompt c_t as reference):
                         v(x_t, c_t) − η_t·(v(x_t, c_er) − v(x_t, c_t))
L_erase    = ‖v_student(x_t, c_er) − v*‖²
L_attn     = attention of image queries to the keyword's key columns (softmax mass, summed over keyword tokens,
             averaged over image queries, heads and joint layers)
L_pr       = ‖v_student(x_t, ∅) − v(x_t, ∅)‖² + ‖v_student(x_t, c_pr) − v(x_t, c_pr)‖²
AC (model-based): ‖v_student(x_t, c_er) − sg(v_student(x_t, c_anchor))‖²
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def esd_target(v_empty: torch.Tensor, v_concept: torch.Tensor, eta: float) -> torch.Tensor:
    return v_empty - eta * (v_concept - v_empty)


def velocity_mse(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return F.mse_loss(prediction.float(), target.float())


def attention_suppression(maps: list[torch.Tensor]) -> torch.Tensor:
    """maps: per joint layer (B, H, N_image, K) keyword attention (masked columns already zero)."""
    if not maps:
        raise ValueError("no attention maps were captured: the model has no joint layers or capture was not passed")
    per_layer = [layer_maps.sum(dim=-1).mean() for layer_maps in maps]
    return torch.stack(per_layer).mean()


def preservation(student_empty, teacher_empty, student_anchor, teacher_anchor) -> torch.Tensor:
    return velocity_mse(student_empty, teacher_empty) + velocity_mse(student_anchor, teacher_anchor)
