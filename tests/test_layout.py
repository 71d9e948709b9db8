"""TokenLayout: row kinds and masks of every block family, computed from shapes (never guessed from lengths)."""
from __future__ import annotations

import pytest
import torch

from zerase_core.model.layout import (
    BATCH_PAD,
    FAMILIES,
    IMAGE,
    IMAGE_PAD,
    TEXT,
    TEXT_PAD,
    TokenLayout,
    active_layout,
    current_layout,
)


def ceil_to(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


def expected_rows(length: int, text_span: int, latent_hw, patch: int, pad: int) -> dict[str, list[int]]:
    """Row kinds of one sample, written out from the layout rules of the module docstring."""
    padded = ceil_to(length, pad)
    tokens = -(-latent_hw[0] // patch) * -(-latent_hw[1] // patch)
    text = [TEXT] * length + [TEXT_PAD] * (padded - length) + [BATCH_PAD] * (text_span - padded)
    image = [IMAGE] * tokens + [IMAGE_PAD] * (ceil_to(tokens, pad) - tokens)
    return {"context_refiner": text, "noise_refiner": image, "layers": text + image}


CASES = [
    # (caption lengths, latent H×W, patch, pad multiple)
    ((7,), (8, 12), 2, 32),        # text and image both pad to 32: equal segment lengths
    ((7,), (8, 12), 2, 16),
    ((7,), (8, 12), 2, 8),
    ((7,), (8, 12), 2, 1),
    ((32,), (16, 16), 2, 32),      # exact multiples: no pad rows at all
    ((5,), (7, 9), 2, 8),          # odd latent: patch padding (4×5 grid)
    ((1,), (1, 1), 2, 32),         # smallest inputs
    ((3, 7), (6, 10), 2, 8),       # different lengths, same padded length: no batch padding
    ((3, 11, 7), (5, 7), 2, 8),    # mixed padded lengths: batch padding
    ((3, 11, 7), (5, 7), 2, 1),
    ((9, 40), (8, 12), 2, 32),
    ((6, 2), (9, 9), 3, 16),       # patch 3
]


@pytest.mark.parametrize("lengths, latent_hw, patch, pad", CASES)
def test_kinds_follow_the_layout_rules(lengths, latent_hw, patch, pad):
    layout = TokenLayout.from_shapes(lengths, latent_hw, patch, pad)
    span = max(ceil_to(n, pad) for n in lengths)
    for family in FAMILIES:
        kinds = layout.kinds(family)
        assert kinds.dtype == torch.int8
        assert kinds.shape == (len(lengths), layout.sequence_length(family))
        for row, length in enumerate(lengths):
            assert kinds[row].tolist() == expected_rows(length, span, latent_hw, patch, pad)[family], (family, row)


@pytest.mark.parametrize("lengths, latent_hw, patch, pad", CASES)
def test_masks_partition_the_rows(lengths, latent_hw, patch, pad):
    layout = TokenLayout.from_shapes(lengths, latent_hw, patch, pad)
    for family in FAMILIES:
        kinds = layout.kinds(family)
        text, image = layout.text_mask(family), layout.image_mask(family)
        assert torch.equal(text, (kinds == TEXT) | (kinds == TEXT_PAD))
        assert torch.equal(image, (kinds == IMAGE) | (kinds == IMAGE_PAD))
        assert not (text & image).any()
        # every row is text, image or batch filler
        assert torch.equal(~(text | image), kinds == BATCH_PAD)
        key_mask = layout.key_mask(family)
        if key_mask is not None:
            assert torch.equal(key_mask, kinds != BATCH_PAD)


def test_text_and_image_padding_to_the_same_length_are_told_apart():
    layout = TokenLayout.from_shapes([7], (8, 12), patch_size=2, pad_multiple=32)
    assert layout.sequence_length("context_refiner") == 32
    assert layout.sequence_length("noise_refiner") == 32
    assert layout.sequence_length("layers") == 64
    assert layout.text_span == 32 and layout.image_tokens == 24
    text = [TEXT] * 7 + [TEXT_PAD] * 25
    image = [IMAGE] * 24 + [IMAGE_PAD] * 8
    assert layout.kinds("context_refiner")[0].tolist() == text
    assert layout.kinds("noise_refiner")[0].tolist() == image
    assert layout.kinds("layers")[0].tolist() == text + image
    # the same length, opposite masks
    assert layout.text_mask("context_refiner").all() and not layout.image_mask("context_refiner").any()
    assert layout.image_mask("noise_refiner").all() and not layout.text_mask("noise_refiner").any()


@pytest.mark.parametrize("latent_hw, patch, grid", [((7, 9), 2, (4, 5)), ((5, 5), 2, (3, 3)), ((1, 3), 2, (1, 2)),
                                                     ((10, 11), 3, (4, 4)), ((8, 8), 2, (4, 4))])
@pytest.mark.parametrize("pad", [32, 16, 8, 1])
def test_odd_latents_round_the_grid_up(latent_hw, patch, grid, pad):
    layout = TokenLayout.from_shapes([4], latent_hw, patch, pad)
    assert layout.grid == grid
    tokens = grid[0] * grid[1]
    kinds = layout.kinds("noise_refiner")[0]
    assert int((kinds == IMAGE).sum()) == tokens
    assert int((kinds == IMAGE_PAD).sum()) == ceil_to(tokens, pad) - tokens
    assert layout.image_span % pad == 0


@pytest.mark.parametrize("lengths, pad", [((3, 11, 7), 8), ((3, 11, 7), 1), ((1, 33), 32), ((9, 2, 17, 16), 16)])
def test_select_is_the_per_sample_layout(lengths, pad):
    layout = TokenLayout.from_shapes(lengths, (6, 10), 2, pad)
    assert layout.has_batch_padding
    for index, length in enumerate(lengths):
        alone = TokenLayout.from_shapes([length], (6, 10), 2, pad)
        assert layout.select(index) == alone
        # dropping the batch filler from the batched row gives the sample's own row
        for family in FAMILIES:
            row = layout.kinds(family)[index]
            assert torch.equal(row[row != BATCH_PAD], alone.kinds(family)[0]), family
        assert alone.key_mask("layers") is None


@pytest.mark.parametrize("lengths, pad", [((5,), 8), ((5, 5, 5), 8), ((3, 7), 8), ((9, 30), 32), ((4, 4), 1)])
def test_key_mask_is_none_without_batch_padding(lengths, pad):
    layout = TokenLayout.from_shapes(lengths, (4, 6), 2, pad)
    assert not layout.has_batch_padding
    for family in FAMILIES:
        assert layout.key_mask(family) is None


def test_key_mask_masks_only_batch_filler():
    layout = TokenLayout.from_shapes([3, 11], (4, 6), 2, 8)    # text spans 8 and 16
    assert layout.key_mask("noise_refiner") is None
    for family in ("context_refiner", "layers"):
        mask = layout.key_mask(family)
        assert mask[1].all()
        assert mask[0].tolist()[:16] == [True] * 8 + [False] * 8
        assert mask[0, 16:].all()


@pytest.mark.parametrize("build, value", [
    (lambda: TokenLayout((), (2, 2), 8), "at least one sample"),
    (lambda: TokenLayout((3, 0), (2, 2), 8), "(3, 0)"),
    (lambda: TokenLayout((-2,), (2, 2), 8), "(-2,)"),
    (lambda: TokenLayout((3,), (0, 2), 8), "(0, 2)"),
    (lambda: TokenLayout((3,), (2, -1), 8), "(2, -1)"),
    (lambda: TokenLayout((3,), (2, 2), 0), "got 0"),
    (lambda: TokenLayout((3,), (2, 2), -8), "got -8"),
    (lambda: TokenLayout.from_shapes([4, 0], (8, 8), 2, 8), "(4, 0)"),
    (lambda: TokenLayout.from_shapes([4], (8, 8), 2, 0), "got 0"),
    (lambda: TokenLayout.from_shapes([4], (0, 12), 2, 8), "got (0, 6)"),   # the 0×6 token grid
])
def test_invalid_layouts_raise_with_the_value(build, value):
    with pytest.raises(ValueError) as error:
        build()
    assert value in str(error.value)


@pytest.mark.parametrize("patch", [0, -2])
def test_from_shapes_rejects_a_non_positive_patch_size(patch):
    with pytest.raises(ValueError, match=f"patch size must be ≥ 1, got {patch}"):
        TokenLayout.from_shapes([4], (8, 8), patch, 8)


def test_unknown_family_is_rejected_with_its_name():
    layout = TokenLayout.from_shapes([4], (8, 8), 2, 8)
    with pytest.raises(ValueError, match="'refiner'"):
        layout.kinds("refiner")
    with pytest.raises(ValueError, match="'joint'"):
        layout.sequence_length("joint")


def test_active_layout_is_scoped_and_nests():
    outer = TokenLayout.from_shapes([4], (8, 8), 2, 8)
    inner = TokenLayout.from_shapes([9, 2], (4, 4), 2, 8)
    assert current_layout() is None
    with active_layout(outer):
        assert current_layout() is outer
        with active_layout(inner):
            assert current_layout() is inner
        assert current_layout() is outer
    assert current_layout() is None
    with pytest.raises(RuntimeError):
        with active_layout(outer):
            raise RuntimeError("boom")
    assert current_layout() is None


def test_masks_made_under_inference_mode_serve_a_later_backward():
    """ComfyUI samples under inference mode; the cached gate must still work when the same layout trains later."""
    layout = TokenLayout.from_shapes([5], (4, 6), 2, 8)
    with torch.inference_mode():
        first = layout.text_mask("layers")
    assert not first.is_inference()
    hidden = torch.ones(first.shape, requires_grad=True)
    torch.where(layout.text_mask("layers"), hidden, 0.0).sum().backward()
    assert torch.equal(hidden.grad, first.float())
