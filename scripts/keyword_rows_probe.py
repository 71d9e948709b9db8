"""Issue 18 diagnostic (not a feature): does an erasure work through the keyword's rows alone? Applies an erasure file
with its delta at every text row (as shipped) and then only at the rows of the concept's word, on the bench's erase
set of the concept (held-out phrasings, 3 images per prompt), and prints judge2's detected and no-object shares.

    PYTHONPATH=. python scripts/keyword_rows_probe.py purple FILE [STRENGTH]      (≈ 1.5 min on one core)

The keyword rows come from the renderer's token-zeroing mask (`suppress_keywords`), which the wrapped forward takes
off the conditional call instead of applying it; the unconditional call has no keyword, so no delta at all there.
"""
import sys

import torch

from zerase_core.adapters.gated import GatedLoRA
from zerase_core.evaluation.concept_sets import concept_sets
from zerase_core.evaluation.judges import named_nano_judge
from zerase_core.evaluation.metrics import detection_rate, no_object_rate
from zerase_core.evaluation.protocol import EvaluationSettings, _render
from zerase_core.evaluation.rendering import NanoRenderer, erasure_applied
from zerase_core.nano.prompts import attribute_of
from zerase_core.nano.world import NanoWorld

torch.set_num_threads(1)
concept, path = sys.argv[1], sys.argv[2]
strength = float(sys.argv[3]) if len(sys.argv) > 3 else 0.5
world = NanoWorld.load()
judge = named_nano_judge("judge2", world)
attribute, value = attribute_of(concept)
settings = EvaluationSettings(seeds=3)
sets = concept_sets(concept, settings.sizes)
state = {"keywords": None, "keyword_rows_only": False}
text_gate, forward = GatedLoRA.gate, world.dit.forward


def keyword_gate(self, device):
    gate = text_gate(self, device)
    if not state["keyword_rows_only"]:
        return gate
    rows = torch.zeros(gate.shape[:2], dtype=torch.bool, device=gate.device)
    if state["keywords"] is not None:
        width = min(state["keywords"].shape[1], rows.shape[1])
        rows[:, :width] = state["keywords"][:, :width]
    return gate & rows.unsqueeze(-1)


def unsuppressed_forward(x, sigma, context, lengths=None, *args, suppress_keys=None, **options):
    state["keywords"] = suppress_keys
    return forward(x, sigma, context, lengths, *args, **options)


GatedLoRA.gate, world.dit.forward = keyword_gate, unsuppressed_forward
renderer = NanoRenderer(world, suppress_keywords=(concept,))
with erasure_applied(world, path, strength):
    for state["keyword_rows_only"] in (False, True):
        verdicts = judge.verdicts(_render(renderer, sets.erase, settings, "erase"))
        rows = "keyword rows only" if state["keyword_rows_only"] else "every text row"
        print(f"{rows}: detected {detection_rate(verdicts, attribute, value):.3f}, "
              f"no object {no_object_rate(verdicts):.3f}", flush=True)
