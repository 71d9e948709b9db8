"""`python -m zerase_core bench --perf`: per-step wall time and peak memory of the erasure engine (issue 6).

Measured, on the nano model by default or on a randomly initialised DiT of any size given by flags:
  zerase            one Z-Erase step with the x_t pool and teacher cache (the default trainer)
  zerase_uncached   the same step without them: x_t sampled afresh by the frozen model and teacher forwards each step
  zerase_gate_all   the same cached step with the gate open on every token (ratio to zerase: the cost of gating)
  esd / naive_esd   ESD with the text gate / with the gate open everywhere (their ratio is the cost of gating)
  plain_lora        one ungated fwd/bwd/AdamW step of the same adapters on a plain MSE target
  teacher_forward   one frozen forward of a batch (no grad)
Variants run interleaved (one step of each per round) so that background load hits all of them alike; each time is
the median over `--steps` rounds after `--warmup` rounds. Peak memory is the process RSS (and the CUDA peak on a
GPU) during each variant's steps; `peak_rss_gb` is the whole run's peak. The memory model's prediction for the zerase
step is printed next to the measurement (zerase_core/bench/memory_model.py, docs/performance.md).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from dataclasses import replace

import torch

from ..engine.erase_config import EraseConfig
from ..model.config import DiTConfig
from . import memory_model
from .perf_options import DTYPES, VARIANTS, add_perf_arguments, dit_config, perf_device, perf_settings
from .perf_steps import (
    STAGES,
    BenchTrainer,
    MemoryProbe,
    PlainLoraVariant,
    StageClock,
    TeacherForwardVariant,
    TrainerVariant,
)
from .synthetic import DeviceDenoiser, SyntheticConditioner, random_dit

RUN_STEPS = 200  # EraseConfig.steps default: the run length of the cached-vs-uncached projection


def build_world(args, config: DiTConfig, settings: dict, device: torch.device):
    """(model, conditioner, prompt set, weights label) for the run."""
    from ..nano.prompts import NanoConditioner, training_prompt_set

    dtype = DTYPES[settings["dtype"]]
    prompts = training_prompt_set(["star"])
    weights = "random"
    if args.preset == "nano" and settings["caption_tokens"] is None:
        from ..nano import paths
        from ..nano.text_encoder import NanoTextEncoder

        trained = paths.TEXT_ENCODER.exists() and not args.random_weights
        if trained:
            encoder = NanoTextEncoder.load(paths.TEXT_ENCODER)
        else:
            encoder = NanoTextEncoder().eval().requires_grad_(False)
        conditioner = NanoConditioner(encoder)
        if config.cap_feat_dim != encoder.config.width:
            raise ValueError(
                f"the nano text encoder gives {encoder.config.width} features; give --caption-tokens "
                "to use the synthetic conditioner with another --cap-feat-dim"
            )
    else:
        conditioner = SyntheticConditioner(config.cap_feat_dim, settings["caption_tokens"] or 16)
    from ..nano import paths

    reshaped = any(value is not None for value in (args.dim, args.heads, args.layers, args.refiners))
    if args.preset == "nano" and not reshaped and paths.DIT.exists() and not args.random_weights:
        from ..model.checkpoint import load_dit

        model, weights = load_dit(paths.DIT, dtype=dtype, device=device), "trained"
    else:
        model = random_dit(config, dtype, device)
    model.gradient_checkpointing = bool(settings["checkpointing"])
    return model, conditioner, prompts, weights


def _median(values: list[float]) -> float:
    return float(statistics.median(values)) if values else float("nan")


def run_perf(args) -> dict:
    """Run the benchmark described by parsed `add_perf_arguments` flags; print the table; return the results."""
    if args.threads:
        torch.set_num_threads(args.threads)
    args.preset = args.preset or "nano"
    settings = perf_settings(args)
    device = perf_device(args.device)
    config = dit_config(args)
    only = VARIANTS if not args.only else tuple(name.strip() for name in args.only.split(","))
    unknown = sorted(set(only) - set(VARIANTS))
    if unknown:
        raise ValueError(f"--only: unknown variants {unknown}; choose from {list(VARIANTS)}")
    memory = MemoryProbe(device)
    baseline_rss = memory.rss_gb()
    model, conditioner, prompts, weights = build_world(args, config, settings, device)
    velocity = model if device.type == "cpu" else DeviceDenoiser(model, device)
    latent = settings["size"] // 8
    erase = EraseConfig(
        method="zerase",
        steps=100_000,
        rank=args.rank,
        batch_size=settings["batch"],
        pool_prompts=settings["pool_prompts"],
        sample_steps=settings["sample_steps"],
        sample_cfg=settings["cfg"],
        latent_size=(latent, latent),
        stationarity_every=0,
    )
    sync = torch.cuda.synchronize if device.type == "cuda" else None
    clock = StageClock(sync)
    trainer_options = dict(
        denoise=velocity,
        in_channels=config.in_channels,
        shift=config.shift,
        clock=clock,
        build_batch=settings["build_batch"],
    )

    def make_trainer(method: str, **extra) -> BenchTrainer:
        trainer = BenchTrainer(
            model,
            conditioner,
            prompts,
            replace(erase, method=method, **extra.pop("config", {})),
            **trainer_options,
            **extra,
        )
        trainer.adapters.to(device)
        return trainer

    results: dict = {
        "device": _device_label(device),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "preset": args.preset,
        "weights": weights,
        "dit": config.to_dict(),
        "parameters": sum(p.numel() for p in model.parameters()),
        "dtype": settings["dtype"],
        "checkpointing": bool(settings["checkpointing"]),
        "image_size": settings["size"],
        "batch": settings["batch"],
        "rank": args.rank,
        "pool_prompts": settings["pool_prompts"],
        "sample_steps": settings["sample_steps"],
        "sample_cfg": settings["cfg"],
        "steps_timed": args.steps,
        "warmup": args.warmup,
        "baseline_rss_gb": baseline_rss,
        "model_rss_gb": memory.rss_gb(),
    }
    memory.reset()
    started = time.perf_counter()
    cached = make_trainer("zerase")
    results["cache_build_s"] = time.perf_counter() - started
    results["cache_build_peak_rss_gb"] = memory.peak_rss_gb()
    if memory.cuda:
        results["cache_build_peak_cuda_gb"] = memory.peak_cuda_gb()
    pool = cached.pool
    variants: list[TrainerVariant | PlainLoraVariant | TeacherForwardVariant] = []
    if "zerase" in only:
        variants.append(TrainerVariant("zerase", cached))
    if "zerase_uncached" in only:
        started = time.perf_counter()
        uncached = make_trainer("zerase", config={"cache": False}, fresh_samples=True)
        results["pool_sampling_s"] = time.perf_counter() - started
        variants.append(TrainerVariant("zerase_uncached", uncached))
    if "zerase_gate_all" in only:
        # the same zerase step with the gate open on every token (issue 3's gate-cost comparison)
        open_gate = make_trainer("zerase", pool=pool)
        open_gate.adapters.set_gate("all")
        variants.append(TrainerVariant("zerase_gate_all", open_gate))
    for name, method in (("esd", "esd"), ("naive_esd", "naive-esd")):
        if name in only:
            variants.append(TrainerVariant(name, make_trainer(method, pool=pool)))
    if cached.adapters.attached:
        cached.adapters.detach()
    for gate, name in (("all", "plain_lora"), ("text", "plain_lora_gate_text")):
        if name in only:
            variants.append(PlainLoraVariant(model, velocity, conditioner, pool, erase, clock, device, gate))
    if "teacher_forward" in only:
        variants.append(TeacherForwardVariant(velocity, conditioner, pool, erase, clock))

    times: dict[str, list[float]] = {variant.name: [] for variant in variants}
    stages: dict[str, dict[str, list[float]]] = {variant.name: {stage: [] for stage in STAGES} for variant in variants}
    peaks = {variant.name: {"rss": 0.0, "cuda": 0.0} for variant in variants}
    for round_index in range(args.warmup + args.steps):
        for variant in variants:
            memory.reset()
            step_stages = variant.step()
            if round_index < args.warmup:
                continue
            times[variant.name].append(sum(step_stages.values()))
            for stage in STAGES:
                stages[variant.name][stage].append(step_stages.get(stage, 0.0))
            peaks[variant.name]["rss"] = max(peaks[variant.name]["rss"], memory.peak_rss_gb())
            peaks[variant.name]["cuda"] = max(peaks[variant.name]["cuda"], memory.peak_cuda_gb() or 0.0)

    for name in times:
        results[f"{name}_step_s" if name != "teacher_forward" else "teacher_forward_s"] = _median(times[name])
    results["stages_s"] = {
        name: {stage: _median(values) for stage, values in per.items()} for name, per in stages.items()
    }
    results["step_peak_rss_gb"] = {name: peak["rss"] for name, peak in peaks.items()}
    results["peak_rss_gb"] = memory.lifetime_peak_gb()
    if memory.cuda:
        results["step_peak_cuda_gb"] = {name: peak["cuda"] for name, peak in peaks.items()}
        results["peak_cuda_gb"] = max([results["cache_build_peak_cuda_gb"]] + [p["cuda"] for p in peaks.values()])
    _derived(results, RUN_STEPS)
    results["load_average"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    prediction = memory_model.predict_run(config, settings, args.rank, device.type, results["baseline_rss_gb"])
    results["memory_model"] = prediction
    print(format_table(results))
    if args.json:
        from ..common.files import atomic_write_json

        atomic_write_json(results, args.json)
        print(f"wrote {args.json}")
    return results


def _device_label(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda: {torch.cuda.get_device_name(device)}"
    return f"cpu: {os.cpu_count()} cores"


def _derived(results: dict, run_steps: int) -> None:
    """Ratios and cache speed-ups from the measured times (the run projection uses the measured build time)."""

    def ratio(a, b):
        return results[a] / results[b] if a in results and b in results and results[b] > 0 else None

    results["ratio_zerase_vs_plain_lora"] = ratio("zerase_step_s", "plain_lora_step_s")
    results["ratio_gate_text_vs_all_zerase"] = ratio("zerase_step_s", "zerase_gate_all_step_s")
    results["ratio_gate_text_vs_all_esd"] = ratio("esd_step_s", "naive_esd_step_s")
    results["ratio_gate_text_vs_all_plain"] = ratio("plain_lora_gate_text_step_s", "plain_lora_step_s")
    results["speedup_cached_per_step"] = ratio("zerase_uncached_step_s", "zerase_step_s")
    if "zerase_uncached_step_s" in results and "zerase_step_s" in results:
        cached_run = results["cache_build_s"] + run_steps * results["zerase_step_s"]
        results["run_steps_projected"] = run_steps
        results["speedup_cached_run"] = run_steps * results["zerase_uncached_step_s"] / cached_run
        if "pool_sampling_s" in results:
            results["teacher_cache_build_s"] = results["cache_build_s"] - results["pool_sampling_s"]


def format_table(results: dict) -> str:
    lines = [
        f"ZErase perf — {results['device']}, torch {results['torch']}, {results['threads']} threads",
        f"model: {results['preset']} ({results['weights']} weights), {results['parameters'] / 1e6:.1f}M params, "
        f"dim {results['dit']['dim']}, {results['dit']['n_layers']} layers, {results['dtype']}, "
        f"checkpointing {'on' if results['checkpointing'] else 'off'}",
        f"problem: {results['image_size']}² px, batch {results['batch']}, rank {results['rank']}, pool "
        f"{results['pool_prompts']}×{results['sample_steps']} (cfg {results['sample_cfg']}); "
        f"median of {results['steps_timed']} after {results['warmup']} warm-up rounds",
        "",
    ]
    header = f"{'variant':<22}{'step s':>9}" + "".join(f"{stage[:9]:>10}" for stage in STAGES) + f"{'peak GB':>9}"
    lines += [header, "-" * len(header)]
    for name, per in results["stages_s"].items():
        key = "teacher_forward_s" if name == "teacher_forward" else f"{name}_step_s"
        peak = results.get("step_peak_cuda_gb", results["step_peak_rss_gb"])[name]
        lines.append(
            f"{name:<22}{results[key]:>9.4f}" + "".join(f"{per[stage]:>10.4f}" for stage in STAGES) + f"{peak:>9.2f}"
        )
    lines.append("")
    for key, label in (
        ("cache_build_s", "pool + teacher cache build (init) s"),
        ("pool_sampling_s", "pool sampling only s"),
        ("ratio_zerase_vs_plain_lora", "zerase / plain_lora"),
        ("ratio_gate_text_vs_all_zerase", "gate text / all (zerase step)"),
        ("ratio_gate_text_vs_all_esd", "gate text / all (esd vs naive-esd)"),
        ("ratio_gate_text_vs_all_plain", "gate text / all (plain step)"),
        ("speedup_cached_per_step", "cached speed-up per step"),
        ("speedup_cached_run", "cached speed-up, 200-step run incl. build"),
        ("peak_rss_gb", "peak RSS GB (whole run)"),
        ("peak_cuda_gb", "peak CUDA GB (whole run)"),
    ):
        if results.get(key) is not None:
            lines.append(f"{label:<44}{results[key]:>10.3f}")
    model = results.get("memory_model")
    if model:
        measured = results.get("step_peak_cuda_gb" if "step_peak_cuda_gb" in results else "step_peak_rss_gb", {})
        lines.append(
            f"{'memory model: zerase step peak GB':<44}{model['step_peak_gb']:>10.3f}"
            + (f"   measured {measured['zerase']:.3f}" if "zerase" in measured else "")
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m zerase_core.bench.perf", description=__doc__.splitlines()[0])
    add_perf_arguments(parser)
    args = parser.parse_args(argv)
    try:
        if args.flops:
            from .perf_flops import run_flops

            run_flops(args)
        else:
            run_perf(args)
    except (ValueError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
