"""The main job on the bundled nano model: erase a concept with Z-Erase, then compare before/after (demo.png).

Rows are prompts (the concept, its synonym, other shapes); columns are the original model and the erased one;
each image is labelled with the nano evaluator's verdict.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch

from .common.grid import labelled_grid, save_png
from .common.progress import PhaseCounter, Progress
from .engine.erase_config import EraseConfig
from .nano.erasure_runs import attach_file, erase
from .nano.prompts import evaluation_sets
from .nano.verdicts import verdicts
from .nano.world import NanoWorld


def demo_prompts(concept: str) -> list[str]:
    """Three prompts with the concept (different colours/patterns/backgrounds) and three without."""
    erase_items, keep_items = evaluation_sets(concept)
    return [prompt for prompt, _ in erase_items[5::23][:3]] + [prompt for prompt, _ in keep_items[7::61][:3]]


def _label(prompt: str, verdict: dict[str, str]) -> str:
    return f"{prompt} -> judge: {verdict['colour']} {verdict['pattern']} {verdict['shape']}"


def run_demo(
    out: Path, erasure_out: Path, concept: str = "star", seed: int = 0, progress: Progress | None = None
) -> tuple[Path, float]:
    """`progress(phase, done, total)` follows each phase: x_t pool, teacher cache, train, strength search, compare."""
    started = time.monotonic()
    prompts = demo_prompts(concept)  # validates the concept before anything is loaded
    world = NanoWorld.load()
    erase(world, [concept], EraseConfig(seed=seed), erasure_out, progress=progress)
    comparing = PhaseCounter(progress, "compare", 3)  # original images, erased images, the judge's verdicts
    seeds = [seed + index for index in range(len(prompts))]
    before = world.generate(prompts, seeds)
    comparing.advance()
    edit, info = attach_file(world, erasure_out)
    try:
        after = world.generate(prompts, seeds)
    finally:
        edit.detach()
    comparing.advance()
    images = torch.stack([image for pair in zip(before, after, strict=True) for image in pair])
    found = verdicts(images, world.evaluator)
    comparing.advance()
    labels = [_label(prompts[index // 2], verdict) for index, verdict in enumerate(found)]
    titles = ["original", f"erased '{concept}' (strength {info.recommended_strength:g})"]
    sheet = labelled_grid(images, labels, columns=2, scale=3, column_titles=titles, label_lines=3)
    return save_png(sheet, out), time.monotonic() - started
