"""Issue 18 diagnostic (not a feature): can an erasure act only after the picture is laid out? Applies an erasure
file at STRENGTH only at the sampler steps with σ ≤ S (the base model alone above S), for each S given, on the
bench's erase set of the concept (held-out phrasings, 3 images per prompt), and prints judge2's detected and
no-object shares.

    PYTHONPATH=. python scripts/late_erasure_probe.py purple FILE 0.5 0.9,0.7,0.5      (≈ 1.5 min per S, one core)
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
limits = [float(limit) for limit in sys.argv[4].split(",")]
world = NanoWorld.load()
judge = named_nano_judge("judge2", world)
attribute, value = attribute_of(concept)
settings = EvaluationSettings(seeds=3)
sets = concept_sets(concept, settings.sizes)
edit, _ = attach_file(world, path, strength)
adapters = list(edit.each())
forward, state = world.dit.forward, {"limit": 1.0}


def late_forward(x, sigma, *args, **options):
    active = float(sigma.flatten()[0]) <= state["limit"]
    for adapter in adapters:
        adapter.strength = strength if active else 0.0
    return forward(x, sigma, *args, **options)


world.dit.forward = late_forward
try:
    for state["limit"] in limits:
        verdicts = judge.verdicts(_render(NanoRenderer(world), sets.erase, settings, "erase"))
        print(f"σ ≤ {state['limit']}: detected {detection_rate(verdicts, attribute, value):.3f}, "
              f"no object {no_object_rate(verdicts):.3f}", flush=True)
finally:
    edit.detach()
