"""Issue 16, item 2: how many joint blocks are checkpointed is a policy (auto / all / none / a count); "auto" takes
the fewest whose predicted peak (engine/memory_model.py) fits the memory budget. Partial checkpointing gives the
gradients of the whole model, and the real-model CLI path sets it from the device's memory."""
from __future__ import annotations

import dataclasses

import pytest
import torch
from zerase_fixtures import TINY_CONFIG, fresh_dit

from zerase_core.engine import memory_model, memory_policy
from zerase_core.engine.erase_config import EraseConfig
from zerase_core.model.config import DiTConfig
from zerase_core.real.devices import set_checkpointing

TURBO = DiTConfig.turbo()


def turbo_problem(size: int = 512) -> memory_model.Problem:
    return memory_model.Problem(config=TURBO, image_size=size, caption_tokens=64, pool=(2, 9), build_batch=2,
                                store_on_device=True)


def test_auto_checkpoints_the_fewest_blocks_that_fit():
    problem = turbo_problem()
    chosen = {gib: memory_policy.checkpoint_blocks_within(problem, gib * memory_model.GB) for gib in (12, 16, 24, 80)}
    assert chosen[80] == 0                                       # an H100 holds every block's activations
    assert chosen[12] == TURBO.n_layers                          # nothing fits: all blocks, the least memory
    assert TURBO.n_layers >= chosen[16] > chosen[24] > 0         # fewer blocks with more memory
    for gib, blocks in chosen.items():
        peak = memory_model.predict(dataclasses.replace(problem, checkpointed_layers=blocks,
                                                        checkpointing=blocks > 0))["peak_gb"]
        if blocks < TURBO.n_layers:
            assert peak <= gib
        if blocks > 0:                                           # one block fewer would not fit
            fewer = dataclasses.replace(problem, checkpointed_layers=blocks - 1, checkpointing=blocks > 1)
            assert memory_model.predict(fewer)["peak_gb"] > gib


def test_zerasetrain_plans_on_its_own_problem():
    """ZEraseTrain's plan (vram.plan, and the comfyui rows of `bench --flops`): the fewest blocks that fit its own
    problem (pool and caches in CPU memory), so no more than the core's at the same budget, and those fit."""
    for gib in (16, 24, 80):
        ours = memory_policy.comfy_checkpoint_blocks(TURBO, 512, 2, 1, 8, 64, gib * memory_model.GB)
        core = memory_policy.checkpoint_blocks_within(turbo_problem(), gib * memory_model.GB)
        assert ours <= core
        problem = memory_model.comfy_problem(TURBO, 512, 2, ours > 0, 1, 8, 64, 1, checkpointed_layers=ours)
        assert memory_model.predict(problem)["peak_gb"] <= gib
        if ours:
            fewer = dataclasses.replace(problem, checkpointed_layers=ours - 1, checkpointing=ours > 1)
            assert memory_model.predict(fewer)["peak_gb"] > gib


def test_partial_checkpointing_sits_between_none_and_all():
    problem = turbo_problem()
    peaks = [memory_model.predict(dataclasses.replace(problem, checkpointed_layers=blocks))["step_peak_gb"]
             for blocks in (TURBO.n_layers, 20, 10, 1)]
    assert peaks == sorted(peaks)
    every = memory_model.predict(problem)
    assert memory_model.predict(dataclasses.replace(problem, checkpointed_layers=None)) == every
    assert dataclasses.replace(problem, checkpointing=False).blocks == 0


def test_policy_choices():
    problem = turbo_problem()
    assert memory_policy.checkpoint_blocks("all", problem, None) == TURBO.n_layers
    assert memory_policy.checkpoint_blocks("none", problem, 1.0) == 0
    assert memory_policy.checkpoint_blocks("7", problem, None) == 7
    assert memory_policy.checkpoint_blocks("auto", problem, None) == TURBO.n_layers   # budget unknown
    assert memory_policy.checkpoint_blocks("auto", problem, 80 * memory_model.GB) == 0
    with pytest.raises(ValueError, match="auto, all, none"):
        memory_policy.checkpoint_blocks("some", problem, None)


@pytest.mark.parametrize("blocks", [0, 1])
def test_partially_checkpointed_model_gives_the_same_gradients(blocks):
    from zerase_core.adapters.gated import AdapterConfig, AdapterSet
    outputs = []
    for checkpointed in (None, blocks):
        model = fresh_dit(TINY_CONFIG)
        adapters = AdapterSet(model, AdapterConfig(rank=2), torch.Generator().manual_seed(0))
        adapters.attach(model)
        with torch.no_grad():
            for parameter in adapters.parameters():
                parameter.normal_(0, 0.1, generator=torch.Generator().manual_seed(parameter.numel()))
        model.gradient_checkpointing, model.checkpointed_layers = checkpointed is not None, checkpointed
        x = torch.randn(2, TINY_CONFIG.in_channels, 8, 8, generator=torch.Generator().manual_seed(1))
        context = torch.randn(2, 8, TINY_CONFIG.cap_feat_dim, generator=torch.Generator().manual_seed(2))
        out = model(x, torch.tensor([0.3, 0.7]), context, None)
        out.square().mean().backward()
        outputs.append((out.detach(), [parameter.grad.clone() for parameter in adapters.parameters()]))
    torch.testing.assert_close(outputs[0][0], outputs[1][0], rtol=0, atol=0)
    for first, second in zip(outputs[0][1], outputs[1][1], strict=True):
        torch.testing.assert_close(first, second, rtol=1e-6, atol=1e-7)


def test_real_path_sets_the_blocks_from_the_policy():
    dit = fresh_dit(TINY_CONFIG)
    config = EraseConfig(latent_size=(8, 8), pool_prompts=2, sample_steps=2)
    cpu = torch.device("cpu")
    assert set_checkpointing(dit, config, "all", cpu)[0] == TINY_CONFIG.n_layers and dit.gradient_checkpointing
    blocks, words = set_checkpointing(dit, config, "none", cpu)
    assert blocks == 0 and not dit.gradient_checkpointing and "0 of" in words
    assert set_checkpointing(dit, config, "1", cpu)[0] == 1 and dit.checkpointed_layers == 1
    blocks, words = set_checkpointing(dit, config, "auto", cpu)   # a tiny model fits any machine's memory
    assert blocks == 0 and "within" in words
