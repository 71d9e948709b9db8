"""Issue 18 diagnostic (not a feature): can an erasure act only after the picture is laid out, or only while it is
laid out? Applies an erasure file at STRENGTH only at the sampler steps with σ ≤ S (the base model alone above S),
for each S given, on the bench's erase set of the concept (held-out phrasings, 3 images per prompt), and prints
judge2's detected and no-object shares. A spec "EARLY/LATE@S" instead applies strength EARLY at σ > S and LATE at
σ ≤ S (so "S" is "0/STRENGTH@S").

    PYTHONPATH=. python scripts/late_erasure_probe.py purple FILE 0.5 0.9,0.7,0.5      (≈ 1.5 min per S, one core)
    PYTHONPATH=. python scripts/late_erasure_probe.py purple FILE 0.5 0.5/0@0.5,0.5/0.25@0.3
"""
import sys

import torch

from zerase_core.evaluation.concept_sets import concept_sets
from zerase_core.evaluation.judges import named_nano_judge
from zerase_core.evaluation.metrics import detection_rate, no_object_rate
from zerase_core.evaluation.protocol import EvaluationSettings, _render
from zerase_core.evaluation.rendering import NanoRenderer
from zerase_core.nano.erasure_runs import attach_file
from zerase_core.nano.prompts import attribute_of
from zerase_core.nano.world import NanoWorld

torch.set_num_threads(1)
concept, path, strength = sys.argv[1], sys.argv[2], float(sys.argv[3])


def parsed(spec: str) -> tuple[float, float, float]:
    """(strength above S, strength at or below S, S)."""
    if "@" not in spec:
        return 0.0, strength, float(spec)
    pair, limit = spec.split("@")
    early, late = pair.split("/")
    return float(early), float(late), float(limit)


specs = [parsed(spec) for spec in sys.argv[4].split(",")]
world = NanoWorld.load()
judge = named_nano_judge("judge2", world)
attribute, value = attribute_of(concept)
settings = EvaluationSettings(seeds=3)
sets = concept_sets(concept, settings.sizes)
edit, _ = attach_file(world, path, strength)
adapters = list(edit.each())
forward, state = world.dit.forward, {"spec": (0.0, strength, 1.0)}


def late_forward(x, sigma, *args, **options):
    early, late, limit = state["spec"]
    for adapter in adapters:
        adapter.strength = late if float(sigma.flatten()[0]) <= limit else early
    return forward(x, sigma, *args, **options)


world.dit.forward = late_forward
try:
    for state["spec"] in specs:
        early, late, limit = state["spec"]
        verdicts = judge.verdicts(_render(NanoRenderer(world), sets.erase, settings, "erase"))
        print(f"{early:g} above σ {limit}, {late:g} at or below: "
              f"detected {detection_rate(verdicts, attribute, value):.3f}, no object {no_object_rate(verdicts):.3f}",
              flush=True)
finally:
    edit.detach()
