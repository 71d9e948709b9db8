"""Issue 6: the perf benchmark (`bench --perf`), its stage clock, the memory model, the fused student forwards,
the keyword attention without stored probabilities, and the full-scale script at a tiny width. Tiny real models."""
from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch._dynamo
from zerase_fixtures import TINY_CONFIG, WordConditioner, fresh_dit

from zerase_core.bench.block_bytes import measure_block_bytes
from zerase_core.bench.meters import StageClock
from zerase_core.bench.perf import add_perf_arguments, run_perf
from zerase_core.bench.perf_steps import STAGES, BenchTrainer
from zerase_core.cli import main as cli_main
from zerase_core.common.prompts import PromptSet
from zerase_core.engine import memory_model
from zerase_core.engine.erase_config import EraseConfig
from zerase_core.engine.trainer import EraseTrainer
from zerase_core.model.config import DiTConfig
from zerase_core.model.keyword_attention import keyword_attention

ROOT = Path(__file__).resolve().parent.parent
TRAINER_DIT = dataclasses.replace(TINY_CONFIG, n_layers=2, n_refiner_layers=0)
PROMPTS = PromptSet(erase=("a red circle on white background", "a red star on black background"), keywords=("red",),
                    anchors=("a circle on white background", "a star on black background"))
TINY_FLAGS = ["--dim", "256", "--heads", "2", "--layers", "1", "--refiners", "0", "--size", "32", "--batch", "1",
              "--pool-prompts", "1", "--sample-steps", "2", "--cfg", "1", "--steps", "1", "--warmup", "0",
              "--random-weights"]
KEYS = ("zerase_step_s", "plain_lora_step_s", "naive_esd_step_s", "teacher_forward_s", "peak_rss_gb")


def perf_args(*flags: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_perf_arguments(parser)
    return parser.parse_args(list(flags))


def small_trainer(conditioner, **overrides) -> EraseTrainer:
    settings = dict(steps=4, pool_prompts=2, sample_steps=2, batch_size=2, sample_cfg=1.0, latent_size=(4, 4), rank=2,
                    stationarity_every=0, shuffle_probability=0.0)
    settings.update(overrides)
    return EraseTrainer(fresh_dit(TRAINER_DIT), conditioner, PROMPTS, EraseConfig(**settings))


# -- the benchmark -------------------------------------------------------------------------------------------------

def test_bench_perf_measures_every_variant_and_writes_the_json_contract(tmp_path, capsys):
    out = tmp_path / "perf.json"
    assert cli_main(["bench", "--perf", *TINY_FLAGS, "--json", str(out)]) == 0
    results = json.loads(out.read_text())
    assert all(results[key] > 0 for key in KEYS)
    assert "peak_cuda_gb" not in results                         # CPU run
    for name, stages in results["stages_s"].items():
        key = "teacher_forward_s" if name == "teacher_forward" else f"{name}_step_s"
        assert set(stages) == set(STAGES)
        assert sum(stages.values()) == pytest.approx(results[key], rel=1e-6)   # the stages cover the whole step
    zerase, uncached = results["stages_s"]["zerase"], results["stages_s"]["zerase_uncached"]
    assert zerase["sampling"] == 0 and uncached["sampling"] > 0 and uncached["teacher"] > zerase["teacher"]
    assert zerase["probe"] > 0 and results["stages_s"]["plain_lora"]["probe"] == 0
    for key in ("ratio_zerase_vs_plain_lora", "ratio_gate_text_vs_all_zerase", "ratio_gate_text_vs_all_esd",
                "speedup_cached_per_step",
                "speedup_cached_run", "teacher_cache_build_s"):
        assert math.isfinite(results[key])
    table = capsys.readouterr().out
    assert "zerase_uncached" in table and "memory model" in table


@pytest.mark.parametrize("flags, message", [
    (["--device", "cuda"], "CUDA is not available"),
    (["--size", "40"], "multiple of 16"),
    (["--only", "zerase,bogus"], "unknown variants"),
    (["--dim", "300", "--heads", "7"], "must split into"),
    (["--batch", "0"], "must be ≥ 1"),
])
def test_perf_rejects_bad_flags_with_a_clear_message(flags, message):
    if flags[:2] == ["--device", "cuda"] and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(ValueError, match=message):
        run_perf(perf_args(*TINY_FLAGS, *flags))


def test_stage_clock_gives_nested_time_to_the_inner_stage_and_everything_in_the_probe_to_the_probe():
    clock = StageClock()
    clock.begin_step()
    with clock.stage("student_forward"), clock.stage("teacher"):
        pass
    with clock.stage("probe"), clock.stage("teacher"), clock.stage("student_forward"):
        sum(range(10_000))
    clock.enter("backward")
    clock.leave("backward")
    totals = clock.end_step()
    assert set(totals) == {"other", "student_forward", "teacher", "probe", "backward"}
    assert totals["probe"] > 0
    with clock.stage("teacher"):           # outside a step nothing is recorded
        pass
    assert clock.totals == totals


@pytest.mark.parametrize("anchor_trajectories", [False, True])
def test_uncached_loop_samples_fresh_states_each_step_and_leaves_the_pool_unchanged(word_conditioner,
                                                                                    anchor_trajectories):
    settings = dict(steps=4, pool_prompts=2, sample_steps=3, batch_size=2, sample_cfg=2.0, latent_size=(4, 4), rank=2,
                    stationarity_every=0, cache=False, anchor_trajectories=anchor_trajectories)
    trainer = BenchTrainer(fresh_dit(TRAINER_DIT), word_conditioner, PROMPTS, EraseConfig(**settings),
                           clock=StageClock(), fresh_samples=True)
    states = trainer.pool.states.clone()
    anchor_states = None if trainer.pool.anchor_states is None else trainer.pool.anchor_states.clone()
    assert (anchor_states is not None) == anchor_trajectories
    fresh = trainer._fresh_states([(0, 2), (1, 0)], [trainer.pool.prompts[0], trainer.pool.prompts[1]])
    assert fresh.shape == (2, *states.shape[2:]) and torch.isfinite(fresh).all()
    assert not torch.equal(fresh[0], states[0, 2])                           # new noise, not the pooled trajectory
    trainer.train_step()
    assert torch.equal(trainer.pool.states, states)
    if anchor_trajectories:
        assert torch.equal(trainer.pool.anchor_states, anchor_states)
    assert trainer.step_stages["sampling"] > 0 and trainer.pool.teacher == {}


# -- trainer and model changes made for performance ------------------------------------------------------------------

@pytest.mark.parametrize("method", ["zerase", "eraseanything"])
def test_fused_student_forwards_give_the_losses_and_gradients_of_separate_forwards(method):
    # float64: the two orders of summation are equal in exact arithmetic; in float32 Adam's normalisation and λ's
    # division by α amplify rounding (1e-5 on some machines), in float64 a real difference still shows.
    runs = []
    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        for fused in (False, True):
            conditioner = WordConditioner(["a", "red", "blue", "green", "circle", "square", "star", "on", "white", "black", "background", "with"])
            trainer = EraseTrainer(fresh_dit(TRAINER_DIT).double(), conditioner, PROMPTS,
                                   EraseConfig(steps=4, pool_prompts=2, sample_steps=2, batch_size=2, sample_cfg=1.0,
                                               latent_size=(4, 4), rank=2, stationarity_every=0,
                                               shuffle_probability=0.0, method=method))
            trainer.fuse_forwards = fused
            history = [trainer.train_step() for _ in range(3)]
            runs.append((history, trainer.adapters.export_tensors()))
    finally:
        torch.set_default_dtype(default)
    (separate, separate_tensors), (fused, fused_tensors) = runs
    for a, b in zip(separate, fused):
        assert a.keys() == b.keys()
        for key in a:
            if key != "g_tilde":                            # g̃ divides a tiny ΔL_pr by α = 1e-3
                assert b[key] == pytest.approx(a[key], rel=1e-4, abs=1e-7), key
    for key in separate_tensors:
        torch.testing.assert_close(fused_tensors[key], separate_tensors[key], rtol=1e-9, atol=1e-12)


def test_a_device_denoiser_trains_what_the_model_itself_trains(word_conditioner):
    """Through `DeviceDenoiser` (what sampling on a GPU uses) the trainer takes the whole-forward path, with no kept
    refiner outputs or probe prefix; on the CPU it must give the steps of the model used directly."""
    from zerase_core.real.devices import DeviceDenoiser
    direct = small_trainer(word_conditioner)
    model = fresh_dit(TRAINER_DIT)
    through = EraseTrainer(model, word_conditioner, PROMPTS, direct.config,
                           denoise=DeviceDenoiser(model, torch.device("cpu")))
    assert direct.pool.segments is not None and through.pool.segments is None
    for _ in range(3):
        ours, theirs = through.train_step(), direct.train_step()
        for key in theirs:
            if key != "g_tilde":
                assert ours[key] == pytest.approx(theirs[key], rel=1e-4, abs=1e-7), key
    assert through._probe_prefix is None and direct._probe_prefix is not None


def test_a_denoiser_that_does_not_stack_rows_gets_its_student_forwards_apart(word_conditioner):
    """`stacks_rows = False` on the denoiser (ComfyUI's NextDiTDenoiser), without checkpointing too: the erase, ∅
    and anchor rows in three calls instead of one, the probe's ∅ and anchor rows in two instead of one."""
    from zerase_core.real.devices import DeviceDenoiser
    calls = []

    class Counting(DeviceDenoiser):
        def __call__(self, *args, **kwargs):
            calls.append(args[0].shape[0])
            return super().__call__(*args, **kwargs)

    class Apart(Counting):
        stacks_rows = False
    model, config, counts = fresh_dit(TRAINER_DIT), small_trainer(word_conditioner).config, []
    for denoiser in (Counting, Apart):
        trainer = EraseTrainer(model, word_conditioner, PROMPTS, config, denoise=denoiser(model, torch.device("cpu")))
        trainer.train_step()  # the first step builds the pool and probes the λ baseline
        calls.clear(), trainer.train_step()
        counts.append(len(calls))
    assert counts[1] == counts[0] + 3


def test_forwards_stay_separate_under_gradient_checkpointing(word_conditioner):
    trainer = small_trainer(word_conditioner)
    assert trainer._fused()
    trainer.model.gradient_checkpointing = True
    assert not trainer._fused()
    trainer.fuse_forwards = True
    assert trainer._fused()


def explicit_keyword_attention(query, key, key_mask, image_start, image_tokens, columns):
    logits = torch.einsum("bhqd,bhkd->bhqk", query[:, :, image_start:image_start + image_tokens].float(),
                          key.float()) * query.shape[-1] ** -0.5
    if key_mask is not None:
        logits = logits.masked_fill(~key_mask[:, None, None, :], float("-inf"))
    probabilities = logits.softmax(dim=-1)
    return torch.gather(probabilities, -1, columns[:, None, None, :].expand(-1, *probabilities.shape[1:3], -1))


@pytest.mark.parametrize("head_dim, keywords, dtype", [(16, 3, torch.float32), (4, 9, torch.float32),
                                                       (16, 2, torch.bfloat16)])
def test_keyword_attention_equals_the_explicit_softmax_columns_with_gradients(head_dim, keywords, dtype):
    generator = torch.Generator().manual_seed(0)
    query = torch.randn(2, 3, 40, head_dim, generator=generator).to(dtype).requires_grad_(True)
    key = torch.randn(2, 3, 40, head_dim, generator=generator).to(dtype).requires_grad_(True)
    mask = torch.ones(2, 40, dtype=torch.bool)
    mask[1, 20:24] = False
    columns = torch.randint(0, 20, (2, keywords), generator=generator)
    ours = keyword_attention(query, key, mask, 24, 16, columns)
    expected = explicit_keyword_attention(query, key, mask, 24, 16, columns)
    assert ours.dtype == torch.float32 and ours.shape == (2, 3, 16, keywords)
    torch.testing.assert_close(ours, expected, rtol=1e-5, atol=1e-6)
    if dtype == torch.float32:
        ours_grad = torch.autograd.grad(ours.square().sum(), (query, key))
        expected_grad = torch.autograd.grad(expected.square().sum(), (query, key))
        for a, b in zip(ours_grad, expected_grad):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


# -- memory model ---------------------------------------------------------------------------------------------------

def test_turbo_parameter_count_and_weights():
    assert memory_model.parameter_count(DiTConfig.turbo()) == 6_154_908_736
    problem = memory_model.Problem(config=DiTConfig.turbo(), image_size=512, caption_tokens=64)
    predicted = memory_model.predict(problem)
    assert predicted["weights"] == pytest.approx(6_154_908_736 * 2 / 2**30)
    assert predicted["tokens"] == 64 + 1024


@pytest.mark.parametrize("dtype, capture", [(torch.bfloat16, False), (torch.bfloat16, True), (torch.float32, False)])
def test_saved_bytes_formula_matches_the_measured_graph(dtype, capture):
    config = DiTConfig(dim=384, n_layers=1, n_refiner_layers=0, n_heads=6, cap_feat_dim=32, axes_dims=(16, 24, 24),
                       pad_tokens_multiple=32)
    measured = measure_block_bytes(config, dtype, caption_tokens=20, image_size=96, capture=capture)
    tokens = memory_model.tokens(config, 96, 20)
    formula = memory_model.block_saved_bytes(config, tokens["caption"], tokens["image"],
                                             2 if dtype == torch.bfloat16 else 4, capture)
    assert formula == pytest.approx(measured, rel=0.05)


def test_prediction_grows_with_batch_resolution_and_rank_and_checkpointing_cuts_activations():
    base = memory_model.Problem(config=DiTConfig.turbo(), image_size=512, caption_tokens=64)
    peak = memory_model.predict(base)["step_peak_gb"]
    for change in (dict(batch=4), dict(image_size=1024), dict(rank=64)):
        assert memory_model.predict(dataclasses.replace(base, **change))["step_peak_gb"] > peak
    full = memory_model.predict(dataclasses.replace(base, checkpointing=False))
    assert full["activations"] > 10 * memory_model.predict(base)["activations"]


# -- scripts --------------------------------------------------------------------------------------------------------

def test_fullscale_script_runs_one_step_at_a_tiny_width(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("fullscale_step", ROOT / "scripts" / "fullscale_step.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    out = tmp_path / "fullscale.json"
    results = script.run(script.parse(["--dim", "256", "--layers", "1", "--refiners", "0", "--size", "32",
                                       "--caption-tokens", "8", "--json", str(out)]))
    assert json.loads(out.read_text())["step_s"] == results["step_s"] > 0
    assert results["parameters"] == memory_model.parameter_count(DiTConfig(**{**results["dit"]}))
    assert "peak RSS" in capsys.readouterr().out


@pytest.mark.slow
def test_gpu_check_script_runs_its_cpu_path(tmp_path):
    environment = dict(os.environ, ZERASE_GPU_CHECK_DEVICE="cpu", ZERASE_GPU_CHECK_TINY="1", PYTHON=sys.executable,
                       ZERASE_GPU_CHECK_FULL="1", ZERASE_GPU_CHECK_COMFYUI="0")   # the ComfyUI part: tests/comfyui
    done = subprocess.run(["bash", str(ROOT / "scripts" / "gpu_check.sh"), str(tmp_path)], env=environment,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    for name in ("turbo512_b1", "turbo512_b4", "turbo512_b1_nockpt"):
        assert json.loads((tmp_path / f"{name}.json").read_text())["zerase_step_s"] > 0


def test_memory_probe_keeps_the_lifetime_peak_across_resets():
    from zerase_core.bench.meters import MemoryProbe
    probe = MemoryProbe(torch.device("cpu"))
    block = torch.ones(64 * 2**20 // 4)                   # 64 MiB, touched
    during = probe.rss_gb()
    del block
    probe.reset()
    assert probe.lifetime_peak_gb() >= during - 1e-3
    assert probe.peak_rss_gb() <= probe.lifetime_peak_gb()
