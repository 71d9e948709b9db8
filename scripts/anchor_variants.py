"""Issue 18: one erasure variant on the nano world, measured where variants may be chosen.

Trains `erase` (no strength search) with EraseConfig fields given as key=value, then renders 36 erase prompts in the
*train* phrasings (seeds 800000+; never the held-out phrasings or the bench's seeds) and 36 keep prompts at strength 0
(the base) and each strength, and prints per judge (nano evaluator "ev", judge2 "j2"): the erased value detected,
the other stated attributes, the no-object share and the keep-set accuracy.

    PYTHONPATH=. python scripts/anchor_variants.py NAME CONCEPT [slices=qkv|qk] [anchor=WORD] [attn=W]
        [target_eta=E] [steps=N] [families=layers,context_refiner] [shuffle_probability=P] [strengths=0.75,1]
        [split=train] [reps=R] [shape=cross]

`slices=` is kept as given (no kind preset replaces it); `anchor=` overrides ANCHOR_VALUES for the concept; `attn=`
sets the L_attn weight (no kind preset); `shape=` scores only the erase prompts that state that shape (all of
them: 12 crosses in the train phrasings, so use `reps=` for more images). Files and a JSON go to runs/x18/. One
variant: ≈ 1–2 min of training plus ≈ 30 s per strength on one core.
"""
import json, sys, time, dataclasses
from pathlib import Path
import torch
torch.set_num_threads(1)
from zerase_core.engine import erase_config
from zerase_core.engine.erase_config import EraseConfig
from zerase_core.nano import prompts as nprompts
from zerase_core.nano.world import NanoWorld
from zerase_core.nano.erasure_runs import erase
from zerase_core.nano.prompts import attribute_of, evaluation_sets
from zerase_core.evaluation.concept_sets import phrased, _draw
from zerase_core.evaluation.rendering import NanoRenderer, erasure_applied
from zerase_core.evaluation.metrics import detection_rate, stated_accuracy, no_object_rate, attribute_accuracy
from zerase_core.nano.second_judge import SecondJudge
import variant_sets  # scripts/: the erase prompts and seeds

name, concept, *rest = sys.argv[1:]
opts = dict(r.split("=", 1) for r in rest)
strengths = [float(s) for s in opts.pop("strengths", "0.5,0.75,1,1.25,1.5").split(",")]
split = opts.pop("split", "train"); n = int(opts.pop("n", "36")); reps = int(opts.pop("reps", "1"))
anchor = opts.pop("anchor", None); attn = opts.pop("attn", None); retrain = opts.pop("retrain", "0") == "1"
shape = opts.pop("shape", None)  # only erase prompts that state this shape (e.g. cross: where colour erasures fail)
attribute, value = attribute_of(concept)
if anchor:
    nprompts.ANCHOR_VALUES[attribute][value] = anchor
kw = {}
whole = {field.name for field in dataclasses.fields(EraseConfig) if field.type == "int"}  # steps, rank, pool_prompts…
for k, v in opts.items():
    if k == "slices":
        kw[k] = tuple(v)   # an explicit choice: no kind preset may replace it
        erase_config.SLICE_PRESETS.clear(); getattr(erase_config, "ANCHOR_SLICE_PRESETS", {}).clear()
    elif k == "target_states": kw[k] = v
    elif k == "families": kw[k] = tuple(v.split(","))
    elif k in whole: kw[k] = int(v)
    else: kw[k] = float(v)
if attn is not None:
    erase_config.ANCHOR_ATTENTION_PRESETS.clear()
    kw["attention_weight"] = float(attn)
config = EraseConfig(**kw)
world = NanoWorld.load()
Path("runs/x18").mkdir(parents=True, exist_ok=True)
out = Path(f"runs/x18/{name}-{concept}.safetensors")
t = time.time()
if retrain or not out.exists():
    erase(world, [concept], config, out, choose_strength=False)
train_s = time.time() - t
erase_all, keep_all = evaluation_sets(concept)
seed0 = 800_000 if split == "train" else 1000
erase_items, es = variant_sets.erase_items(concept, n, reps, shape, split)
keep_items = _draw(phrased(keep_all, attribute, every_attribute=True, split=split), 36, seed=12 if split == "train" else 2)
renderer = NanoRenderer(world); j2 = SecondJudge.load()
judges = {"ev": world.evaluator.predict, "j2": j2.predict}
def verdicts(pred, images):
    p = pred(images); return [dict(zip(p, vals)) for vals in zip(*p.values())]
rows = []
ep = [p for p, _ in erase_items]; kp = [p for p, _ in keep_items]  # reps: each erase prompt with `reps` seeds
ks = [seed0 + 10_000 + i for i in range(len(kp))]
for s in [0.0] + strengths:
    with erasure_applied(world, out, s):
        ei = renderer.render(ep, es); ki = renderer.render(kp, ks)
    row = {"strength": s}
    for jn, pred in judges.items():
        ev = verdicts(pred, ei); kv = verdicts(pred, ki)
        other, _ = stated_accuracy(ev, [e for _, e in erase_items], attribute)
        row[jn] = dict(det=round(detection_rate(ev, attribute, value), 3), other=round(other, 3),
                       none=round(no_object_rate(ev), 3), keep=round(attribute_accuracy(kv, [e for _, e in keep_items]), 3))
    rows.append(row)
    print(name, concept, split, json.dumps(row), flush=True)
Path(f"runs/x18/{name}-{concept}-{split}{'-' + shape if shape else ''}.json").write_text(json.dumps({"config": kw, "anchor": anchor, "attn": attn, "train_s": train_s, "rows": rows}))
print("train_s", round(train_s), "config", config.slices, config.attention_weight, config.target_eta_value, flush=True)
