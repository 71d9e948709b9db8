"""λ of L = L_er + λ·L_pr: fixed, or Z-Erase's dual step on the measured change of L_pr (Alg. 1, step 4).

λ ← clip(λ − β·g̃, 0, λ_max),  g̃ = (L_pr(θ_before) − L_pr(θ_after))/α + ε, with both L_pr values measured on the
same fixed probe, so g̃ > 0 (λ falls) when the step lowered L_pr by more than −α·ε, and λ rises while steps hurt L_pr.

λ lives in a 0-dim float64 tensor on the training device, so a step never reads it back to the host (a GPU would
wait for its queue to drain). The arithmetic is that of Python floats: the probe's float32 losses are widened to
float64 exactly, g̃ and the clip are float64, and λ enters L = L_er + λ·L_pr rounded to float32 (`factor`), as a
Python float multiplying a float32 tensor is.
"""

from __future__ import annotations

import torch


class LambdaController:
    def __init__(self, adaptive: bool, initial: float, beta: float, alpha: float, epsilon: float, maximum: float):
        self.adaptive = adaptive
        self.tensor = torch.tensor(float(initial), dtype=torch.float64)
        self.beta, self.alpha, self.epsilon, self.maximum = beta, alpha, epsilon, maximum

    @classmethod
    def from_config(cls, config, constrained: bool) -> LambdaController:
        """The controller of an EraseConfig; adaptive only for a constrained method in `lambda_mode` adaptive."""
        initial = config.fixed_lambda if config.lambda_mode == "fixed" else 0.0
        return cls(
            constrained and config.lambda_mode == "adaptive",
            initial,
            config.beta,
            config.alpha_value,
            config.epsilon_value,
            config.lambda_max,
        )

    @property
    def value(self) -> float:
        """λ as a Python float (reads the tensor: a host sync on a GPU; not for use inside a step)."""
        return float(self.tensor)

    @value.setter
    def value(self, value: float) -> None:
        self.tensor = torch.tensor(float(value), dtype=torch.float64, device=self.tensor.device)

    def on(self, device: torch.device) -> torch.Tensor:
        """λ on `device` (moved there once, then kept there)."""
        if self.tensor.device != device:
            self.tensor = self.tensor.to(device)
        return self.tensor

    def factor(self, like: torch.Tensor) -> torch.Tensor:
        """λ as the multiplier of a loss or gradient `like`: on its device, rounded to its dtype."""
        return self.on(like.device).to(like.dtype)

    def update(self, before: torch.Tensor | float, after: torch.Tensor | float) -> torch.Tensor:
        """One dual step from the probe's L_pr before and after the optimizer step; returns g̃ (0-dim float64).
        Computed on λ's device without reading anything back."""
        before = torch.as_tensor(before, dtype=torch.float64, device=self.tensor.device)
        after = torch.as_tensor(after, dtype=torch.float64, device=self.tensor.device)
        g_tilde = (before - after) / self.alpha + self.epsilon
        stepped = self.tensor - self.beta * g_tilde
        # Python's min(λ_max, max(0.0, x)) of before: NaN gives 0.0 (max keeps its first argument), ±inf the bounds
        self.tensor = torch.where(stepped.isnan(), 0.0, stepped.clamp(0.0, self.maximum))
        return g_tilde
