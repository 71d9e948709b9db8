"""`python -m zerase_core bench --flops`: the work of one training step, counted, per stage and per path (issue 16).

Every count drives the real engine: `EraseTrainer` builds its x_t pool and teacher cache and runs `train_step()`
on a real `ZImageDiT` (or ComfyUI's NextDiT), whose weights and activations are meta tensors (`meta_count.py`): shapes
only, no memory, so the full Z-Image-Turbo config counts on any CPU. `torch.utils.flop_counter.FlopCounterMode`
counts the matmul and attention FLOPs of every op the step dispatches (forward, checkpoint recomputation, backward);
elementwise work (norms, activations, AdamW) is not counted, nor is the text encoder.

Paths:
  cli      the core model is the denoiser (`python -m zerase_core erase`): kept refiner segments, probe prefix
  device   the same engine with the model on its device (`erase --device cuda`, `bench --perf --device cuda`): the
           pool delivers rows to the model's device, so it counts as cli does (a check that it takes the same path)
  comfyui  ComfyUI's NextDiT through `nodes/comfy_bridge` (ZEraseTrain); needs ComfyUI (COMFYUI_PATH and its python)

Checkpointing: each path is counted for each memory budget (`--memory-gib`, turbo default 24 GiB) with the joint
blocks that its auto policy checkpoints within it (the fewest whose predicted peak fits: memory_policy's
checkpoint_blocks_within, comfy_checkpoint_blocks); each checkpointed block costs its forward again in the backward.

Stages (`FLOP_STAGES`): student_forward (the erase-prompt forward with attention capture; under a fused forward all
three stacked forwards), preserve (the ∅ and anchor forwards of L_pr when they run separately), backward (all of
it, checkpoint recomputation included), probe (the λ probe after the step), teacher (teacher velocities: cache
reads), sampling, optimizer, other. A count is in forward-equivalents: FLOPs ÷ the frozen forward of the core model
at the same size with batch 1. The first step (which runs the probe twice and fills one-time caches) is not counted.
"""

from __future__ import annotations

import sys
from typing import ClassVar

import torch

from ..engine import memory_model, memory_policy
from ..model.dit import ZImageDiT
from .meta_count import META, Counter, MetaTensors, to_meta
from .meters import StageClock
from .perf_options import DTYPES, add_perf_arguments, dit_config, perf_settings, step_config
from .perf_steps import BenchTrainer
from .synthetic import SyntheticConditioner

PATHS = ("cli", "device", "comfyui")
FLOP_STAGES = ("student_forward", "preserve", "backward", "probe", "teacher", "sampling", "optimizer", "other")
DEFAULT_SIZES = {"turbo": (512, 1024), "nano": (64,)}
DEFAULT_MEMORY_GIB = 24.0  # a 24 GB card: the budget of the final line when --memory-gib is not given (turbo)


class FlopTrainer(BenchTrainer):
    """BenchTrainer whose clock reads a FLOP counter; L_pr's own forwards are their own stage (`preserve`)."""

    stage_names: ClassVar[dict[str, str]] = {}


def count_step(make_trainer, warmup: int = 1) -> dict:
    """{stage: FLOPs} of one `train_step()` after `warmup` uncounted steps; `make_trainer(clock)` builds the trainer
    (under MetaTensors) and returns it with its adapters on meta."""
    counter = Counter()
    clock = StageClock(reading=counter.total)
    trainer = make_trainer(clock)
    for _ in range(warmup):
        trainer.train_step()
    with counter.mode:
        trainer.train_step()
    stages = {stage: int(trainer.step_stages.get(stage, 0)) for stage in FLOP_STAGES}
    return {"stages": stages, "step": counter.total(), "trainer": trainer, "fused": trainer._fused()}


def budget_problem(config, settings: dict, size: int, rank: int) -> memory_model.Problem:
    """The memory model's problem of the counted step on a GPU (pool and caches on the device)."""
    return memory_model.Problem(
        config=config,
        image_size=size,
        caption_tokens=settings["caption_tokens"] or 16,
        batch=settings["batch"],
        rank=rank,
        weight_bytes=DTYPES[settings["dtype"]].itemsize,
        pool=(settings["pool_prompts"], settings["sample_steps"]),
        build_batch=settings["build_batch"] or 64,
        device="cuda",
        store_on_device=True,
    )


def checkpoint_choices(args, config, settings: dict, size: int, comfyui: bool = False) -> dict[str, int]:
    """{budget label: checkpointed joint blocks}: per --memory-gib budget the auto policy's choice (`comfyui`:
    ZEraseTrain's); else all or no blocks as --checkpointing says; else the turbo default budget or the preset's."""
    budgets = getattr(args, "memory_gib", None)
    if budgets is None and args.checkpointing is None and settings["checkpointing"] and args.preset == "turbo":
        budgets = [DEFAULT_MEMORY_GIB]
    if budgets is None:
        return {"all" if settings["checkpointing"] else "none": config.n_layers if settings["checkpointing"] else 0}
    problem = budget_problem(config, settings, size, args.rank)
    ours = (problem.weight_bytes, problem.batch, problem.rank, problem.caption_tokens)  # ZEraseTrain's plan: vram.plan
    return {
        f"{gib:g}": memory_policy.comfy_checkpoint_blocks(config, size, *ours, gib * memory_model.GB)
        if comfyui
        else memory_policy.checkpoint_blocks_within(problem, gib * memory_model.GB)
        for gib in budgets
    }


def core_path_counts(config, settings: dict, size: int, rank: int, paths, prompts, blocks: int | None = None) -> dict:
    """Counts of the `cli` and `device` paths (those in `paths`) on one meta ZImageDiT with `blocks` checkpointed
    joint blocks (None: the settings' all or none), and `forward`: its frozen forward at this size with batch 1 and a
    caption of the erase prompt (the unit of every count)."""
    results: dict = {}
    if blocks is None:
        blocks = config.n_layers if settings["checkpointing"] else 0
    with MetaTensors():
        model = ZImageDiT(config, device=META, dtype=DTYPES[settings["dtype"]]).eval().requires_grad_(False)
        model.gradient_checkpointing, model.checkpointed_layers = blocks > 0, blocks
        conditioner = SyntheticConditioner(config.cap_feat_dim, settings["caption_tokens"] or 16)
        results["forward"] = reference_forward_flops(model, conditioner, size, prompts.erase[0])
        erase = step_config(settings, size, rank)
        pool = None
        for path in [path for path in ("cli", "device") if path in paths]:
            # both run the core model as the denoiser: "device" builds its own pool, on the model's device (meta)
            def make(clock, pool=pool if path == "cli" else None):
                trainer = FlopTrainer(
                    model,
                    conditioner,
                    prompts,
                    erase,
                    in_channels=config.in_channels,
                    shift=config.shift,
                    clock=clock,
                    build_batch=settings["build_batch"],
                    pool=pool,
                )
                to_meta(trainer.adapters)
                return trainer

            counted = count_step(make)
            trainer = counted.pop("trainer")
            counted["segments"] = trainer._keeps_segments()
            counted["blocks"] = blocks
            trainer.adapters.detach()
            results[path] = counted
    return results


def reference_forward_flops(denoise, conditioner, size: int, prompt: str, in_channels: int = 16) -> int:
    """FLOPs of one no-grad forward of `denoise` at `size`² with `prompt`, batch 1 (the unit of the counts)."""
    latent = size // 8
    features, lengths = conditioner.encode([prompt])
    counter = Counter()
    with torch.no_grad(), counter.mode:
        denoise(torch.zeros(1, in_channels, latent, latent), torch.tensor([0.5]), features, lengths)
    return counter.total()


def run_flops(args, comfyui=None) -> dict:
    """Count every requested path at every size; print the table and the final line; return the results.

    `comfyui(config, settings, size, rank, prompts)` counts the comfyui path; the core never imports ComfyUI, so it
    is given by scripts/comfy_flops.py (run with ComfyUI's python) and the path is reported as skipped otherwise.
    """
    from ..nano.prompts import training_prompt_set

    if args.threads:
        torch.set_num_threads(args.threads)
    args.preset = args.preset or "turbo"
    config = dit_config(args)
    sizes = args.sizes or ([args.size] if args.size else DEFAULT_SIZES[args.preset])
    paths = PATHS if not args.paths else tuple(name.strip() for name in args.paths.split(","))
    unknown = sorted(set(paths) - set(PATHS))
    if unknown:
        raise ValueError(f"--paths: unknown paths {unknown}; choose from {list(PATHS)}")
    prompts = training_prompt_set(["star"])
    results = {
        "preset": args.preset,
        "dit": config.to_dict(),
        "torch": torch.__version__,
        "rank": args.rank,
        "counted": "matmul and attention FLOPs (torch.utils.flop_counter), one steady-state train_step",
        "sizes": {},
        "skipped": {},
    }
    if "comfyui" in paths and comfyui is None:
        results["skipped"]["comfyui"] = (
            "counted by scripts/comfy_flops.py with ComfyUI's python (zerase_core never imports ComfyUI)"
        )
    for size in sizes:
        settings = perf_settings(_with_size(args, size))
        results["settings"] = {
            key: settings[key]
            for key in ("batch", "dtype", "checkpointing", "pool_prompts", "sample_steps", "cfg", "caption_tokens")
        }
        choices, ours = (checkpoint_choices(args, config, settings, size, comfy) for comfy in (False, True))
        per_budget = {}
        for label, blocks in choices.items():
            counts = core_path_counts(config, settings, size, args.rank, paths, prompts, blocks)
            if "comfyui" in paths and comfyui is not None:
                comfy = {**settings, "checkpointed_blocks": ours[label]}
                counts.update(comfyui(config, comfy, size, args.rank, prompts))
            per_budget[label] = _in_forwards(counts)
        first = next(iter(per_budget))  # the final line's budget: the first given
        results["sizes"][str(size)] = {**per_budget[first], "budget": first, "budgets": per_budget}
    results["budget"] = next(iter(results["sizes"].values()))["budget"] if results["sizes"] else None
    worst = max(
        entry["step_forwards"]
        for per_size in results["sizes"].values()
        for name, entry in per_size.items()
        if name in PATHS
    )
    results["forward_equivalents_per_zerase_step"] = worst
    print(format_flops(results))
    if args.json:
        from ..common.files import atomic_write_json

        atomic_write_json(results, args.json)
        print(f"wrote {args.json}", file=sys.stderr)  # the final line of stdout stays the count
    return results


def _with_size(args, size: int):
    copy = type(args)(**vars(args))
    copy.size = size
    return copy


def _in_forwards(counts: dict) -> dict:
    forward = counts["forward"]
    out = {"forward_flops": forward}
    for name, counted in counts.items():
        if name not in PATHS:
            continue
        entry = {
            "checkpointed_blocks": counted.get("blocks"),
            "kept_segments": counted.get("segments"),
            "step_flops": counted["step"],
            "stages_flops": counted["stages"],
            "fused": counted["fused"],
            "step_forwards": counted["step"] / forward,
            "stages_forwards": {stage: value / forward for stage, value in counted["stages"].items()},
        }
        if "own_forward" in counted:
            entry["own_forward_forwards"] = counted["own_forward"] / forward
        out[name] = entry
    return out


def format_flops(results: dict) -> str:
    dit = results["dit"]
    settings = results.get("settings", {})
    lines = [
        f"ZErase step FLOPs — {results['preset']}: dim {dit['dim']}, {dit['n_layers']} layers, "
        f"{dit['n_refiner_layers']}+{dit['n_refiner_layers']} refiners; batch {settings.get('batch')}, rank "
        f"{results['rank']}, {settings.get('caption_tokens')}-token captions",
        "in forward-equivalents (the frozen forward at the same size, batch 1); matmul + attention FLOPs; memory: the",
        "budget (GiB; or all / none) and the joint blocks checkpointed within it (engine/memory_policy.py, auto)",
        "",
    ]
    shown = [stage for stage in FLOP_STAGES if stage not in ("sampling", "optimizer")]
    header = f"{'size':>6} {'memory':>7} {'ckpt':>5} {'path':<9}{'step':>8}" + "".join(
        f"{stage[:11]:>12}" for stage in shown
    )
    lines += [header, "-" * len(header)]
    for size, per_size in results["sizes"].items():
        for label, counts in per_size.get("budgets", {"": per_size}).items():
            for name in PATHS:
                if name not in counts:
                    continue
                entry = counts[name]
                blocks = entry.get("checkpointed_blocks")
                lines.append(
                    f"{size + '²':>6} {label:>7} {'' if blocks is None else blocks:>5} {name:<9}"
                    f"{entry['step_forwards']:>8.2f}"
                    + "".join(f"{entry['stages_forwards'][stage]:>12.2f}" for stage in shown)
                    + ("   (fused: one stacked forward)" if entry["fused"] else "")
                )
                if "own_forward_forwards" in entry:
                    lines.append(f"{'':>6} {name}: its own frozen forward = {entry['own_forward_forwards']:.3f}")
        lines.append(f"{'':>6} frozen forward = {per_size['forward_flops'] / 1e9:,.1f} GFLOP")
    for name, why in results["skipped"].items():
        lines.append(f"{name}: not counted ({why})")
    budget = results.get("budget")
    lines += [
        "",
        f"largest over the paths and sizes above{f' at memory {budget}' if budget else ''}:",
        f"forward-equivalents per zerase step: {results['forward_equivalents_per_zerase_step']:.2f}",
    ]
    return "\n".join(lines)


def main(argv=None, comfyui=None, prog: str = "python -m zerase_core.bench.perf_flops") -> int:
    import argparse

    parser = argparse.ArgumentParser(prog=prog, description=__doc__.splitlines()[0])
    add_perf_arguments(parser)
    args = parser.parse_args(argv)
    try:
        run_flops(args, comfyui=comfyui)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
