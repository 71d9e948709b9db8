"""One Z-Erase training step on a randomly initialised Z-Image-Turbo, on the CPU, without any weights (issue 6, item 3).

The exact Turbo config (30 joint layers, 2+2 refiners, dim 3840, 6.155B parameters) is created directly in bf16 (fp32
would need 24.6 GB), with per-block gradient checkpointing, at 256² (1024-token latents become 256 image tokens),
batch 1, rank 8 on Q+K of every joint layer, a 64-token caption, and the smallest x_t pool (1 trajectory × 2 steps,
no guidance, as Turbo). It reports wall time per phase (model creation, pool + teacher cache, the step and its
stages) and peak RSS next to the memory model's prediction (zerase_core/engine/memory_model.py, docs/performance.md).

Full scale (10–15 min on 2 cores, ≈ 12–13 GB RAM):
    nice -n 19 .venv/bin/python scripts/fullscale_step.py --threads 2 --json fullscale.json
Validation at reduced size (same code, fewer layers):
    nice -n 19 .venv/bin/python scripts/fullscale_step.py --layers 2 --refiners 1 --threads 1
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))   # run from a checkout without installing

from zerase_core.engine import memory_model  # noqa: E402
from zerase_core.bench.meters import MemoryProbe, StageClock  # noqa: E402
from zerase_core.bench.perf_steps import STAGES, BenchTrainer  # noqa: E402
from zerase_core.bench.synthetic import SyntheticConditioner, random_dit  # noqa: E402
from zerase_core.engine.erase_config import EraseConfig  # noqa: E402
from zerase_core.model.config import DiTConfig  # noqa: E402
from zerase_core.nano.prompts import training_prompt_set  # noqa: E402


def parse(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=30, help="joint layers (30 = Z-Image-Turbo)")
    parser.add_argument("--refiners", type=int, default=2, help="blocks per refiner (2 = Z-Image-Turbo)")
    parser.add_argument("--dim", type=int, default=3840, help="width (multiple of the 128-wide heads; tests only)")
    parser.add_argument("--size", type=int, default=256, help="image side in pixels")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--rank", type=int, default=8)
    parser.add_argument("--caption-tokens", type=int, default=64)
    parser.add_argument("--steps", type=int, default=1, help="training steps (the first includes the first λ probe)")
    parser.add_argument("--no-checkpointing", action="store_true", help="keep every block's activations")
    parser.add_argument("--checkpointed-layers", type=int, help="checkpoint only the first N joint blocks (0: none, "
                        "but the student forwards still run apart, each freed by its backward)")
    parser.add_argument("--one-backward", action="store_true", help="one backward for the whole step instead of one "
                        "per student forward (engine/gradients.py), to measure what staging saves")
    parser.add_argument("--threads", type=int, help="torch CPU threads")
    parser.add_argument("--force", action="store_true", help="run even if the predicted peak exceeds free memory")
    parser.add_argument("--json", type=Path, help="write the results here (atomically)")
    args = parser.parse_args(argv)
    if args.size < 16 or args.size % 16:
        parser.error(f"--size {args.size} must be a multiple of 16")
    if args.dim < 256 or args.dim % 128:
        parser.error(f"--dim {args.dim} must be a multiple of 128 (Turbo's head width), at least 256")
    if min(args.layers, args.batch, args.rank, args.caption_tokens, args.steps) < 1 or args.refiners < 0:
        parser.error("--layers, --batch, --rank, --caption-tokens and --steps must be ≥ 1, --refiners ≥ 0")
    return args


def available_gb() -> float | None:
    try:
        with open("/proc/meminfo") as stream:
            for line in stream:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) / 2**20
    except OSError:
        return None
    return None


def run(args) -> dict:
    if args.threads:
        torch.set_num_threads(args.threads)
    config = dataclasses.replace(DiTConfig.turbo(), n_layers=args.layers, n_refiner_layers=args.refiners, dim=args.dim,
                                 n_heads=args.dim // 128)
    checkpointing = not args.no_checkpointing
    memory = MemoryProbe(torch.device("cpu"))
    runtime = memory.rss_gb()
    problem = memory_model.Problem(config=config, image_size=args.size, caption_tokens=args.caption_tokens,
                                   batch=args.batch, rank=args.rank, checkpointing=checkpointing, pool=(1, 2),
                                   build_batch=2, device="cpu", runtime_gb=runtime,
                                   checkpointed_layers=args.checkpointed_layers)
    if args.one_backward:
        # predicted as the stacked step (the three forwards held together; ∅ padded to the caption: slightly more)
        problem = dataclasses.replace(problem, checkpointing=False)
    predicted = memory_model.predict(problem)
    free = available_gb()
    print(f"config: {config.n_layers} layers, {config.n_refiner_layers}+{config.n_refiner_layers} refiners, dim "
          f"{config.dim}, {memory_model.parameter_count(config) / 1e9:.3f}B params, bf16, {args.size}², batch "
          f"{args.batch}, rank {args.rank}, checkpointing {'on' if checkpointing else 'off'}, "
          f"{torch.get_num_threads()} threads", flush=True)
    print(f"memory model: peak {predicted['peak_gb']:.2f} GiB (free now: {free if free is None else round(free, 1)} GiB)",
          flush=True)
    if free is not None and predicted["peak_gb"] > free and not args.force:
        raise SystemExit(f"error: the predicted peak {predicted['peak_gb']:.1f} GiB exceeds the {free:.1f} GiB "
                         "available; free memory or pass --force")
    results = {"dit": config.to_dict(), "parameters": memory_model.parameter_count(config), "image_size": args.size,
               "batch": args.batch, "rank": args.rank, "caption_tokens": args.caption_tokens,
               "checkpointing": checkpointing, "threads": torch.get_num_threads(), "torch": torch.__version__,
               "runtime_rss_gb": runtime, "memory_model": predicted}

    phase_peaks = results["phase_peak_rss_gb"] = {}
    memory.reset()
    started = time.perf_counter()
    model = random_dit(config, torch.bfloat16)
    model.gradient_checkpointing = checkpointing
    if args.checkpointed_layers is not None:
        model.checkpointed_layers = args.checkpointed_layers
    results["create_s"] = time.perf_counter() - started
    results["model_rss_gb"] = memory.rss_gb()
    print(f"model created in {results['create_s']:.1f} s, RSS {results['model_rss_gb']:.2f} GiB", flush=True)

    latent = args.size // 8
    erase = EraseConfig(method="zerase", steps=args.steps, rank=args.rank, batch_size=args.batch, pool_prompts=1,
                        sample_steps=2, sample_cfg=1.0, latent_size=(latent, latent), stationarity_every=0)
    clock = StageClock()
    phase_peaks["create"] = memory.peak_rss_gb()
    memory.reset()
    started = time.perf_counter()
    trainer = BenchTrainer(model, SyntheticConditioner(config.cap_feat_dim, args.caption_tokens),
                           training_prompt_set(["star"]), erase, in_channels=config.in_channels, shift=config.shift,
                           clock=clock, build_batch=2)
    if args.one_backward:
        trainer.backward_per_forward = False
    results["pool_and_cache_s"] = time.perf_counter() - started
    print(f"x_t pool (1×2) + teacher cache in {results['pool_and_cache_s']:.1f} s", flush=True)
    phase_peaks["pool_and_cache"] = memory.peak_rss_gb()
    memory.reset()
    results["steps"] = []
    for _ in range(args.steps):
        started = time.perf_counter()
        metrics = trainer.train_step()
        wall = time.perf_counter() - started
        results["steps"].append({"wall_s": wall, "stages_s": trainer.step_stages, "metrics": dict(metrics)})
        stages = ", ".join(f"{stage} {trainer.step_stages.get(stage, 0.0):.1f}" for stage in STAGES
                           if trainer.step_stages.get(stage))
        print(f"step {trainer.step}: {wall:.1f} s ({stages})", flush=True)
    phase_peaks["steps"] = memory.peak_rss_gb()
    trainer.adapters.detach()
    results["step_s"] = results["steps"][0]["wall_s"]
    results["total_s"] = results["create_s"] + results["pool_and_cache_s"] + sum(s["wall_s"] for s in results["steps"])
    results["peak_rss_gb"] = memory.lifetime_peak_gb()
    error = predicted["peak_gb"] / results["peak_rss_gb"] - 1
    results["memory_model_error"] = error
    print(f"wall: create {results['create_s']:.1f} s + pool/cache {results['pool_and_cache_s']:.1f} s + step "
          f"{results['step_s']:.1f} s = {results['total_s']:.1f} s")
    phases = ", ".join(f"{name} {value:.2f}" for name, value in phase_peaks.items())
    print(f"peak RSS {results['peak_rss_gb']:.2f} GiB ({phases}); memory model {predicted['peak_gb']:.2f} GiB "
          f"(build {predicted['build_peak_gb']:.2f}, step {predicted['step_peak_gb']:.2f}; {error:+.1%})")
    if args.json:
        from zerase_core.common.files import atomic_write_json
        atomic_write_json(results, args.json)
        print(f"wrote {args.json}")
    return results


if __name__ == "__main__":
    run(parse())
