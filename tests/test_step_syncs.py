"""A training step reads nothing back to the host (issue 16, item 3): on a GPU every `.item()`, `float(tensor)` or
`bool(tensor)` inside a step drains the queue. Counted on the CPU by patching the conversions during `train_step()`,
between progress points; λ's dual step stays the same float64 arithmetic, and the model's attention gets a mask only
when a batch has padding (flash attention needs none)."""

from __future__ import annotations

import contextlib
import dataclasses

import pytest
import torch
import torch.nn.functional as F
from test_trainer import PROMPTS, make_config, make_trainer
from zerase_fixtures import TINY_CONFIG, fresh_dit

from zerase_core.engine.lagrangian import LambdaController
from zerase_core.engine.trainer import EraseTrainer
from zerase_core.model.keyword_attention import AttentionCapture

READS = ("item", "tolist", "__float__", "__bool__", "__int__", "__index__")


@contextlib.contextmanager
def counted_reads(trainer: EraseTrainer):
    """Count host reads of computed tensors (floating point or bool: losses, λ, flags) by name while the block
    runs. Integer tensors are left out: the token counts and keyword positions are built on the host from the
    prompts and read there (`TokenLayout` needs Python ints). Not counted inside `optimizer.step()` either: CPU
    AdamW keeps its step counts on the host by design (fused AdamW, used on CUDA, keeps them on the device)."""
    counts: dict[str, int] = {}
    paused = [False]
    originals = {name: getattr(torch.Tensor, name) for name in READS}

    def counting(name):
        def read(self, *args, **kwargs):
            if not paused[0] and (self.is_floating_point() or self.dtype == torch.bool):
                counts[name] = counts.get(name, 0) + 1
            return originals[name](self, *args, **kwargs)

        return read

    step = trainer.optimizer.step

    def optimizer_step(*args, **kwargs):
        paused[0] = True
        try:
            return step(*args, **kwargs)
        finally:
            paused[0] = False

    for name in READS:
        setattr(torch.Tensor, name, counting(name))
    trainer.optimizer.step = optimizer_step  # type: ignore[method-assign]
    try:
        yield counts
    finally:
        for name, original in originals.items():
            setattr(torch.Tensor, name, original)
        del trainer.optimizer.step


@pytest.mark.parametrize(
    "method, overrides",
    [
        ("zerase", {}),  # the default step: probe, λ, L_attn, stationarity every 2nd step
        ("zerase", {"cache": False, "lambda_mode": "fixed"}),  # the full forwards (no kept refiner segments)
        ("eraseanything", {}),
        ("ac", {}),
    ],
)
def test_a_training_step_reads_nothing_back_to_the_host(method, overrides, word_conditioner):
    dit = fresh_dit(dataclasses.replace(TINY_CONFIG, n_layers=2, n_refiner_layers=1))
    trainer = EraseTrainer(dit, word_conditioner, PROMPTS, make_config(method=method, steps=4, **overrides))
    trainer.check_every = 4
    with counted_reads(trainer) as counts:
        for _ in range(4):  # the first step measures the probe before the step too
            trainer.train_step()
    assert counts == {}, f"host reads inside train_step: {counts}"
    trainer.check_finite()  # the progress point reads the four steps at once
    assert [record.step for record in trainer.history] == [1, 2, 3, 4]
    assert all(type(record.metrics) is dict for record in trainer.history)


def test_the_run_reads_each_step_at_its_progress_point(word_conditioner):
    trainer = make_trainer(word_conditioner, method="zerase", steps=3)
    seen = []
    trainer.run(lambda step, total, metrics: seen.append((step, type(metrics), len(trainer._pending))))
    assert seen == [(1, dict, 0), (2, dict, 0), (3, dict, 0)]  # the callback gets checked, plain numbers


@pytest.mark.parametrize("before, after", [(1.0, 1.02), (0.3, 0.1), (0.0, 10.0), (float("nan"), 0.2)])
def test_the_dual_step_on_the_device_is_the_float_formula(before, after):
    controller = LambdaController(adaptive=True, initial=0.5, beta=2.0, alpha=0.1, epsilon=0.01, maximum=3.0)
    as_float32 = (torch.tensor(before), torch.tensor(after))  # the probe's losses are float32 tensors
    g_tilde = controller.update(*as_float32)
    before, after = (float(value) for value in as_float32)
    expected = (before - after) / 0.1 + 0.01
    assert float(g_tilde) == expected or (expected != expected and g_tilde.isnan())
    assert controller.value == float(min(3.0, max(0.0, 0.5 - 2.0 * expected)))  # Python's clip, NaN -> 0.0
    assert controller.tensor.dtype == torch.float64


def test_attention_gets_a_mask_only_with_batch_padding(monkeypatch, word_conditioner):
    """Without batch padding every SDPA of the blocks runs unmasked (flash-eligible); the keyword capture runs its
    own SDPA beside the block's, which stays unmasked."""
    masks: list[bool] = []
    sdpa = F.scaled_dot_product_attention

    def recording(query, key, value, attn_mask=None, **kwargs):
        masks.append(attn_mask is not None)
        return sdpa(query, key, value, attn_mask=attn_mask, **kwargs)

    monkeypatch.setattr(F, "scaled_dot_product_attention", recording)
    dit = fresh_dit(dataclasses.replace(TINY_CONFIG, n_layers=2, n_refiner_layers=1))
    latents = torch.randn(2, TINY_CONFIG.in_channels, 4, 4)
    sigma = torch.tensor([0.5, 0.7])
    same, lengths = word_conditioner.encode(["a red star", "a blue star"])
    with torch.no_grad():
        dit(latents, sigma, same, lengths)
    assert masks and not any(masks)
    masks.clear()
    mixed, lengths = word_conditioner.encode(["a", "a red star on black background " * 6])
    with torch.no_grad():
        dit(latents, sigma, mixed, lengths)
    assert any(masks)  # the filler of the shorter caption is masked
    masks.clear()
    same, lengths = word_conditioner.encode(["a red star", "a blue star"])
    capture = AttentionCapture(columns=torch.tensor([[1], [1]]))
    with torch.no_grad():
        dit(latents, sigma, same, lengths, capture)
    assert len(capture.maps) == 2 and not any(masks)


def test_the_optimizer_is_fused_on_cuda_only(word_conditioner):
    trainer = make_trainer(word_conditioner, method="esd", steps=2)
    trainer.train_step()
    assert not trainer.optimizer.defaults.get("fused")  # CPU: the optimizer as built, results unchanged
    if not torch.cuda.is_available():
        return
    trainer.model.cuda()
    trainer.adapters.cuda()
    trainer.pool.states = trainer.pool.states.cuda()
    trainer.pool.sigmas = trainer.pool.sigmas.cuda()
    trainer._fuse_checked = False
    trainer.train_step()
    assert trainer.optimizer.defaults.get("fused")
