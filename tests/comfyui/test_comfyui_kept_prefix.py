"""The λ probe's prefix kept on ComfyUI's NextDiT (issue 16): the embeddings and refiners of the fixed probe rows
run once per training run, and the erasure is the same bit for bit as when they run at every probe."""

from __future__ import annotations

import sys
from contextlib import contextmanager

import pytest
import torch
from test_comfyui_real_format import CAPTION_WIDTH, tiny_qwen3_clip
from test_comfyui_vram import TRAIN, _load, _train, files  # noqa: F401  (fixture)

pytestmark = pytest.mark.comfyui


@contextmanager
def _keep_nothing(self):
    yield


def _count_refiner_runs(network):
    runs = []
    hook = network.noise_refiner[0].register_forward_pre_hook(lambda *_: runs.append(torch.is_grad_enabled()))
    return runs, hook


def test_the_probe_prefix_is_computed_once_and_the_erasure_is_unchanged(pack, files, monkeypatch):  # noqa: F811
    kept = sys.modules[pack["bridge"].__name__ + ".kept_prefix"]
    clip = tiny_qwen3_clip()
    results, no_grad_runs = {}, {}
    for label in ("kept", "every probe"):
        if label == "every probe":  # the forward wrapper that keeps nothing: each probe runs the refiners again
            monkeypatch.setattr(kept.KeptPrefix, "around_forward", _keep_nothing)
        model = _load(pack, "tiny-bf16.safetensors")
        runs, hook = _count_refiner_runs(model.model.diffusion_model)
        try:
            erasure = _train(pack, model, clip, steps=4, save_name=f"kept-{label.replace(' ', '-')}").result[1]
        finally:
            hook.remove()
        results[label], no_grad_runs[label] = erasure.tensors, runs.count(False)
    assert results["kept"].keys() == results["every probe"].keys()
    for key, value in results["kept"].items():
        assert torch.equal(value, results["every probe"][key]), key
    # probe_size 2 rows × (∅, anchor) in two caption-length groups: two refiner passes when kept, against two per
    # probe (5 probes in 4 steps: the first step measures before and after); the pool build runs without grad too
    assert no_grad_runs["every probe"] - no_grad_runs["kept"] == 2 * (5 - 1)


def test_nothing_is_kept_with_gradients_or_outside_repeating(pack, files):  # noqa: F811
    bridge = pack["bridge"]
    model = _load(pack, "tiny-bf16.safetensors")
    memory = bridge.MemoryPlan(0, False, None, 0.0)
    generator = torch.Generator().manual_seed(0)
    x, context = torch.randn(1, 16, 4, 4, generator=generator), torch.randn(1, 7, CAPTION_WIDTH, generator=generator)
    with bridge.training(model, memory) as training:
        denoiser = training.denoiser
        arguments = (x, torch.tensor([0.5]), context, torch.tensor([7]))
        with torch.no_grad():
            first = denoiser(*arguments)
            assert denoiser.kept_prefix.computed == 0  # not repeating: nothing kept
            with denoiser.repeating("probe"):
                kept = denoiser(*arguments)
            with denoiser.repeating("probe"):
                again = denoiser(*arguments)
        assert denoiser.kept_prefix.computed == 1
        with denoiser.repeating("probe"):  # with gradients: computed as usual, nothing taken from what was kept
            grad = denoiser(*arguments)
        assert denoiser.kept_prefix.computed == 1
    assert torch.equal(first, kept) and torch.equal(kept, again) and torch.equal(kept, grad.detach())
    assert "patchify_and_embed" not in training.network.__dict__
