"""Issue 18: what the erasure's *target* draws, before any training.

Samples the base nano model with v = (1 + η)·V(mapped) − η·V(erase prompt), the anchor-mapped target of the
`zerase` default (η = target_eta; the sampler's CFG on each velocity), on the 36 train-phrasing erase prompts of
scripts/anchor_variants.py with the same seeds (× reps), and prints judge2's erased value detected, anchor value
detected, other stated attributes and no-object share. η = −1 draws the erase prompt itself (the base).

    PYTHONPATH=. python scripts/target_draws.py CONCEPT ETAS [REPS] [ANCHOR]   # e.g. green -1,0,1 3  (≈ 3 min)

ANCHOR replaces the concept's anchor value (nano.prompts.ANCHOR_VALUES) for this run. An η written "mE" pushes
away by E times only the per-channel spatial mean of V(erase) − V(mapped) (a uniform shift of the latent: a colour
change without the shape residual), a diagnostic, not a training target. "E@S" pushes by E only at σ ≤ S (the late,
low-noise steps, after the shape is laid out) and draws the mapped prompt's velocity above S; "E^S" the reverse.
"""
import sys, json, torch
torch.set_num_threads(1)
from zerase_core.nano import prompts as nprompts
from zerase_core.nano.world import NanoWorld
from zerase_core.nano.prompts import attribute_of, evaluation_sets
from zerase_core.evaluation.concept_sets import phrased, _draw
from zerase_core.evaluation.rendering import NanoRenderer
from zerase_core.evaluation.metrics import detection_rate, stated_accuracy, no_object_rate
from zerase_core.nano.second_judge import SecondJudge
from zerase_core.model.sampling import guided_velocity, euler_sample, shifted_sigmas

concept = sys.argv[1]; etas = sys.argv[2].split(","); reps = int(sys.argv[3]) if len(sys.argv) > 3 else 1
attribute, value = attribute_of(concept)
anchor = sys.argv[4] if len(sys.argv) > 4 else nprompts.ANCHOR_VALUES[attribute][value]
world = NanoWorld.load(); renderer = NanoRenderer(world); j2 = SecondJudge.load(); s = renderer.sampling
erase_all, _ = evaluation_sets(concept)
items = _draw(phrased(erase_all, attribute, concept, split="train"), 36, seed=11) * reps
items = [(p, e) for p, e in items if concept in p.split()]  # the concept word as written (train phrasings)
prompts = [p for p, _ in items]; count = len(prompts) // reps
seeds = [800_000 + (i // count) * 50_000 + i % count for i in range(len(prompts))]
mapped = [" ".join(anchor if w == concept else w for w in p.split()) for p in prompts]
print(concept, "->", anchor, len(prompts), "prompts, e.g.", prompts[0], "|", mapped[0], flush=True)

@torch.no_grad()
def draw(eta_text, batch=12):
    mean_only = eta_text.startswith("m")
    late, early = ("@" in eta_text), ("^" in eta_text)
    eta_text, _, limit = eta_text.replace("^", "@").partition("@")
    eta = float(eta_text[1:] if mean_only else eta_text)
    limit = float(limit) if limit else 0.0
    out = []
    for start in range(0, len(prompts), batch):
        chunk = slice(start, start + batch)
        erase_context, erase_lengths = world.encode(prompts[chunk])
        mapped_context, mapped_lengths = world.encode(mapped[chunk])
        empty, empty_lengths = world.encode([""] * len(prompts[chunk]))
        erase_v = guided_velocity(world.dit, erase_context, erase_lengths, s.cfg, empty, empty_lengths)
        mapped_v = guided_velocity(world.dit, mapped_context, mapped_lengths, s.cfg, empty, empty_lengths)

        def velocity(x, sigma):
            if eta < 0:  # the erase prompt itself: the base model's picture
                return erase_v(x, sigma)
            toward = mapped_v(x, sigma)
            level = float(torch.as_tensor(sigma).flatten()[0])
            if (late and level > limit) or (early and level <= limit):
                return toward
            push = erase_v(x, sigma) - toward if eta else torch.zeros_like(toward)
            if mean_only:
                push = push.mean(dim=(-2, -1), keepdim=True).expand_as(push)
            return toward - eta * push

        noise = world.noise(seeds[chunk], s.size)
        out.append(world.codec.decode(euler_sample(velocity, noise, shifted_sigmas(s.steps, world.dit.config.shift))))
    return torch.cat(out)


for eta in etas:
    images = draw(eta)
    p = j2.predict(images); ev = [dict(zip(p, vals)) for vals in zip(*p.values())]
    other, _ = stated_accuracy(ev, [e for _, e in items], attribute)
    anchor_rate = detection_rate(ev, attribute, anchor)
    print(json.dumps(dict(eta=eta, det=round(detection_rate(ev, attribute, value), 3), anchor=round(anchor_rate, 3),
                          other=round(other, 3), none=round(no_object_rate(ev), 3))), flush=True)
