"""ZImageDiT: mixed caption lengths, odd latents, the Turbo shape, gradient checkpointing, attention capture and
key suppression, on tiny random models."""
from __future__ import annotations

import dataclasses

import pytest
import torch
from zerase_fixtures import TINY_CONFIG, fresh_dit, randomized_dit

from zerase_core.adapters.closed_form import keyword_suppression
from zerase_core.common.prompts import padded_columns
from zerase_core.model.config import DiTConfig
from zerase_core.model.dit import ZImageDiT, count_parameters
from zerase_core.model.keyword_attention import AttentionCapture
from zerase_core.model.layers import apply_rope
from zerase_core.model.layout import BATCH_PAD


def make_inputs(lengths, latent_hw=(6, 10), seed=0, width=32, channels=16):
    generator = torch.Generator().manual_seed(seed)
    batch = len(lengths)
    x = torch.randn(batch, channels, *latent_hw, generator=generator)
    sigma = torch.rand(batch, generator=generator) * 0.8 + 0.1
    context = torch.randn(batch, max(lengths), width, generator=generator)
    return x, sigma, context, torch.tensor(lengths)


def relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


@pytest.mark.parametrize("pad", [8, 32])
@pytest.mark.parametrize("lengths", [(3, 11, 7), (1, 17), (12, 12, 5)])
def test_mixed_caption_lengths_match_per_sample_runs(pad, lengths):
    model = fresh_dit(dataclasses.replace(TINY_CONFIG, pad_tokens_multiple=pad))
    x, sigma, context, context_lengths = make_inputs(lengths)
    with torch.no_grad():
        batched = model(x, sigma, context, context_lengths)
        for index, length in enumerate(lengths):
            alone = model(x[index:index + 1], sigma[index:index + 1], context[index:index + 1, :length])
            assert relative(batched[index], alone[0]) <= 1e-5, index


def test_padding_beyond_a_caption_is_ignored():
    """Garbage after a sample's caption (other samples' tokens) must not leak into it."""
    model = fresh_dit()
    x, sigma, context, lengths = make_inputs((3, 11))
    noisy = context.clone()
    noisy[0, 3:] = torch.randn_like(noisy[0, 3:]) * 10
    with torch.no_grad():
        assert relative(model(x, sigma, noisy, lengths)[0], model(x, sigma, context, lengths)[0]) <= 1e-6


def test_the_caption_changes_the_output():
    model = fresh_dit()
    x, sigma, context, lengths = make_inputs((5,))
    with torch.no_grad():
        assert relative(model(x, sigma, context + 0.5), model(x, sigma, context)) > 1e-3


@pytest.mark.parametrize("latent_hw", [(5, 7), (3, 3), (1, 1), (9, 4), (8, 12)])
@pytest.mark.parametrize("pad", [8, 32])
def test_output_has_the_latent_shape(latent_hw, pad):
    model = fresh_dit(dataclasses.replace(TINY_CONFIG, pad_tokens_multiple=pad))
    x, sigma, context, lengths = make_inputs((4, 9), latent_hw)
    with torch.no_grad():
        out = model(x, sigma, context, lengths)
    assert out.shape == x.shape
    assert torch.isfinite(out).all()


def test_invalid_context_lengths_raise_with_the_values():
    model = fresh_dit()
    x, sigma, context, _ = make_inputs((4, 6))
    for lengths in ([4, 7], [0, 6], [4]):
        with pytest.raises(ValueError, match=str(lengths).replace("[", r"\[").replace("]", r"\]")):
            model(x, sigma, context, torch.tensor(lengths))


def test_turbo_config_has_the_published_size():
    model = ZImageDiT(DiTConfig.turbo(), device="meta")
    assert len(model.state_dict()) == 453
    assert count_parameters(model) == 6_154_908_736
    assert all(parameter.is_meta for parameter in model.parameters())


def _joint_capture(lengths, columns_per_sample=None):
    if columns_per_sample is None:
        columns_per_sample = [list(range(n)) for n in lengths]
    columns, mask = padded_columns(columns_per_sample)
    return AttentionCapture(columns=columns, column_mask=mask)


@pytest.mark.parametrize("with_capture", [False, True])
def test_gradient_checkpointing_gives_the_same_output_and_gradients(with_capture):
    lengths = (3, 11)

    def run(checkpointing: bool):
        model = fresh_dit().requires_grad_(True)
        model.gradient_checkpointing = checkpointing
        x, sigma, context, context_lengths = make_inputs(lengths)
        x.requires_grad_(True)
        capture = _joint_capture(lengths) if with_capture else None
        out = model(x, sigma, context, context_lengths, capture=capture)
        loss = out.square().mean()
        if capture is not None:
            loss = loss + torch.stack([maps.sum() for maps in capture.maps]).sum()
        loss.backward()
        grads = {name: parameter.grad for name, parameter in model.named_parameters()}
        grads["x"] = x.grad
        maps = capture.maps if capture is not None else []
        return out.detach(), grads, [m.detach() for m in maps]

    out_plain, grads_plain, maps_plain = run(False)
    out_ckpt, grads_ckpt, maps_ckpt = run(True)
    assert torch.equal(out_plain, out_ckpt)
    assert len(maps_plain) == len(maps_ckpt) == (TINY_CONFIG.n_layers if with_capture else 0)
    for plain, ckpt in zip(maps_plain, maps_ckpt):
        assert torch.equal(plain, ckpt)
    for name, grad in grads_plain.items():
        assert grad is not None, name
        torch.testing.assert_close(grads_ckpt[name], grad, rtol=1e-6, atol=1e-9, msg=name)
    assert any(grad.abs().sum() > 0 for grad in grads_plain.values())


def _manual_probabilities(model, inputs):
    """Full image-query softmax of every joint layer, from the q/k of its own qkv (recorded by hooks)."""
    x, sigma, context, lengths = inputs
    layout = model.layout_for(x, context, lengths)
    recorded = []

    def hook(module, args):
        hidden, cos, sin, key_mask = args[:4]
        batch, length, _ = hidden.shape
        query, key, _ = module.qkv(hidden).view(batch, length, 3, module.n_heads, module.head_dim).unbind(2)
        query = apply_rope(module.q_norm(query), cos, sin).transpose(1, 2)
        key = apply_rope(module.k_norm(key), cos, sin).transpose(1, 2)
        logits = query @ key.transpose(-1, -2) / module.head_dim ** 0.5
        if key_mask is not None:
            logits = logits.masked_fill(~key_mask[:, None, None, :], float("-inf"))
        start = layout.text_span
        recorded.append(logits.softmax(-1)[:, :, start:start + layout.image_tokens])

    handles = [block.attention.register_forward_pre_hook(hook) for block in model.layers]
    try:
        with torch.no_grad():
            model(x, sigma, context, lengths)
    finally:
        for handle in handles:
            handle.remove()
    return layout, recorded


@pytest.mark.parametrize("lengths", [(5,), (3, 11), (7, 7)])
def test_capture_maps_are_the_softmax_of_image_queries(lengths):
    model = fresh_dit()
    inputs = make_inputs(lengths)
    layout, manual = _manual_probabilities(model, inputs)
    # a few text columns per sample, different counts: the padding column must come back zero
    chosen = [[0, n - 1] if n > 1 else [0] for n in lengths]
    chosen[0] = chosen[0][:1]
    capture = _joint_capture(lengths, chosen)
    with torch.no_grad():
        model(*inputs, capture=capture)
    assert len(capture.maps) == TINY_CONFIG.n_layers
    for maps, full in zip(capture.maps, manual):
        assert maps.shape == (len(lengths), TINY_CONFIG.n_heads, layout.image_tokens, capture.columns.shape[1])
        assert ((maps >= 0) & (maps <= 1)).all()
        expected = torch.gather(full, -1, capture.columns[:, None, None, :].expand(-1, full.shape[1], full.shape[2], -1))
        expected = expected * capture.column_mask[:, None, None, :]
        torch.testing.assert_close(maps, expected, rtol=1e-4, atol=1e-6)
        assert (maps[~capture.column_mask.expand(len(lengths), -1)[:, None, None, :].expand_as(maps)] == 0).all()
        assert (maps[capture.column_mask[:, None, None, :].expand_as(maps)] > 0).all()


@pytest.mark.parametrize("lengths", [(5,), (3, 11), (1, 9, 17)])
def test_capture_over_every_joint_column_sums_to_one(lengths):
    model = fresh_dit()
    x, sigma, context, context_lengths = make_inputs(lengths)
    layout = model.layout_for(x, context, context_lengths)
    total = layout.sequence_length("layers")
    capture = AttentionCapture(columns=torch.arange(total).expand(len(lengths), -1))
    with torch.no_grad():
        model(x, sigma, context, context_lengths, capture=capture)
    filler = layout.kinds("layers") == BATCH_PAD
    for maps in capture.maps:
        torch.testing.assert_close(maps.sum(-1), torch.ones(maps.shape[:-1]), rtol=0, atol=1e-5)
        assert (maps.permute(0, 3, 1, 2)[filler] == 0).all()       # masked keys get no attention


def test_capture_of_a_mixed_batch_matches_per_sample_captures():
    model = fresh_dit()
    lengths = (3, 11)
    x, sigma, context, context_lengths = make_inputs(lengths)
    chosen = [[1, 2], [4, 5]]
    batched = _joint_capture(lengths, chosen)
    with torch.no_grad():
        model(x, sigma, context, context_lengths, capture=batched)
        for index, length in enumerate(lengths):
            alone = _joint_capture([length], [chosen[index]])
            model(x[index:index + 1], sigma[index:index + 1], context[index:index + 1, :length], capture=alone)
            for maps, single in zip(batched.maps, alone.maps):
                torch.testing.assert_close(maps[index:index + 1], single, rtol=1e-4, atol=1e-6)


def test_suppressing_a_present_keyword_changes_only_that_sample(word_conditioner):
    model = fresh_dit()
    prompts = ["a red circle on white background", "a blue square on white background"]
    context, lengths = word_conditioner.encode(prompts)
    x, sigma, _, _ = make_inputs((1, 1))
    mask = keyword_suppression(word_conditioner, prompts, ["red"])
    assert mask[0].tolist()[:2] == [False, True] and not mask[1].any()
    with torch.no_grad():
        plain = model(x, sigma, context, lengths)
        suppressed = model(x, sigma, context, lengths, suppress_keys=mask)
    assert relative(suppressed[0], plain[0]) > 1e-3
    torch.testing.assert_close(suppressed[1], plain[1], rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("prompts", [["a blue square on white background"],
                                     ["a blue circle", "a square on white background"]])
def test_suppressing_an_absent_keyword_changes_nothing(word_conditioner, prompts):
    model = fresh_dit()
    context, lengths = word_conditioner.encode(prompts)
    x, sigma, _, _ = make_inputs([1] * len(prompts))
    mask = keyword_suppression(word_conditioner, prompts, ["red"])
    assert not mask.any()
    with torch.no_grad():
        assert torch.equal(model(x, sigma, context, lengths, suppress_keys=mask), model(x, sigma, context, lengths))


def test_suppression_removes_the_key_from_image_attention(word_conditioner):
    model = fresh_dit()
    prompts = ["a red circle on white background"]
    context, lengths = word_conditioner.encode(prompts)
    x, sigma, _, _ = make_inputs((1,))
    mask = keyword_suppression(word_conditioner, prompts, ["red"])
    capture = _joint_capture([6], [[1]])
    with torch.no_grad():
        model(x, sigma, context, lengths, capture=capture, suppress_keys=mask)
    assert all((maps == 0).all() for maps in capture.maps)


def test_a_kept_prefix_gives_the_forward_of_the_current_joint_layers():
    model = randomized_dit(TINY_CONFIG)
    generator = torch.Generator().manual_seed(3)
    x = torch.randn(2, TINY_CONFIG.in_channels, 4, 4, generator=generator)
    sigma = torch.tensor([0.3, 0.8])
    context = torch.randn(2, 5, TINY_CONFIG.cap_feat_dim, generator=generator)
    with torch.no_grad():
        kept = model.prefix(x, sigma, context, torch.tensor([5, 3]))
        before = model.joint(kept)
        torch.testing.assert_close(before, model(x, sigma, context, torch.tensor([5, 3])), rtol=0, atol=0)
        for block in model.layers:
            block.attention.qkv.weight.mul_(1.5)
        changed = model(x, sigma, context, torch.tensor([5, 3]))
        torch.testing.assert_close(model.joint(kept), changed, rtol=0, atol=0)
    assert not torch.allclose(before, changed)
