"""The engine's parts on their own: the method registry (a new method is one registered class), the λ controller."""
from __future__ import annotations

import pytest
import torch
from zerase_fixtures import WordConditioner, randomized_dit

from zerase_core.common.prompts import PromptSet
from zerase_core.engine.erase_config import METHODS, EraseConfig
from zerase_core.engine.lagrangian import LambdaController
from zerase_core.engine.methods import Method, method, method_names, register
from zerase_core.engine.methods import base as registry
from zerase_core.engine.trainer import EraseTrainer

WORDS = ["a", "red", "blue", "star", "circle", "on", "white", "black"]
SMALL = {"steps": 2, "batch_size": 2, "pool_prompts": 2, "sample_steps": 2, "latent_size": (4, 4), "sample_cfg": 1.0,
         "stationarity_every": 0, "probe_size": 1}
PROMPTS = PromptSet(erase=("a red star on white",), keywords=("star",), anchors=("a red circle on white",),
                    targets=("a red circle on white",))


def test_every_method_is_registered_by_name_with_its_properties():
    assert method_names(trainable=True) == METHODS == ("zerase", "esd", "ac", "eraseanything", "naive-esd")
    assert method_names(trainable=False) == ("uce-text",)
    assert method("zerase").constrained and method("zerase").shuffles and method("zerase").attention
    assert not method("esd").constrained and not method("esd").shuffles
    assert method("naive-esd").gate == "all" and EraseConfig(method="naive-esd").gate == "all"
    assert EraseConfig(method="zerase").erase_target_value == "anchor"
    assert EraseConfig(method="esd").erase_target_value == "empty"
    with pytest.raises(ValueError, match="unknown method 'nope'"):
        method("nope")
    with pytest.raises(ValueError, match="already registered"):
        register(type("Again", (Method,), {"name": "esd"}))


@pytest.fixture
def preserve_only():
    """A method defined in one class and registered, as a new file in engine/methods would be."""
    @register
    class PreserveOnly(Method):
        name = "preserve-only"

        def losses(self, trainer, picks, teacher):
            parts = {"preserve": trainer.preservation_loss(picks, teacher), "erase": torch.zeros(())}
            return parts["preserve"], None, parts
    yield PreserveOnly
    del registry._REGISTRY["preserve-only"]


def test_a_new_registered_method_trains_without_touching_the_trainer(preserve_only):
    model = randomized_dit()
    before = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    trainer = EraseTrainer(model, WordConditioner(WORDS), PROMPTS, EraseConfig(method="preserve-only", **SMALL))
    history = trainer.run()
    trainer.adapters.detach()
    assert len(history) == 2 and "loss_preserve" in history[-1].metrics and "loss_attention" not in history[-1].metrics
    assert trainer.lam == 0.0 and "g_tilde" not in history[-1].metrics      # not constrained: no λ controller
    assert all(torch.equal(before[name], tensor) for name, tensor in model.state_dict().items())


def test_the_lambda_controller_takes_the_dual_step_and_clips():
    controller = LambdaController(adaptive=True, initial=0.5, beta=2.0, alpha=0.1, epsilon=0.01, maximum=3.0)
    g_tilde = controller.update(before=1.0, after=1.02)         # the step hurt L_pr: g̃ < 0, λ rises
    assert g_tilde == pytest.approx(-0.19) and controller.value == pytest.approx(0.88)
    controller.update(before=1.0, after=0.0)                    # a large improvement: λ falls, never below 0
    assert controller.value == 0.0
    controller.update(before=0.0, after=10.0)
    assert controller.value == 3.0                              # and never above λ_max


def test_the_controller_of_a_config():
    fixed = LambdaController.from_config(EraseConfig(lambda_mode="fixed", fixed_lambda=2.5), constrained=True)
    assert not fixed.adaptive and fixed.value == 2.5
    adaptive = LambdaController.from_config(EraseConfig(beta=0.3, epsilon=0.002), constrained=True)
    assert adaptive.adaptive and adaptive.value == 0.0 and (adaptive.beta, adaptive.epsilon) == (0.3, 0.002)
    assert adaptive.alpha == EraseConfig().learning_rate
    assert not LambdaController.from_config(EraseConfig(method="esd"), constrained=False).adaptive
