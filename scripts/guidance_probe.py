"""Issue 18: does the sampler's guidance or step count make the base model's shapes sturdier? Renders the 36 erase
prompts of `anchor_variants.py` (train phrasings, seeds 800000+, three seeds per prompt; `--shape cross`: only the
prompts that state that shape) with the base model, and optionally erasure files, at each "CFG/STEPS" setting, and
prints judge2's detected, other stated attributes and no-object share per setting.

    PYTHONPATH=. python scripts/guidance_probe.py purple 3/20,5/20,2/20,3/40 [--shape cross] [--file F@0.5 ...]
"""

from __future__ import annotations

import argparse
import json

import torch
from variant_sets import erase_items  # scripts/: the erase prompts and seeds of anchor_variants.py

from zerase_core.evaluation.judges import named_nano_judge
from zerase_core.evaluation.metrics import detection_rate, no_object_rate, stated_accuracy
from zerase_core.evaluation.rendering import NanoRenderer, SamplingSettings, erasure_applied
from zerase_core.nano.prompts import attribute_of
from zerase_core.nano.world import NanoWorld

REPEATS = 3  # seeds per prompt, 50,000 apart (anchor_variants.py's reps=3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("concept")
    parser.add_argument("settings", help='comma-separated "CFG/STEPS", e.g. 3/20,5/20')
    parser.add_argument("--shape", help="only the erase prompts that state this shape")
    parser.add_argument("--file", action="append", default=[], help="an erasure file and strength, PATH@STRENGTH")
    args = parser.parse_args()
    for spec in args.file:
        if "@" not in spec:
            parser.error(f"--file {spec!r} needs a strength: PATH@STRENGTH, e.g. {spec}@0.5")
    for setting in args.settings.split(","):
        if setting.count("/") != 1:
            parser.error(f"setting {setting!r} must be CFG/STEPS, e.g. 3/20")
    torch.set_num_threads(1)
    world = NanoWorld.load()
    judge = named_nano_judge("judge2", world)
    attribute, value = attribute_of(args.concept)
    items, seeds = erase_items(args.concept, reps=REPEATS, shape=args.shape)
    prompts = [prompt for prompt, _ in items]
    runs = [("base", None, 0.0)] + [(spec, *spec.rsplit("@", 1)) for spec in args.file]
    for setting in args.settings.split(","):
        cfg, steps = setting.split("/")
        renderer = NanoRenderer(world, SamplingSettings(steps=int(steps), cfg=float(cfg)))
        for label, path, strength in runs:
            if path is None:
                images = renderer.render(prompts, seeds)
            else:
                with erasure_applied(world, path, float(strength)):
                    images = renderer.render(prompts, seeds)
            verdicts = judge.verdicts(images)
            other, _ = stated_accuracy(verdicts, [expected for _, expected in items], attribute)
            row = {
                "cfg": float(cfg),
                "steps": int(steps),
                "run": label,
                "images": len(verdicts),
                "detected": round(detection_rate(verdicts, attribute, value), 3),
                "other": round(other, 3),
                "no_object": round(no_object_rate(verdicts), 3),
            }
            print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
