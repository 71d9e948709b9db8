"""The flags and presets of `bench --perf` / `--flops`: variants, problem-size presets, dtypes, and the DiT shape,
problem settings, device and measured step's EraseConfig they select (shared by `perf` and `perf_flops`)."""

from __future__ import annotations

import argparse
from dataclasses import replace
from typing import Any

import torch

from ..engine.erase_config import EraseConfig
from ..model.config import DiTConfig

VARIANTS = (
    "zerase",
    "zerase_uncached",
    "zerase_gate_all",
    "esd",
    "naive_esd",
    "plain_lora",
    "plain_lora_gate_text",
    "teacher_forward",
)
# the problem settings that are EraseConfig fields: setting name -> field
ERASE_FIELDS = {
    "batch": "batch_size",
    "pool_prompts": "pool_prompts",
    "sample_steps": "sample_steps",
    "cfg": "sample_cfg",
}
# Each preset: the model side, and the erase run (batch, x_t pool, sampler) as that model is trained. Nano: by the CLI
# (the EraseConfig defaults); Z-Image-Turbo: by the public code (batch 1, a 9-step schedule without guidance).
NANO_ERASE = {name: getattr(EraseConfig, field) for name, field in ERASE_FIELDS.items()}
TURBO_ERASE = dict(batch=1, pool_prompts=2, sample_steps=9, cfg=1.0)
PRESETS: dict[str, dict[str, Any]] = {
    # the nano model as the CLI trains it
    "nano": dict(size=64, dtype="float32", checkpointing=False, **NANO_ERASE, caption_tokens=None, build_batch=None),
    # Z-Image-Turbo: bf16, per-block checkpointing
    "turbo": dict(size=512, dtype="bfloat16", checkpointing=True, **TURBO_ERASE, caption_tokens=64, build_batch=2),
}
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def add_perf_arguments(parser: argparse.ArgumentParser) -> None:
    size = parser.add_argument_group("model and problem size (defaults: the preset's)")
    size.add_argument(
        "--preset",
        choices=sorted(PRESETS),
        help="nano: the bundled model's shape; turbo: Z-Image-Turbo (30 layers, dim 3840, 6.15B); "
        "default nano for --perf, turbo for --flops",
    )
    size.add_argument("--dim", type=int, help="hidden width (heads keep head dim 128 for turbo, 32 for nano)")
    size.add_argument("--heads", type=int, help="attention heads")
    size.add_argument("--layers", type=int, help="joint layers")
    size.add_argument("--refiners", type=int, help="blocks in each refiner")
    size.add_argument("--size", type=int, help="image side in pixels (latent = size/8, 2×2 patches)")
    size.add_argument("--caption-tokens", type=int, help="tokens per caption (synthetic conditioner)")
    size.add_argument("--batch", type=int, help="samples per step")
    size.add_argument("--rank", type=int, default=8, help="adapter rank")
    size.add_argument("--pool-prompts", type=int, help="trajectories in the x_t pool")
    size.add_argument("--sample-steps", type=int, help="sampler steps of the x_t schedule")
    size.add_argument("--cfg", type=float, help="guidance of the frozen x_t sampler (1 = none)")
    size.add_argument("--build-batch", type=int, help="forwards per batch while building pool and teacher cache")
    run = parser.add_argument_group("how to run")
    run.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    run.add_argument("--dtype", choices=sorted(DTYPES), help="weight dtype (adapters stay float32)")
    run.add_argument(
        "--checkpointing",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="per-block gradient checkpointing of the joint layers",
    )
    run.add_argument("--steps", type=int, default=5, help="timed rounds (median over them; ≥ 5 for reported numbers)")
    run.add_argument("--warmup", type=int, default=2, help="untimed rounds first")
    run.add_argument("--only", help=f"comma-separated subset of {','.join(VARIANTS)}")
    run.add_argument("--random-weights", action="store_true", help="nano: random weights even if trained ones exist")
    run.add_argument("--threads", type=int, help="torch CPU threads")
    run.add_argument("--json", help="also write the results to this JSON file (atomically)")
    flops = parser.add_argument_group("--flops: FLOPs of one step per stage and path, on meta tensors (perf_flops)")
    flops.add_argument("--flops", action="store_true", help="count FLOPs instead of timing (no weights in memory)")
    flops.add_argument("--sizes", type=int, nargs="+", help="image sides to count (turbo default: 512 1024)")
    flops.add_argument(
        "--paths",
        help="comma-separated subset of cli,device,comfyui (default: all; the comfyui path "
        "is counted by scripts/comfy_flops.py with ComfyUI's python)",
    )
    flops.add_argument(
        "--memory-gib",
        type=float,
        nargs="+",
        help="device memory budgets (GiB): each path is counted with the joint blocks the auto checkpointing policy"
        " checkpoints within each (engine/memory_policy.checkpoint_blocks_within); turbo default: 24; with"
        " --checkpointing / --no-checkpointing instead: all / no blocks",
    )


def _axes_for(head_dim: int) -> tuple[int, int, int]:
    first = head_dim // 4 // 2 * 2
    second = (head_dim - first) // 2 // 2 * 2
    return first, second, head_dim - first - second


def dit_config(args) -> DiTConfig:
    """The preset's DiT shape with --dim / --heads / --layers / --refiners over it (head widths kept even)."""
    if args.preset == "nano":
        from ..nano.training.dit import NANO_CONFIG

        base = NANO_CONFIG
    else:
        base = DiTConfig.turbo()
    changes = {
        name: value
        for name, value in (
            ("dim", args.dim),
            ("n_heads", args.heads),
            ("n_layers", args.layers),
            ("n_refiner_layers", args.refiners),
        )
        if value is not None
    }
    if "dim" in changes and "n_heads" not in changes:
        changes["n_heads"] = max(1, changes["dim"] // base.head_dim)
    if "dim" in changes or "n_heads" in changes:
        dim, heads = changes.get("dim", base.dim), changes.get("n_heads", base.n_heads)
        if dim % heads or (dim // heads) % 2:
            raise ValueError(f"--dim {dim} must split into --heads {heads} heads of an even width")
        changes["axes_dims"] = _axes_for(dim // heads)
    return replace(base, **changes)


def perf_settings(args) -> dict:
    """The preset's problem settings with the flags given over them, checked."""
    preset = PRESETS[args.preset]
    settings = {
        name: getattr(args, name) if getattr(args, name) is not None else default for name, default in preset.items()
    }
    if settings["size"] < 16 or settings["size"] % 16:
        raise ValueError(f"--size {settings['size']} must be a multiple of 16 (latent size/8, 2×2 patches)")
    for name in ("batch", "pool_prompts", "sample_steps"):
        if settings[name] < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be ≥ 1, got {settings[name]}")
    if args.steps < 1 or args.warmup < 0:
        raise ValueError(f"--steps must be ≥ 1 and --warmup ≥ 0, got {args.steps} and {args.warmup}")
    return settings


def step_config(settings: dict, size: int, rank: int) -> EraseConfig:
    """The EraseConfig of the measured zerase step at image side `size`: the problem settings, unbounded steps, no
    stationarity steps."""
    latent = size // 8
    return EraseConfig(
        method="zerase",
        steps=100_000,
        rank=rank,
        latent_size=(latent, latent),
        stationarity_every=0,
        **{field: settings[name] for name, field in ERASE_FIELDS.items()},
    )


def perf_device(name: str) -> torch.device:
    """The torch device `--device` names, refused with the fix when this torch cannot use it."""
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(
            f"--device {name}: CUDA is not available to this torch {torch.__version__} "
            f"(built with CUDA {torch.version.cuda}); use --device cpu"
        )
    if device.type not in ("cpu", "cuda"):
        raise ValueError(f"--device {name}: only cpu and cuda are supported")
    return device
