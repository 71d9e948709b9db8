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
step is printed next to the measurement (zerase_core/engine/memory_model.py, docs/performance.md).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from dataclasses import replace

import torch

from ..common.prompts import TextConditioner
from ..engine import memory_model
from ..model.config import DiTConfig
from .meters import MemoryProbe, StageClock
from .perf_options import DTYPES, VARIANTS, add_perf_arguments, dit_config, perf_device, perf_settings, step_config
from .perf_steps import STAGES, BenchTrainer, PlainLoraVariant, TeacherForwardVariant, TrainerVariant
from .perf_table import RUN_STEPS, derive_ratios, format_table
from .synthetic import SyntheticConditioner, random_dit


def build_world(args, config: DiTConfig, settings: dict, device: torch.device):
    """(model, conditioner, prompt set, weights label) for the run."""
    from ..nano.prompts import NanoConditioner, training_prompt_set

    dtype = DTYPES[settings["dtype"]]
    prompts = training_prompt_set(["star"])
    weights = "random"
    conditioner: TextConditioner
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
    erase = step_config(settings, settings["size"], args.rank)
    sync = torch.cuda.synchronize if device.type == "cuda" else None
    clock = StageClock(sync)
    trainer_options = dict(
        in_channels=config.in_channels, shift=config.shift, clock=clock, build_batch=settings["build_batch"]
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
    velocity = cached._velocity  # the model, its inputs moved to its device (one engine on every device)
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
    derive_ratios(results, RUN_STEPS)
    results["load_average"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    prediction = _memory_prediction(config, settings, args.rank, device.type, results["baseline_rss_gb"])
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


def _memory_prediction(config: DiTConfig, settings: dict, rank: int, device_type: str, runtime_gb: float) -> dict:
    """The prediction for a `bench --perf` run (its settings dict) of the zerase step."""
    caption = settings.get("caption_tokens") or 16
    problem = memory_model.Problem(
        config=config,
        image_size=settings["size"],
        caption_tokens=caption,
        batch=settings["batch"],
        rank=rank,
        weight_bytes=2 if settings["dtype"] in ("bfloat16", "float16") else 4,
        checkpointing=bool(settings["checkpointing"]),
        pool=(settings["pool_prompts"], settings["sample_steps"]),
        build_batch=settings.get("build_batch") or 64,
        device=device_type,
        runtime_gb=runtime_gb if device_type == "cpu" else 0.0,
    )
    return memory_model.predict(problem)


if __name__ == "__main__":
    sys.exit(main())
