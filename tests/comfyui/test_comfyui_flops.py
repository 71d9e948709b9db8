"""Issue 16, item 1: `bench --flops` counts ZEraseTrain's step on ComfyUI's own NextDiT (comfy_bridge.training, the
trainer's NextDiTDenoiser, adapters through the PatcherInjection), with meta weights. Skipped without ComfyUI."""
from __future__ import annotations

import dataclasses
import sys

import pytest
from comfy_support import REPO_ROOT

from zerase_core.model.config import DiTConfig
from zerase_core.nano.prompts import training_prompt_set

CONFIG = dataclasses.replace(DiTConfig.turbo(), dim=256, n_heads=2, n_layers=2, n_refiner_layers=1)
SETTINGS = dict(batch=1, dtype="bfloat16", checkpointing=True, pool_prompts=1, sample_steps=2, cfg=1.0,
                caption_tokens=16, build_batch=2)


@pytest.fixture(scope="module")
def bridge(comfy):
    sys.path.insert(0, str(REPO_ROOT / "scripts"))
    from comfy_flops import comfy_available
    module, why = comfy_available()
    assert module is not None, why
    return module


def test_comfyui_step_is_counted_on_comfyuis_nextdit(bridge):
    from comfy_flops import comfy_path_counts

    from zerase_core.bench.perf_flops import core_path_counts
    prompts = training_prompt_set(["star"])
    core = core_path_counts(CONFIG, SETTINGS, 64, 8, ("cli",), prompts)
    counted = comfy_path_counts(bridge, CONFIG, SETTINGS, 64, 8, prompts)["comfyui"]
    forward, stages = core["forward"], counted["stages"]
    assert counted["own_forward"] == forward            # NextDiT's frozen forward: the core model's matmuls exactly
    assert sum(stages.values()) == counted["step"]
    assert not counted["fused"]                          # NextDiTDenoiser.stacks_rows is False: forwards apart
    assert stages["student_forward"] > forward          # the erase row with its keyword capture
    assert stages["preserve"] > forward                 # ∅ (its own short caption) and anchor rows
    assert stages["backward"] > forward and stages["probe"] > forward
    assert stages["teacher"] == 0                        # teacher velocities from the cache
    # no kept segments or probe prefix on this path: its probe costs more than the CLI's
    assert stages["probe"] > core["cli"]["stages"]["probe"]


def test_comfyui_count_with_checkpointed_blocks_recomputes_them(bridge):
    """With the joint blocks checkpointed (the GPU memory plan) the backward recomputes each checkpointed block:
    more backward work, the forwards' total unchanged; the student forwards run apart either way."""
    from comfy_flops import comfy_path_counts

    prompts = training_prompt_set(["star"])
    plain = comfy_path_counts(bridge, CONFIG, SETTINGS, 64, 8, prompts)["comfyui"]
    checkpointed = comfy_path_counts(
        bridge, CONFIG, {**SETTINGS, "checkpointed_blocks": CONFIG.n_layers}, 64, 8, prompts
    )["comfyui"]
    assert not plain["fused"] and not checkpointed["fused"]
    assert checkpointed["stages"]["backward"] > plain["stages"]["backward"]
    for stage in ("student_forward", "preserve"):
        assert checkpointed["stages"][stage] == plain["stages"][stage]
    assert checkpointed["stages"]["probe"] == plain["stages"]["probe"]


def test_comfyui_count_keeps_the_weights_meta_through_comfyuis_load(bridge):
    """ComfyUI's load zero-fills meta weights with real tensors (`_zero_init_parameter`); counted at full Turbo size
    that held 12-24 GB and the count was killed for memory. While counting, every weight stays meta."""
    import torch
    from comfy_flops import comfy_patcher, gpu_attention, meta_weights_kept

    from zerase_core.bench.meta_count import MetaTensors
    with MetaTensors(), gpu_attention(), meta_weights_kept():
        patcher = comfy_patcher(bridge, CONFIG, torch.bfloat16)
        with bridge.training(patcher) as context:
            devices = {parameter.device.type for parameter in context.network.parameters()}
    assert devices == {"meta"}
