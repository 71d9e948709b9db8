"""Vocabulary, captions and renderer of the nano world."""

import numpy
import pytest
import torch

from zerase_core.nano import none_renders, render
from zerase_core.nano.vocab import (
    ATTRIBUTES,
    EMPTY_ID,
    MAX_LENGTH,
    PAD_ID,
    TEMPLATES,
    VOCABULARY,
    UnknownWordError,
    caption,
)


def test_every_caption_round_trips_through_the_tokenizer():
    rng = numpy.random.default_rng(0)
    for _ in range(200):
        scene = render.random_scene(rng)
        for index in range(len(TEMPLATES)):
            text = caption(scene, index, rng, synonym_rate=0.5)
            ids = VOCABULARY.encode(text)
            assert len(ids) <= MAX_LENGTH
            assert VOCABULARY.decode(ids) == text


def test_empty_prompt_is_the_empty_token_and_padding_is_dropped():
    assert VOCABULARY.encode("") == [EMPTY_ID]
    assert VOCABULARY.decode([EMPTY_ID]) == ""
    padded = VOCABULARY.encode_padded("red circle")
    assert len(padded) == MAX_LENGTH and padded[2:] == [PAD_ID] * (MAX_LENGTH - 2)
    assert VOCABULARY.decode(padded) == "red circle"


def test_commas_are_split_off_and_case_is_ignored():
    assert VOCABULARY.encode("Red Circle, white background") == VOCABULARY.encode("red circle , white background")


def test_unknown_words_are_named_with_the_allowed_list():
    with pytest.raises(UnknownWordError) as error:
        VOCABULARY.encode("a red hexagon on a teal background")
    message = str(error.value)
    assert "'hexagon'" in message and "'teal'" in message and "circle" in message


def test_too_long_prompt_is_rejected():
    with pytest.raises(ValueError, match="MAX_LENGTH"):
        VOCABULARY.encode(" ".join(["red"] * (MAX_LENGTH + 1)))


def test_synonyms_have_their_own_distinct_ids():
    ids = [VOCABULARY.word_id(word) for values in ATTRIBUTES.values() for words in values.values() for word in words]
    assert len(set(ids)) == len(ids)
    assert VOCABULARY.word_id("disc") != VOCABULARY.word_id("circle")


def test_plain_pattern_may_be_left_out_without_dangling_commas():
    scene = render.Scene("circle", "red", "plain", "white")
    texts = {caption(scene, index, numpy.random.default_rng(seed), synonym_rate=0.0) for index in range(5) for seed in range(20)}
    assert "red circle , white background" in texts
    assert "white background , a red circle" in texts
    assert all(" , ," not in text and not text.endswith(",") for text in texts)
    assert caption(scene, 0) == "a plain red circle on a white background"


@pytest.mark.parametrize("size", [64, 96])
def test_render_size_dtype_and_centre_colour(size):
    rng = numpy.random.default_rng(1)
    for shape in render.SHAPES:
        for pattern in render.PATTERNS:
            scene = render.random_scene(rng, shape=shape, pattern=pattern)
            image = render.render(scene, size)
            assert image.shape == (size, size, 3) and image.dtype == numpy.uint8
            x, y = (int(value * size) for value in scene.centre)
            centre = image[y - 1 : y + 1, x - 1 : x + 1].reshape(-1, 3).astype(int)
            expected = numpy.array(render.COLOUR_RGB[scene.colour])
            assert numpy.abs(centre - expected).max() <= 3, (scene, centre)
            centred = render.render(render.Scene(shape, scene.colour, pattern, scene.background, extent=0.6), size)
            background = numpy.array(render.BACKGROUND_RGB[scene.background])
            assert numpy.abs(centred[0, 0].astype(int) - background).max() <= 1


def test_shape_colours_are_distinct_from_each_other_and_from_backgrounds():
    palette = list(render.COLOUR_RGB.values()) + list(render.BACKGROUND_RGB.values())
    for first in range(len(palette)):
        for second in range(first + 1, len(palette)):
            assert numpy.abs(numpy.subtract(palette[first], palette[second])).sum() >= 80


@pytest.mark.parametrize("size", [48, 72, 100])
def test_unsupported_sizes_are_rejected(size):
    with pytest.raises(ValueError, match="multiple of 16"):
        render.render(render.Scene("circle", "red", "plain", "white"), size)


def test_scene_validation_names_the_bad_value():
    with pytest.raises(ValueError, match="hexagon"):
        render.Scene("hexagon", "red", "plain", "white")
    with pytest.raises(ValueError, match="outside the image"):
        render.Scene("circle", "red", "plain", "white", extent=0.8, centre=(0.2, 0.5))


def test_none_renders_have_no_shape_and_a_known_background():
    rng = numpy.random.default_rng(2)
    for _ in range(40):
        image, labels = none_renders.render_none(rng)
        assert image.shape == (64, 64, 3) and image.dtype == numpy.uint8
        assert labels["shape"] == render.NONE
        assert labels["background"] in none_renders.BACKGROUNDS


def test_render_batch_follows_the_image_convention():
    rng = numpy.random.default_rng(3)
    batch = render.render_batch([render.random_scene(rng) for _ in range(4)], 64)
    assert batch.shape == (4, 3, 64, 64) and batch.dtype == torch.float32
    assert 0.0 <= batch.min() and batch.max() <= 1.0
    images, labels = none_renders.render_mixed(rng, 16, 64, none_fraction=0.5)
    assert images.shape == (16, 3, 64, 64) and len(labels) == 16


def test_rendering_is_deterministic_given_the_seed():
    first = none_renders.render_mixed(numpy.random.default_rng(4), 8)[0]
    second = none_renders.render_mixed(numpy.random.default_rng(4), 8)[0]
    assert torch.equal(first, second)
