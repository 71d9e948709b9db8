"""Issue 16, item 1: `bench --flops` counts the FLOPs of the real training step on meta tensors. Tiny real models:
the counted forward is the analytic matmul count, the meta count is the count on real tensors, and the step's
stages add up to what the trainer does."""
from __future__ import annotations

import dataclasses
import itertools
import json

import pytest
from zerase_fixtures import TINY_CONFIG, fresh_dit

from zerase_core.bench.meta_count import META, MetaTensors, to_meta
from zerase_core.bench.perf_flops import FLOP_STAGES, FlopTrainer, count_step, reference_forward_flops
from zerase_core.bench.synthetic import SyntheticConditioner
from zerase_core.cli import main as cli_main
from zerase_core.common.prompts import PromptSet
from zerase_core.engine.erase_config import EraseConfig
from zerase_core.model.dit import ZImageDiT

PROMPTS = PromptSet(erase=("a red circle on white background", "a red star on black background"), keywords=("red",),
                    anchors=("a circle on white background", "a star on black background"))
CAPTION = 8          # SyntheticConditioner tokens: one pad multiple of TINY_CONFIG
SIZE = 64            # latent 8×8 -> 16 image tokens (2×2 patches), two pad multiples
TINY_FLAGS = ["--dim", "256", "--heads", "2", "--layers", "2", "--refiners", "1", "--caption-tokens", "16",
              "--pool-prompts", "1", "--sample-steps", "2", "--threads", "1"]


def analytic_forward_flops(config, caption: int, size: int) -> int:
    """2·m·k·n per matmul of one batch-1 forward, attention as 4·L²·dim per block (Q·Kᵀ and P·V)."""
    d, f, adaln = config.dim, config.ffn_hidden, config.adaln_width
    multiple, patch_features = config.pad_tokens_multiple, config.patch_size ** 2 * config.in_channels
    image = (size // 8 // config.patch_size) ** 2
    text_span = -(-caption // multiple) * multiple
    image_span = -(-image // multiple) * multiple

    def block(length: int, modulated: bool) -> int:
        linear = 2 * length * d * (3 * d + d) + 3 * 2 * length * d * f
        return linear + 4 * length * length * d + (2 * adaln * 4 * d if modulated else 0)

    time = 2 * 256 * config.time_width + 2 * config.time_width * 256
    embed = 2 * caption * config.cap_feat_dim * d + 2 * image * patch_features * d
    refiners = config.n_refiner_layers * (block(text_span, False) + block(image_span, True))
    joint = config.n_layers * block(text_span + image_span, True)
    final = 2 * adaln * d + 2 * (text_span + image_span) * d * patch_features
    return time + embed + refiners + joint + final


def erase_settings(**overrides) -> EraseConfig:
    settings = dict(steps=10, batch_size=2, pool_prompts=2, sample_steps=2, sample_cfg=1.0,
                    latent_size=(SIZE // 8, SIZE // 8), rank=2, stationarity_every=0)
    settings.update(overrides)
    return EraseConfig(**settings)


def count(model, erase: EraseConfig, wrapped: bool = False, meta: bool = False) -> dict:
    """`wrapped`: the model behind a denoiser wrapper (as ComfyUI's bridge is), so the trainer runs whole forwards."""
    conditioner = SyntheticConditioner(model.config.cap_feat_dim, CAPTION)

    def make(clock):
        trainer = FlopTrainer(model, conditioner, PROMPTS, erase, clock=clock, in_channels=model.config.in_channels,
                              denoise=(lambda *inputs: model(*inputs)) if wrapped else model)
        if meta:
            to_meta(trainer.adapters)
        return trainer
    counted = count_step(make)
    trainer = counted["trainer"]
    counted["segments"], counted["prefix"] = trainer._keeps_segments(), trainer._probe_prefix is not None
    counted["pool_device"] = trainer.pool.states.device.type
    trainer.adapters.detach()
    return counted


def meta_dit(config=TINY_CONFIG) -> ZImageDiT:
    return ZImageDiT(config, device=META).eval().requires_grad_(False)


def test_counted_forward_is_the_analytic_matmul_count():
    with MetaTensors():
        model = meta_dit()
        conditioner = SyntheticConditioner(TINY_CONFIG.cap_feat_dim, CAPTION)
        counted = reference_forward_flops(model, conditioner, SIZE, PROMPTS.erase[0])
    assert counted == analytic_forward_flops(TINY_CONFIG, CAPTION, SIZE)
    wider = dataclasses.replace(TINY_CONFIG, n_layers=3)        # one more joint block: exactly one more block's count
    with MetaTensors():
        more = reference_forward_flops(meta_dit(wider), conditioner, SIZE, PROMPTS.erase[0])
    assert more == analytic_forward_flops(wider, CAPTION, SIZE) > counted


def test_meta_count_is_the_count_on_real_tensors():
    erase = erase_settings()
    real = count(fresh_dit(TINY_CONFIG), erase)
    with MetaTensors():
        meta = count(meta_dit(), erase, meta=True)
    assert meta["stages"] == real["stages"] and meta["step"] == real["step"] > 0
    assert sum(real["stages"].values()) == real["step"]           # the stages add up to the whole step


def test_zerase_step_stages_and_the_cached_paths():
    with MetaTensors():
        model = meta_dit()
        model.gradient_checkpointing = True                        # separate forwards: preserve is its own stage
        conditioner = SyntheticConditioner(TINY_CONFIG.cap_feat_dim, CAPTION)
        forward = reference_forward_flops(model, conditioner, SIZE, PROMPTS.erase[0])
        erase = erase_settings()
        cli = count(model, erase, meta=True)
        device = count(model, erase, wrapped=True, meta=True)
        uncached = count(model, erase_settings(cache=False), meta=True)
    batch = erase.batch_size
    for counted in (cli, device, uncached):
        stages = counted["stages"]
        assert set(stages) == set(FLOP_STAGES) and not counted["fused"]
        assert counted["step"] >= stages["student_forward"] > 0
        assert stages["backward"] > stages["student_forward"]      # checkpoint recomputation + input gradients
        assert stages["preserve"] > 0 and stages["probe"] > 0
    # a wrapped denoiser runs every forward from the embeddings: its student forward is a full forward per sample
    assert device["stages"]["student_forward"] >= batch * forward
    # kept refiner segments and probe prefix: the CLI path counts fewer FLOPs in the same stages
    assert cli["stages"]["preserve"] < device["stages"]["preserve"]
    assert cli["stages"]["probe"] < device["stages"]["probe"]
    assert cli["step"] < device["step"]
    # cached teacher velocities: nothing to compute; uncached, three frozen forwards per sample (∅, c_er, c_pr)
    assert cli["stages"]["teacher"] == device["stages"]["teacher"] == 0
    assert uncached["stages"]["teacher"] >= 2 * batch * forward
    assert uncached["step"] > cli["step"]


def test_bench_flops_prints_the_table_the_final_line_and_the_json(tmp_path, capsys):
    out = tmp_path / "flops.json"
    assert cli_main(["bench", "--flops", *TINY_FLAGS, "--sizes", "32", "64", "--paths", "cli,device",
                     "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    results = json.loads(out.read_text())
    assert set(results["sizes"]) == {"32", "64"}
    worst = 0.0
    for per_size in results["sizes"].values():
        assert set(per_size) == {"forward_flops", "cli", "device", "budget", "budgets"}
        for path in ("cli", "device"):
            entry = per_size[path]
            assert entry["step_forwards"] == pytest.approx(entry["step_flops"] / per_size["forward_flops"])
            assert sum(entry["stages_flops"].values()) == entry["step_flops"]
            worst = max(worst, entry["step_forwards"])
        # one engine: the model on its device takes the kept segments and probe prefix as the CLI does
        assert per_size["cli"]["step_flops"] == per_size["device"]["step_flops"]
        assert per_size["device"]["kept_segments"]
    assert results["forward_equivalents_per_zerase_step"] == pytest.approx(worst)
    assert printed.strip().splitlines()[-1] == f"forward-equivalents per zerase step: {worst:.2f}"


def test_bench_flops_refuses_an_unknown_path(capsys):
    assert cli_main(["bench", "--flops", *TINY_FLAGS, "--sizes", "32", "--paths", "cli,gpu"]) == 2
    assert "unknown paths ['gpu']" in capsys.readouterr().err


def test_the_device_path_keeps_segments_and_the_probe_prefix_on_the_models_device():
    """One engine: the core model on a device other than the CPU (meta here) gets its pool rows there and uses the
    kept refiner segments and the probe prefix, so it counts exactly what the CPU path counts."""
    with MetaTensors():
        model = meta_dit()
        model.gradient_checkpointing = True
        erase = erase_settings()
        device = count(model, erase, meta=True)
        wrapped = count(model, erase, wrapped=True, meta=True)
    assert device["pool_device"] == "meta" and device["segments"] and device["prefix"]
    assert not wrapped["segments"] and not wrapped["prefix"]
    assert device["stages"]["preserve"] < wrapped["stages"]["preserve"]
    assert device["stages"]["probe"] < wrapped["stages"]["probe"]
    real = count(fresh_dit(TINY_CONFIG), erase)                  # the same step with the model on the CPU
    real_checkpointed = fresh_dit(TINY_CONFIG)
    real_checkpointed.gradient_checkpointing = True
    assert count(real_checkpointed, erase)["step"] == device["step"] and real["segments"]


def test_each_checkpointed_block_costs_its_forward_again():
    """ZImageDiT.checkpointed_layers: the backward recomputes exactly the checkpointed joint blocks."""
    config = dataclasses.replace(TINY_CONFIG, n_layers=3)
    erase = erase_settings()
    steps = []
    with MetaTensors():
        for blocks in (0, 1, 2, 3):
            model = meta_dit(config)
            model.gradient_checkpointing, model.checkpointed_layers = True, blocks
            steps.append(count(model, erase, meta=True)["stages"]["backward"])
    recompute = [later - earlier for earlier, later in itertools.pairwise(steps)]
    assert recompute[0] > 0 and recompute[0] == recompute[1] == recompute[2]


def test_bench_flops_counts_each_memory_budget_at_the_auto_choice(tmp_path, capsys):
    out = tmp_path / "flops.json"
    flags = [*TINY_FLAGS, "--sizes", "64", "--paths", "cli", "--memory-gib", "0.001", "80", "--json", str(out)]
    assert cli_main(["bench", "--flops", *flags]) == 0
    results = json.loads(out.read_text())
    budgets = results["sizes"]["64"]["budgets"]
    assert budgets["0.001"]["cli"]["checkpointed_blocks"] == 2          # nothing fits: every block
    assert budgets["80"]["cli"]["checkpointed_blocks"] == 0             # everything fits: none, one stacked forward
    assert budgets["80"]["cli"]["fused"] and not budgets["0.001"]["cli"]["fused"]
    assert budgets["80"]["cli"]["step_flops"] < budgets["0.001"]["cli"]["step_flops"]
    assert results["budget"] == "0.001" and results["sizes"]["64"]["cli"] == budgets["0.001"]["cli"]
    assert capsys.readouterr().out.strip().splitlines()[-2].endswith("at memory 0.001:")
