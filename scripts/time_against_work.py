"""Time against work (issue 16, item 3): how close a measured zerase step comes to its FLOP count.

    ratio = measured step time ÷ (counted FLOPs of the step ÷ measured matmul throughput)

1 would be a step that runs nothing but matmuls at the rate of a plain GEMM; everything above it is elementwise
work, small kernels, attention below GEMM speed, Python and host syncs. Three measurements per row, on this machine:
  - matmul throughput: a (tokens × dim) @ (dim × dim) GEMM at the model's dtype, tokens = the joint sequence of one
    sample at this size (the shape of the block's projections), median of repeats;
  - FLOPs of one steady-state step: the `bench --flops` counter (zerase_core.bench.perf_flops, meta tensors) on the
    same DiT shape and settings, cli path;
  - step time: the real `EraseTrainer.train_step()` on random weights of that shape (bench --perf's world), median
    over --steps after --warmup, the trainer's progress point (check_finite, when it has one) included.

Runs unchanged on older commits (it only uses the bench presets), so the ratio can be taken before and after a change:

    PYTHONPATH=. taskset -c 0 python scripts/time_against_work.py --threads 1
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from zerase_core.bench.meters import StageClock
from zerase_core.bench.perf import build_world
from zerase_core.bench.perf_flops import core_path_counts
from zerase_core.bench.perf_options import DTYPES, add_perf_arguments, dit_config, perf_settings, step_config
from zerase_core.bench.perf_steps import BenchTrainer
from zerase_core.model.layout import TokenLayout
from zerase_core.nano.prompts import training_prompt_set

# name: bench flags (a turbo-width config small enough for one CPU core: one joint layer at dim 3840, 256², bf16)
ROWS = {
    "nano": ["--preset", "nano", "--random-weights"],
    "turbo-1-layer-256": ["--preset", "turbo", "--layers", "1", "--refiners", "1", "--size", "256"],
}


def matmul_rate(tokens: int, dim: int, dtype: torch.dtype, repeats: int = 7) -> float:
    """FLOP/s of a (tokens × dim) @ (dim × dim) GEMM at `dtype`, median of `repeats`."""
    generator = torch.Generator().manual_seed(0)
    left = torch.randn(tokens, dim, generator=generator).to(dtype)
    right = torch.randn(dim, dim, generator=generator).to(dtype)
    left @ right  # warm-up
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        left @ right
        times.append(time.perf_counter() - started)
    return 2 * tokens * dim * dim / statistics.median(times)


def measure(name: str, flags: list[str], steps: int, warmup: int) -> dict:
    parser = argparse.ArgumentParser()
    add_perf_arguments(parser)
    args = parser.parse_args(flags)
    settings = perf_settings(args)
    config = dit_config(args)
    dtype = DTYPES[settings["dtype"]]
    size = settings["size"]
    prompts = training_prompt_set(["star"])
    flops = core_path_counts(config, settings, size, args.rank, ("cli",), prompts)["cli"]["step"]

    model, conditioner, prompts, _ = build_world(args, config, settings, torch.device("cpu"))
    trainer = BenchTrainer(
        model,
        conditioner,
        prompts,
        step_config(settings, size, args.rank),
        in_channels=config.in_channels,
        shift=config.shift,
        clock=StageClock(),
        build_batch=settings["build_batch"],
    )
    check = getattr(trainer, "check_finite", lambda: None)  # the progress point, where the trainer has one
    for _ in range(warmup):
        trainer.train_step()
        check()
    times = []
    for _ in range(steps):
        started = time.perf_counter()
        trainer.train_step()
        check()
        times.append(time.perf_counter() - started)
    step_seconds = statistics.median(times)

    caption = settings["caption_tokens"] or 16
    latent = size // 8
    layout = TokenLayout.from_shapes([caption], (latent, latent), config.patch_size, config.pad_tokens_multiple)
    tokens = layout.sequence_length("layers")
    rate = matmul_rate(tokens, config.dim, dtype)
    floor = flops / rate
    return {
        "name": name,
        "dtype": settings["dtype"],
        "dim": config.dim,
        "tokens": tokens,
        "gflops_per_s": rate / 1e9,
        "gflop_step": flops / 1e9,
        "floor_s": floor,
        "step_s": step_seconds,
        "ratio": step_seconds / floor,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", default=",".join(ROWS), help=f"comma-separated subset of {','.join(ROWS)}")
    parser.add_argument("--steps", type=int, default=5, help="timed steps per row (median)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s)")
    header = (
        f"{'config':<20} {'dtype':<9} {'GEMM GFLOP/s':>12} {'GFLOP/step':>10} {'floor s':>8} {'step s':>8} {'ratio':>6}"
    )
    print(header)
    for name in args.rows.split(","):
        row = measure(name, ROWS[name], args.steps, args.warmup)
        print(
            f"{row['name']:<20} {row['dtype']:<9} {row['gflops_per_s']:>12.1f} {row['gflop_step']:>10.3f} "
            f"{row['floor_s']:>8.3f} {row['step_s']:>8.3f} {row['ratio']:>6.1f}",
            flush=True,
        )


if __name__ == "__main__":
    main()
