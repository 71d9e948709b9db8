"""The adapters' gradients of L = L_er + λ·L_pr: in one backward (`one_backward`), or one student forward at a time
(`StagedBackward`, when `EraseTrainer.backward_per_forward`). On stationarity steps ∇L_er and ∇L_pr are taken apart
and the step returns ‖∇L_er + λ·∇L_pr‖.

L is a sum of one term per student forward: L_er (L_erase + w·L_attn) on the erase prompt, λ·‖v − v_∅‖² on ∅ and
λ·‖v − v_pr‖² on the anchor. Staged, each term's backward runs as soon as its forward has run, so that forward's graph
(the activations its joint blocks keep) is freed before the next forward starts: a step keeps one forward's
activations instead of three (memory_model: `Problem.staged`), and a card that had to recompute most blocks
recomputes fewer. The work is the same: each forward and each backward runs once. The terms are released anchor
first, then ∅, then the erase prompt: the order in which one backward through the sum adds them into each adapter's
gradient (its graph runs the latest forward first), so the gradients, and the trained files, are the same bit for bit
(tests/test_staged.py).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager

import torch


class StagedBackward:
    """Releases one term of L at a time into the adapters' gradients. `apart` (stationarity steps) keeps ∇L_er and
    ∇L_pr apart and combines them in `finish`; otherwise each backward adds into `param.grad`."""

    def __init__(
        self,
        params: Sequence[torch.Tensor],
        lam: Callable[[torch.Tensor], torch.Tensor],
        scale: float,
        stage: Callable[[str], AbstractContextManager],
        apart: bool,
    ):
        self.params, self.lam, self.scale, self.stage, self.apart = params, lam, scale, stage, apart
        self.gradients: dict[bool, list[torch.Tensor | None]] = {}

    def release(self, loss: torch.Tensor, preserve: bool) -> torch.Tensor:
        """Backward of this forward's term of L (λ·`loss` when `preserve`, else `loss`); returns `loss` detached."""
        weighted = loss * self.lam(loss) if preserve and not self.apart else loss
        if self.scale != 1.0:
            weighted = weighted * self.scale
        with self.stage("backward"):
            if not self.apart:
                weighted.backward()
            else:
                grads: list[torch.Tensor | None] = list(torch.autograd.grad(weighted, self.params, allow_unused=True))
                kept = self.gradients.get(preserve)
                if kept is not None:
                    grads = [_sum(before, grad) for before, grad in zip(kept, grads, strict=True)]
                self.gradients[preserve] = grads
        return loss.detach()

    def finish(self, parallel) -> torch.Tensor | None:
        """After the last term: the gradients averaged across processes (DDP did not sync: the backwards ran inside
        its forward); on a stationarity step `param.grad` = ∇L_er + λ·∇L_pr and its norm is returned."""
        if not self.apart:
            parallel.average_gradients(self.params)
            return None
        none = [None] * len(self.params)
        _combine(self.params, self.gradients.get(False, none), self.gradients.get(True, none), self.lam)
        parallel.average_gradients(self.params)
        return gradient_norm(self.params)


def one_backward(params, lam, parallel, erase_total, preserve, total, scale: float, stationarity: bool):
    """Gradients of `total` (L) into the adapters in one backward; on stationarity steps of L_er and L_pr apart,
    returning ‖∇L_er + λ∇L_pr‖ (0-dim float64)."""
    if preserve is None or not stationarity:
        (total * scale if scale != 1.0 else total).backward()
        return None
    grad_erase = torch.autograd.grad(erase_total * scale, params, retain_graph=True, allow_unused=True)
    grad_preserve = torch.autograd.grad(preserve * scale, params, allow_unused=True)
    _combine(params, grad_erase, grad_preserve, lam)
    parallel.average_gradients(params)  # autograd.grad bypasses DDP's hooks
    return gradient_norm(params)


def gradient_norm(params) -> torch.Tensor:
    """‖∇‖ over the adapters' gradients, 0-dim float64 summed in the order of the parameters."""
    squares = torch.zeros((), dtype=torch.float64, device=params[0].device)
    for param in params:
        squares = squares + param.grad.square().sum().to(torch.float64)
    return squares.sqrt()


def _combine(params, erase, preserve, lam) -> None:
    """`param.grad` = ∇L_er + λ·∇L_pr (a gradient that is None counts as zero)."""
    for param, g_er, g_pr in zip(params, erase, preserve, strict=True):
        g_er = torch.zeros_like(param) if g_er is None else g_er
        g_pr = torch.zeros_like(param) if g_pr is None else g_pr
        param.grad = g_er + lam(g_pr) * g_pr


def _sum(before: torch.Tensor | None, grad: torch.Tensor | None) -> torch.Tensor | None:
    if before is None:
        return grad
    return before if grad is None else before + grad
