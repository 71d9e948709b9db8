"""Training-free baselines: the uce-text closed-form edit of `cap_embedder.1` and its reversible WeightDelta."""
from __future__ import annotations

import pytest
import torch
from zerase_fixtures import fresh_dit

from zerase_core.adapters.closed_form import UCE_TARGET, WeightDelta, uce_text
from zerase_core.common.prompts import PromptSet

ONE_PAIR = PromptSet(erase=("a red circle on white background",), keywords=("red",),
                     anchors=("a circle on white background",))
TWO_PAIRS = PromptSet(erase=("a red circle on white background", "a red star on black background"), keywords=("red",),
                      anchors=("a circle on white background", "a star on black background"))


def projected(model, conditioner, prompts):
    """cap_embedder output (B, L, dim) of the prompts: what the text stream starts from."""
    features, _ = conditioner.encode(prompts)
    with torch.no_grad():
        return model.cap_embedder(features)


def model_output(model, conditioner, prompts, seed=0):
    context, lengths = conditioner.encode(prompts)
    x = torch.randn(len(prompts), 16, 4, 6, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        return model(x, torch.full((len(prompts),), 0.6), context, lengths)


def test_uce_moves_the_keyword_onto_its_guide_and_keeps_the_anchor(word_conditioner):
    model = fresh_dit()
    prompts = ["a red circle on white background", "a circle on white background"]
    before = projected(model, word_conditioner, prompts)
    uce_text(model, word_conditioner, ONE_PAIR).attach(model)
    after = projected(model, word_conditioner, prompts)
    keyword, guide = after[0, 1], before[1, 1]        # "red" and the anchor token at its position ("circle")
    assert (keyword - guide).norm() < 0.1 * (before[0, 1] - guide).norm()
    anchor_change = (after[1, :5] - before[1, :5]).norm(dim=-1) / before[1, :5].norm(dim=-1)
    assert anchor_change.max() < 0.01


def test_uce_with_two_guides_moves_the_keyword_to_their_mean(word_conditioner):
    model = fresh_dit()
    prompts = ["a red circle on white", "a circle on white", "a star on black"]
    before = projected(model, word_conditioner, prompts)
    uce_text(model, word_conditioner, TWO_PAIRS).attach(model)
    after = projected(model, word_conditioner, prompts)
    mean_guide = (before[1, 1] + before[2, 1]) / 2
    assert (after[0, 1] - mean_guide).norm() < 0.1 * (before[0, 1] - mean_guide).norm()


def test_a_stronger_regulariser_edits_less(word_conditioner):
    model = fresh_dit()
    norms = [uce_text(model, word_conditioner, ONE_PAIR, lamb=lamb).delta.norm() for lamb in (0.1, 10.0, 1000.0)]
    assert norms[0] > norms[1] > norms[2] > 0


@pytest.mark.parametrize("lamb", [0.0, -1.0])
def test_uce_rejects_a_non_positive_regulariser(lamb, word_conditioner):
    with pytest.raises(ValueError, match=f"got {lamb}"):
        uce_text(fresh_dit(), word_conditioner, ONE_PAIR, lamb=lamb)


def test_the_edit_changes_the_prompt_with_the_keyword(word_conditioner):
    model = fresh_dit()
    prompts = ["a red circle on white background"]
    base = model_output(model, word_conditioner, prompts)
    uce_text(model, word_conditioner, ONE_PAIR).attach(model)
    edited = model_output(model, word_conditioner, prompts)
    assert (edited - base).norm() > 1e-3 * base.norm()


def test_the_edit_leaves_the_image_stream_alone(word_conditioner):
    """ΔW sits on the text-only caption projection: the noise refiner (image tokens only) sees identical inputs."""
    model = fresh_dit()
    seen = []
    model.noise_refiner[-1].register_forward_hook(lambda module, args, output: seen.append(output))
    prompts = ["a red circle on white background"]
    model_output(model, word_conditioner, prompts)
    delta = uce_text(model, word_conditioner, ONE_PAIR).attach(model)
    model_output(model, word_conditioner, prompts)
    assert torch.equal(seen[0], seen[1])
    delta.detach()


def test_attach_detach_restores_the_model_exactly(word_conditioner):
    model = fresh_dit()
    prompts = ["a red circle on white background", "a blue square"]
    base = model_output(model, word_conditioner, prompts)
    delta = uce_text(model, word_conditioner, TWO_PAIRS).attach(model)
    assert not torch.equal(model_output(model, word_conditioner, prompts), base)
    delta.detach()
    assert "forward" not in model.get_submodule(UCE_TARGET).__dict__
    assert torch.equal(model_output(model, word_conditioner, prompts), base)
    assert dict(model.named_parameters()).keys() == dict(fresh_dit().named_parameters()).keys()


def test_strength_zero_equals_base_and_strength_scales_the_delta(word_conditioner):
    model = fresh_dit()
    prompts = ["a red circle on white background", "a blue square"]
    base = model_output(model, word_conditioner, prompts)
    base_projection = projected(model, word_conditioner, prompts)
    delta = uce_text(model, word_conditioner, TWO_PAIRS).attach(model)
    delta.set_strength(0.0)
    assert torch.equal(model_output(model, word_conditioner, prompts), base)
    changes = {}
    for strength in (1.0, 2.0):
        delta.set_strength(strength)
        changes[strength] = projected(model, word_conditioner, prompts) - base_projection
    torch.testing.assert_close(changes[2.0], 2 * changes[1.0], rtol=1e-4, atol=1e-5)
    assert changes[1.0].abs().max() > 1e-3


def test_stacked_edits_detach_in_reverse_order(word_conditioner):
    model = fresh_dit()
    prompts = ["a red circle on white background"]
    base = model_output(model, word_conditioner, prompts)
    first = uce_text(model, word_conditioner, ONE_PAIR).attach(model)
    only_first = model_output(model, word_conditioner, prompts)
    second = WeightDelta(UCE_TARGET, torch.randn(first.delta.shape) * 0.1).attach(model)
    with pytest.raises(RuntimeError, match="reverse order"):
        first.detach()
    second.detach()
    assert torch.equal(model_output(model, word_conditioner, prompts), only_first)
    first.detach()
    assert torch.equal(model_output(model, word_conditioner, prompts), base)


def test_a_delta_of_the_wrong_shape_is_refused():
    model = fresh_dit()
    linear = model.get_submodule(UCE_TARGET)
    with pytest.raises(ValueError, match=r"\(3, 4\)"):
        WeightDelta(UCE_TARGET, torch.zeros(3, 4)).attach(model)
    assert "forward" not in linear.__dict__


def test_export_uses_the_zerase_prefix(word_conditioner):
    delta = uce_text(fresh_dit(), word_conditioner, ONE_PAIR)
    tensors = delta.export_tensors()
    assert list(tensors) == [f"zerase.{UCE_TARGET}.delta"]
    assert torch.equal(tensors[f"zerase.{UCE_TARGET}.delta"], delta.delta.detach())
