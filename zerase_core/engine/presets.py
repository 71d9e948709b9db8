"""EraseConfig's choices and the presets per concept kind (ε, qkv slices, L_attn weight), with the runs behind them.

`EraseConfig.with_kind` applies the presets; `EraseConfig.__post_init__` checks the choices.
"""

INFERENCE_METHODS = ("token-zeroing", "uce-text")
# Z-Erase §7: tighter preservation for diffuse concepts, looser for concrete ones. "attribute": a property drawn on
# an object (a colour) rather than the object itself.
EPSILON_PRESETS = {
    "nudity": 1e-3,
    "violence": 1e-3,
    "style": 1e-3,
    "object": 1e-2,
    "abstract": 1e-2,
    "identity": 1e-2,
    "attribute": 1e-2,
}
DEFAULT_SLICES = ("q", "k")
# qkv rows adapted per concept kind where they differ from Q+K (`EraseConfig.with_kind`). Attributes also adapt V
# (the paper's W ∈ {W_Q, W_K, W_V}): a Q/K delta can only move attention between text tokens, and in a caption every
# token carries some of the colour (the text encoder mixes them), so neighbouring colours did not separate. Nano,
# 2026-11-28, 200 steps, evaluation set at strength 1.0: orange Acc_e 0.44 → 0.00, yellow 0.18 → 0.00, red 0.10 →
# 0.00, keep ratios ≥ 0.96 (docs/erasure-acceptance.md).
SLICE_PRESETS = {"attribute": ("q", "k", "v")}
LAMBDA_MODES = ("adaptive", "fixed")
# What L_erase regresses the student's v(x_t, c_er) onto (the frozen teacher's velocities at the same x_t):
#   "empty":  v(∅) − η·(v(c_er) − v(∅))   ESD with the empty prompt as reference (the paper). On nano it erased by
#             deleting the picture: v(∅) carries none of what the erase prompt asks for (issue 18: after `dotted`,
#             75 % of dotted prompts drew no object).
#   "anchor": v(c_t) − η·(v(c_er) − v(c_t))  ESD with the *mapped* prompt c_t as reference (PromptSet.targets: the
#             erase prompt with the concept replaced by an anchor, or removed), as in concept ablation plus ESD's
#             push away from the concept: everything else the prompt asks for stays in the target.
# None = "anchor" for zerase, "empty" for the baselines (their papers' targets).
ERASE_TARGETS = ("empty", "anchor")
ANCHOR_ETA = 1.0
# η of the anchor target per kind where it differs from ANCHOR_ETA: colours push away from the concept by half. The
# push itself costs shapes for some colours (the target alone, sampled before training: green → orange at η = 1
# draws 15.7 % no object, at 0.5 6.5 %, at 0.25 3.7 %; base 4.6 %). Nano, 2026-12-07, the bench's six colours, both
# training seeds, 108 images per value on held-out phrasings (judge2): values meeting every target 7 → 9 of 12; green
# 4.6 / 11.1 % no object → 1.9 / 5.6 %, blue 6.5 / 5.6 % → 3.7 / 4.6 %; purple misses either way (9.3 / 8.3 % → 7.4 /
# 6.5 %, and at seed 1 7.4 % still purple, 3.7 % before). docs/erase-and-keep.md, *Smaller and later pushes*.
ANCHOR_ETA_PRESETS = {"attribute": 0.5}
# Where the "anchor" target is taken: "mapped", the mapped prompt's trajectory from the same seed (concept ablation's
# x_t; the default), or "erase", the erase prompt's own. Nano, 2026-12-06, 24 evaluation prompts (nano evaluator): red
# → blue on the erase states lost the object (42 % no-object images at strength 0.5; base 6 %), on the mapped states
# it turned blue with 8 % at 0.75; square → circle kept more shapes on the mapped states (at 0.75: 29 % no object and
# 12 % still square, against 33 % and 50 % on the erase states).
TARGET_STATES = ("erase", "mapped")
# L_attn (suppress image→keyword attention) per kind under the anchor target, where it differs from the config's:
# shapes drop it, because the keyword must keep its attention to carry the mapped shape (square → circle at 0.75:
# 29 % no object and 12 % square without it; the bench with it: 67 % no object, judge2).
ANCHOR_ATTENTION_PRESETS = {"object": 0.0}
# qkv rows per kind under the anchor target, where they differ from SLICE_PRESETS: shapes also adapt V. A Q/K delta
# at the text rows can only move attention away from the keyword, whose values still say "square": the images lost
# the old shape by turning into shapeless blobs. With V the keyword's values carry the mapped shape. Nano, 2026-12-07,
# 36 erase prompts in train phrasings, strength 0.75 (nano evaluator / judge2): square → circle 0 % square, 8 % / 22 %
# no object (base 6 % / 6 %); star → circle 0 % star, 6 % / 19 % no object (base 33 % / 36 %); with Q+K only the
# bench had 64 % and 58 % no object (judge2). Patterns ("style") too: plain → striped must draw stripes that no other
# token asks for (Q+K+V at 0.75: 0 % / 6 % plain, no more no-object images than the base; with Q+K the bench left
# 11 % plain at 1.5); striped and dotted → plain keep the base's share either way (Q+K+V: 17 % / 22 % and 19 % / 22 %,
# base 17 % / 22 % and 22 % / 25 %). docs/erase-and-keep.md.
ANCHOR_SLICE_PRESETS = {"object": ("q", "k", "v"), "style": ("q", "k", "v")}
