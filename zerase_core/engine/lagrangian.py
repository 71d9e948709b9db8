"""λ of L = L_er + λ·L_pr: fixed, or Z-Erase's dual step on the measured change of L_pr (Alg. 1, step 4).

λ ← clip(λ − β·g̃, 0, λ_max),  g̃ = (L_pr(θ_before) − L_pr(θ_after))/α + ε, with both L_pr values measured on the
same fixed probe, so g̃ > 0 (λ falls) when the step lowered L_pr by more than −α·ε, and λ rises while steps hurt L_pr.
"""

from __future__ import annotations


class LambdaController:
    def __init__(self, adaptive: bool, initial: float, beta: float, alpha: float, epsilon: float, maximum: float):
        self.adaptive, self.value = adaptive, float(initial)
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

    def update(self, before: float, after: float) -> float:
        """One dual step from the probe's L_pr before and after the optimizer step; returns g̃."""
        g_tilde = (before - after) / self.alpha + self.epsilon
        self.value = float(min(self.maximum, max(0.0, self.value - self.beta * g_tilde)))
        return g_tilde
