"""The generated nano phrasings: vocabulary-only, distinct, split without overlap, templates in training."""
from zerase_core.nano.phrasings import HELD_OUT, PHRASINGS, TRAIN, fill, phrasings, slots, stated
from zerase_core.nano.vocab import ATTRIBUTES, TEMPLATES, VOCABULARY


def test_every_phrasing_encodes_with_the_nano_vocabulary_and_the_split_is_disjoint():
    assert len(PHRASINGS) == len(set(PHRASINGS)) == 112
    assert set(TEMPLATES) <= set(TRAIN) and set(TRAIN).isdisjoint(HELD_OUT)
    words = {name: values[next(iter(values))][-1] for name, values in ATTRIBUTES.items()}
    for phrasing in PHRASINGS:
        VOCABULARY.encode(fill(phrasing, words))
    kinds = {slots(phrasing) for phrasing in HELD_OUT}
    assert frozenset(ATTRIBUTES) in kinds and len(kinds) >= 4    # all stated, and attributes left out
    orders = {tuple(word for word in phrasing.split() if word.startswith("{")) for phrasing in HELD_OUT}
    assert len(orders) >= 6                                      # other word orders, not one template


def test_phrasings_filter_by_stated_attributes_and_stated_keeps_only_those():
    for phrasing in phrasings("held-out", ("pattern",)):
        assert "{pattern}" in phrasing
    phrasing = next(text for text in HELD_OUT if "{background}" not in text)
    expected = {"shape": "star", "colour": "red", "pattern": "plain", "background": "white"}
    assert "background" not in stated(phrasing, expected) and stated(phrasing, expected)["shape"] == "star"


def test_unknown_split_or_attribute_names_the_choices():
    import pytest
    with pytest.raises(ValueError, match="held-out"):
        phrasings("test")
    with pytest.raises(ValueError, match="shape"):
        phrasings("train", ("size",))
