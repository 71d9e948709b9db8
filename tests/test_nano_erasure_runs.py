"""Nano erasure runs: the strength choice on held-out prompts and multi-concept training prompt sets."""
from __future__ import annotations

import pytest

from zerase_core.nano.scoring import choose_strength


def rows(*values):
    return [{"strength": s, "acc_e": e, "keep_ratio": k, "h": h} for s, e, k, h in values]


@pytest.mark.parametrize("table, expected", [
    # the first strength inside the margin (0.05) wins, even when a weaker one met the plain target
    (rows((0.5, 0.08, 1.0, 0.90), (0.75, 0.02, 0.99, 0.95)), 0.75),
    # nothing inside the margin before the keep ratio broke: the smallest meeting the plain target
    (rows((0.5, 0.30, 1.0, 0.60), (1.0, 0.09, 0.97, 0.88), (1.5, 0.03, 0.80, 0.75)), 1.0),
    # meeting Acc_e only by breaking the keep ratio never counts as passing (here it still has the best H)
    (rows((0.5, 0.40, 1.0, 0.55), (1.0, 0.20, 0.96, 0.76), (1.5, 0.00, 0.90, 0.86)), 1.5),
    # nothing passes: the best mean H
    (rows((0.5, 0.60, 1.0, 0.40), (1.0, 0.30, 0.97, 0.67), (1.5, 0.25, 0.85, 0.60)), 1.0),
])
def test_choose_strength(table, expected):
    assert choose_strength(table, target_acc_e=0.1, keep_ratio=0.95, margin=0.5) == expected


def test_choose_strength_rejects_a_strength_that_deletes_the_picture():
    table = [{"strength": 0.5, "acc_e": 0.09, "keep_ratio": 1.0, "h": 0.9, "no_object_rise": 0.02},
             {"strength": 1.0, "acc_e": 0.00, "keep_ratio": 0.99, "h": 0.99, "no_object_rise": 0.30}]
    assert choose_strength(table, target_acc_e=0.1, keep_ratio=0.95, margin=0.5) == 0.5
    table[1]["no_object_rise"] = 0.05
    assert choose_strength(table, target_acc_e=0.1, keep_ratio=0.95, margin=0.5) == 1.0


def test_multi_concept_prompt_sets_never_show_another_erased_value():
    from zerase_core.nano.prompts import attribute_of, training_prompt_set
    from zerase_core.nano.vocab import ATTRIBUTES, VOCABULARY
    prompts = training_prompt_set(["star", "red"], count=96, seed=3)
    words_of = {value: set(ATTRIBUTES[attribute][value]) for attribute, value in map(attribute_of, ["star", "red"])}
    for index, (erase, anchor) in enumerate(zip(prompts.erase, prompts.anchors)):
        concept = "star" if index % 2 == 0 else "red"
        other = "red" if concept == "star" else "star"
        erase_words, anchor_words = set(VOCABULARY.split(erase)), set(VOCABULARY.split(anchor))
        assert concept in erase_words and not erase_words & words_of[other]
        assert not anchor_words & (words_of["star"] | words_of["red"])
    with pytest.raises(ValueError, match="every colour value"):
        training_prompt_set(list(ATTRIBUTES["colour"]))


def test_colours_are_attributes_and_adapt_v_by_default():
    from zerase_core.engine.erase_config import (
        DEFAULT_SLICES,
        EPSILON_PRESETS,
        EraseConfig,
    )
    from zerase_core.nano.erasure_runs import concept_kind
    assert concept_kind(["red"]) == concept_kind(["star", "orange"]) == "attribute"
    assert concept_kind(["star"]) == "object" and concept_kind(["red", "striped"]) == "style"
    attribute = EraseConfig().with_kind("attribute")
    assert attribute.slices == ("q", "k", "v") and attribute.epsilon_value == EPSILON_PRESETS["attribute"]
    assert attribute.adapter_config().slices == ("q", "k", "v")
    # shapes adapt V under the anchor target (the keyword's values carry the mapped shape); the ESD target keeps Q+K
    assert EraseConfig().with_kind("object").slices == ("q", "k", "v")
    assert EraseConfig(erase_target="empty").with_kind("object").slices == DEFAULT_SLICES
    assert EraseConfig().with_kind("style").slices == ("q", "k", "v")       # patterns too (plain → striped)
    assert EraseConfig(erase_target="empty").with_kind("style").slices == DEFAULT_SLICES
    # slices set to anything but the default are the caller's choice; ε set explicitly stays too
    chosen = EraseConfig(slices=("q", "v"), epsilon=0.005).with_kind("attribute")
    assert chosen.slices == ("q", "v") and chosen.epsilon_value == 0.005


def test_held_out_keep_prompts_leave_out_the_other_erased_values():
    from zerase_core.nano.scoring import held_out_sets
    from zerase_core.nano.vocab import ATTRIBUTES, VOCABULARY
    alone_erase, alone_keep = held_out_sets("star")
    erase, keep = held_out_sets("star", erased=("star", "crimson"))
    assert erase == alone_erase and len(keep) == len(alone_keep)
    assert any(expected["colour"] == "red" for _, expected in alone_keep)
    red_words = set(ATTRIBUTES["colour"]["red"])
    assert all(expected["colour"] != "red" and not set(VOCABULARY.split(prompt)) & red_words for prompt, expected in keep)
    # the same attribute: erasing red and green together keeps neither in red's keep prompts
    _, keep = held_out_sets("red", erased=("red", "green"))
    assert {expected["colour"] for _, expected in keep} == set(ATTRIBUTES["colour"]) - {"red", "green"}


def test_training_prompts_use_only_train_phrasings_and_map_the_concept_to_its_anchor():
    from zerase_core.nano.phrasings import HELD_OUT, TRAIN, fill
    from zerase_core.nano.prompts import (
        ANCHOR_VALUES,
        anchor_value,
        training_prompt_set,
    )
    from zerase_core.nano.vocab import ATTRIBUTES, VOCABULARY
    prompts = training_prompt_set(["circle"], count=96, seed=0)
    assert prompts.targets and len(prompts.targets) == len(prompts.erase)
    words = {name: "{" + name + "}" for name in ATTRIBUTES}
    slot_words = {"{" + name + "}": {word for synonyms in values.values() for word in synonyms}
                  for name, values in ATTRIBUTES.items()}

    def _fits(pattern, caption):
        return len(pattern) == len(caption) and all(
            word in slot_words[slot] if slot in slot_words else word == slot for slot, word in zip(pattern, caption))
    used = set()
    for erase, target in zip(prompts.erase, prompts.targets):
        erase_words, target_words = VOCABULARY.split(erase), VOCABULARY.split(target)
        assert erase_words.count("circle") == 1 and "circle" not in target_words
        # the same caption with "circle" -> "square" (ANCHOR_VALUES), everything else kept
        assert [word if word != "circle" else "square" for word in erase_words] == target_words
        matches = [text for text in TRAIN + HELD_OUT if _fits(VOCABULARY.split(fill(text, words)), erase_words)]
        assert matches and all(text in TRAIN for text in matches), erase
        used.add(matches[0])
    assert len(used) >= 20                      # many phrasings, not one template
    assert ANCHOR_VALUES["shape"]["circle"] == "square"
    assert anchor_value("circle", {("shape", "circle"), ("shape", "square")}) == "triangle"   # never an erased value
    assert anchor_value("red", {("colour", "red")}, "emerald") == "emerald"                  # the user's anchor word
    with pytest.raises(ValueError, match="colour word"):
        anchor_value("red", {("colour", "red")}, "circle")


def test_the_strength_search_goes_on_past_a_no_object_rise_but_not_past_a_broken_keep_ratio():
    from zerase_core.nano.scoring import stops_search
    transition = {"strength": 0.5, "acc_e": 0.6, "keep_ratio": 1.0, "h": 0.4, "no_object_rise": 0.17}
    assert not stops_search(transition, target_acc_e=0.1, keep_ratio=0.95, margin=0.5)
    assert not stops_search({**transition, "acc_e": 0.0}, target_acc_e=0.1, keep_ratio=0.95, margin=0.5)
    assert stops_search({**transition, "acc_e": 0.0, "no_object_rise": 0.0}, target_acc_e=0.1, keep_ratio=0.95,
                        margin=0.5)
    assert stops_search({**transition, "keep_ratio": 0.9}, target_acc_e=0.1, keep_ratio=0.95, margin=0.5)
    # and the choice then takes the stronger, clean strength over the transition
    table = [transition, {"strength": 0.75, "acc_e": 0.0, "keep_ratio": 0.99, "h": 0.99, "no_object_rise": 0.0}]
    assert choose_strength(table, target_acc_e=0.1, keep_ratio=0.95, margin=0.5) == 0.75


def test_the_fallback_strength_counts_the_no_object_images_it_adds():
    # nothing passes: the plain best H (1.5) deletes the picture; H less the no-object rise prefers 0.75
    table = [{"strength": 0.75, "acc_e": 0.25, "keep_ratio": 0.99, "h": 0.72, "no_object_rise": 0.10},
             {"strength": 1.5, "acc_e": 0.12, "keep_ratio": 0.96, "h": 0.82, "no_object_rise": 0.58}]
    assert choose_strength(table, target_acc_e=0.1, keep_ratio=0.95, margin=0.5) == 0.75
