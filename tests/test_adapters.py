"""Stream-gated adapters: identity at init, disabled == base, per-row gating of every adapted projection (values and
gradients), only adapter parameters train, attach/detach (stacked), export/import and strength.

Most checks run after a few optimizer steps so the low-rank deltas are non-zero (the up weights start at zero)."""
from __future__ import annotations

import functools

import pytest
import torch
import torch._dynamo  # noqa: F401  (the first optimizer imports it lazily, ~3 s: pay at collection, not in a test)
import torch.nn.functional as F
from zerase_fixtures import fresh_dit

from zerase_core.adapters.gated import KEY_PREFIX, AdapterConfig, AdapterSet
from zerase_core.model.layout import (
    BATCH_PAD,
    FAMILIES,
    IMAGE,
    IMAGE_PAD,
    TEXT,
    TEXT_PAD,
    active_layout,
)

GATES = ("text", "image", "all")
OPEN_KINDS = {"text": (TEXT, TEXT_PAD), "image": (IMAGE, IMAGE_PAD), "all": (TEXT, TEXT_PAD, IMAGE, IMAGE_PAD, BATCH_PAD)}
EVERYWHERE = dict(rank=4, slices=("q", "k", "v"), families=FAMILIES)


def make_inputs(seed: int = 0):
    """Mixed caption lengths (batch filler rows) and a 3×5 token grid padded to 16 (an image pad row)."""
    generator = torch.Generator().manual_seed(seed)
    lengths = torch.tensor([3, 11])
    x = torch.randn(2, 16, 6, 10, generator=generator)
    sigma = torch.tensor([0.4, 0.8])
    context = torch.randn(2, 11, 32, generator=generator)
    return x, sigma, context, lengths


def attached(gate: str, seed: int = 1, **overrides):
    model = fresh_dit()
    torch.manual_seed(seed)
    adapters = AdapterSet(model, AdapterConfig(gate=gate, **{**EVERYWHERE, **overrides})).attach(model)
    return model, adapters


def train(model, adapters, steps: int = 3, inputs=None, lr: float = 1e-2):
    inputs = inputs or make_inputs()
    target = torch.randn(inputs[0].shape, generator=torch.Generator().manual_seed(7))
    optimizer = torch.optim.Adam(adapters.parameters(), lr=lr)
    for _ in range(steps):
        optimizer.zero_grad()
        loss = (model(*inputs) - target).square().mean()
        loss.backward()
        optimizer.step()
    return adapters


def forward(model, inputs=None):
    with torch.no_grad():
        return model(*(inputs or make_inputs()))


@functools.lru_cache(maxsize=1)
def base_output():
    """The frozen model's output on make_inputs() (tests compare against it; never modified)."""
    return forward(fresh_dit())


def record_qkv(model, adapters, inputs, detach_inputs=False, grad=False):
    """path -> (input, output) of every adapted projection during one forward."""
    records, handles = {}, []
    for path in adapters.paths:
        linear = model.get_submodule(path)
        if detach_inputs:
            handles.append(linear.register_forward_pre_hook(lambda module, args: (args[0].detach(),)))
        handles.append(linear.register_forward_hook(
            lambda module, args, output, path=path: records.__setitem__(path, (args[0], output))))
    try:
        with torch.set_grad_enabled(grad):
            model(*inputs)
    finally:
        for handle in handles:
            handle.remove()
    return records


def row_kinds(model, adapters, path, inputs):
    layout = model.layout_for(inputs[0], inputs[2], inputs[3])
    return layout.kinds(adapters.adapter(path).family)


def is_kind(kinds, chosen):
    return torch.isin(kinds, torch.tensor(chosen, dtype=kinds.dtype))


@pytest.mark.parametrize("gate", GATES)
def test_identity_at_init(gate):
    model, _ = attached(gate)
    assert torch.equal(forward(model), base_output())


@pytest.mark.parametrize("gate", GATES)
def test_disabled_equals_base_bit_for_bit(gate):
    model, adapters = attached(gate)
    train(model, adapters)
    base = base_output()
    assert not torch.equal(forward(model), base)      # the adapters do something
    with adapters.disabled():
        assert torch.equal(forward(model), base)
    adapters.set_enabled(False)
    assert torch.equal(forward(model), base)
    adapters.set_enabled(True)
    assert not torch.equal(forward(model), base)


@pytest.mark.parametrize("gate", GATES)
def test_gated_rows_of_every_projection_equal_the_frozen_projection(gate):
    model, adapters = attached(gate)
    train(model, adapters)
    inputs = make_inputs()
    records = record_qkv(model, adapters, inputs)
    assert sorted(records) == sorted(adapters.paths)
    assert {adapters.adapter(path).family for path in records} == set(FAMILIES)
    opened_somewhere = False
    for path, (x, output) in records.items():
        frozen = F.linear(x, model.get_submodule(path).weight)
        kinds = row_kinds(model, adapters, path, inputs)
        assert kinds.shape == output.shape[:2]
        closed = ~is_kind(kinds, OPEN_KINDS[gate])
        assert torch.equal(output[closed], frozen[closed]), path
        # every open row of a real token (not the all-zero batch filler of the first refiner block) moved
        moving = is_kind(kinds, (TEXT, TEXT_PAD, IMAGE, IMAGE_PAD)) & ~closed
        if moving.any():
            opened_somewhere = True
            assert (output[moving] != frozen[moving]).any(dim=-1).all(), path
    assert opened_somewhere


@pytest.mark.parametrize("gate", ["text", "image"])
def test_gated_rows_give_the_adapters_no_gradient(gate):
    model, adapters = attached(gate)
    train(model, adapters)
    inputs = make_inputs()

    def gradients(rows: str):
        adapters.zero_grad(set_to_none=True)
        records = record_qkv(model, adapters, inputs, detach_inputs=True, grad=True)
        loss = 0.0
        for path, (_, output) in records.items():
            closed = ~is_kind(row_kinds(model, adapters, path, inputs), OPEN_KINDS[gate])
            loss = loss + output[closed if rows == "closed" else ~closed].square().sum()
        loss.backward()
        return {name: parameter.grad for name, parameter in adapters.named_parameters()}

    for name, grad in gradients("closed").items():
        assert grad is None or torch.count_nonzero(grad) == 0, name
    # the same loss on the open rows reaches every adapter that has open rows
    open_grads = gradients("open")
    assert any(grad is not None and grad.abs().sum() > 0 for grad in open_grads.values())
    for path in adapters.paths:
        if adapters.adapter(path).family == "layers":
            key = AdapterSet._key(path)
            assert all(open_grads[f"adapters.{key}.up.{s}"].abs().sum() > 0 for s in ("q", "k", "v")), path


@pytest.mark.parametrize("gate", GATES)
def test_a_step_changes_only_adapter_parameters(gate):
    model, adapters = attached(gate)
    frozen = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    before = {name: tensor.detach().clone() for name, tensor in adapters.named_parameters()}
    train(model, adapters)
    after = model.state_dict()
    assert list(after) == list(frozen)          # no adapter keys leak into the model's state dict
    for name, tensor in after.items():
        assert torch.equal(tensor, frozen[name]), name
    assert not any(parameter.requires_grad for parameter in model.parameters())
    moved = [name for name, tensor in adapters.named_parameters() if not torch.equal(tensor, before[name])]
    assert any(".up." in name for name in moved)
    for path in adapters.paths:
        if adapters.adapter(path).family == "layers":
            assert any(name.startswith(f"adapters.{AdapterSet._key(path)}.up.") for name in moved), path


def test_gate_all_changes_text_and_image_rows():
    model, adapters = attached("all")
    train(model, adapters)
    inputs = make_inputs()
    records = record_qkv(model, adapters, inputs)
    path = "layers.0.attention.qkv"
    x, output = records[path]
    moved = (output != F.linear(x, model.get_submodule(path).weight)).any(dim=-1)
    kinds = row_kinds(model, adapters, path, inputs)
    for kind in (TEXT, TEXT_PAD, IMAGE, IMAGE_PAD):
        assert moved[kinds == kind].all(), kind


def test_set_gate_switches_every_adapter():
    model, adapters = attached("text")
    train(model, adapters)
    inputs = make_inputs()
    path = "layers.0.attention.qkv"
    kinds = row_kinds(model, adapters, path, inputs)
    for policy, image_moves in (("text", False), ("all", True), ("text", False)):
        adapters.set_gate(policy)
        x, output = record_qkv(model, adapters, inputs)[path]
        moved = (output != F.linear(x, model.get_submodule(path).weight)).any(dim=-1)
        assert bool(moved[kinds == IMAGE].any()) == image_moves, policy
        assert moved[kinds == TEXT].all(), policy
    with pytest.raises(ValueError, match="gate 'half'"):
        adapters.set_gate("half")


@pytest.mark.parametrize("gate", GATES)
def test_detach_restores_the_original_forward(gate):
    model, adapters = attached(gate)
    train(model, adapters)
    trained = forward(model)
    adapters.detach()
    assert not adapters.attached
    for path in adapters.paths:
        assert "forward" not in model.get_submodule(path).__dict__, path
    assert torch.equal(forward(model), base_output())
    adapters.attach(model)
    assert torch.equal(forward(model), trained)


def test_attaching_twice_is_refused():
    model, adapters = attached("text")
    with pytest.raises(RuntimeError, match="already attached"):
        adapters.attach(model)


def test_stacked_sets_detach_in_reverse_order():
    model, first = attached("text")
    train(model, first)
    only_first = forward(model)
    torch.manual_seed(2)
    second = AdapterSet(model, AdapterConfig(gate="image", **EVERYWHERE)).attach(model)
    train(model, second)
    both = forward(model)
    assert not torch.equal(both, only_first)
    with pytest.raises(RuntimeError, match="reverse order"):
        first.detach()
    assert torch.equal(forward(model), both)     # a refused detach changes nothing
    second.detach()
    assert torch.equal(forward(model), only_first)
    first.detach()
    assert torch.equal(forward(model), base_output())
    assert all("forward" not in model.get_submodule(path).__dict__ for path in first.paths)


@pytest.mark.parametrize("gate", GATES)
def test_export_import_round_trip(gate):
    model, adapters = attached(gate, slices=("q", "v"))
    train(model, adapters)
    exported = adapters.export_tensors()
    expected = {f"{KEY_PREFIX}{path}.{s}.{kind}" for path in adapters.paths for s in ("q", "v") for kind in ("down", "up")}
    assert set(exported) == expected
    assert all(key.startswith("zerase.") for key in exported)
    other_model, other = attached(gate, seed=5, slices=("q", "v"))
    assert not torch.equal(forward(other_model), forward(model))
    other.import_tensors(exported)
    for key, tensor in other.export_tensors().items():
        assert torch.equal(tensor, exported[key]), key
    assert torch.equal(forward(other_model), forward(model))


def test_import_rejects_missing_and_misshapen_tensors():
    _, adapters = attached("text")
    tensors = adapters.export_tensors()
    missing = dict(tensors)
    dropped = sorted(missing)[0]
    del missing[dropped]
    with pytest.raises(ValueError, match="missing") as error:
        adapters.import_tensors(missing)
    assert dropped in str(error.value)
    key = sorted(tensors)[1]
    wrong = {**tensors, key: torch.zeros(tensors[key].shape[0] + 1, tensors[key].shape[1])}
    with pytest.raises(ValueError, match="shape"):
        adapters.import_tensors(wrong)


@pytest.mark.parametrize("gate", GATES)
def test_strength_zero_equals_base(gate):
    model, adapters = attached(gate)
    train(model, adapters)
    adapters.set_strength(0.0)
    assert torch.equal(forward(model), base_output())
    adapters.set_strength(1.0)
    assert not torch.equal(forward(model), base_output())


@pytest.mark.parametrize("gate", ["text", "image"])
def test_strength_two_doubles_the_delta_on_open_rows(gate):
    model, adapters = attached(gate)
    train(model, adapters)
    inputs = make_inputs()
    records = record_qkv(model, adapters, inputs)
    layout = model.layout_for(inputs[0], inputs[2], inputs[3])
    for path, (x, _) in records.items():
        linear = model.get_submodule(path)
        frozen = F.linear(x, linear.weight)
        deltas = {}
        for strength in (1.0, 2.0):
            adapters.set_strength(strength)
            with torch.no_grad(), active_layout(layout):
                deltas[strength] = linear(x) - frozen
        open_rows = is_kind(row_kinds(model, adapters, path, inputs), OPEN_KINDS[gate])
        torch.testing.assert_close(deltas[2.0][open_rows], 2 * deltas[1.0][open_rows], rtol=1e-5, atol=1e-6)
        assert (deltas[2.0][~open_rows] == 0).all(), path
    assert any(d.abs().max() > 1e-4 for d in deltas.values())


@pytest.mark.parametrize("gate", ["text", "image"])
def test_gated_adapter_outside_a_layout_aware_forward_raises(gate):
    model, adapters = attached(gate)
    linear = model.get_submodule(adapters.paths[0])
    with pytest.raises(RuntimeError, match="layout"):
        linear(torch.randn(1, 4, linear.in_features))


@pytest.mark.parametrize("gate", ["text", "image"])
def test_gradient_checkpointing_with_gated_adapters_gives_the_same_gradients(gate):
    model, adapters = attached(gate)
    train(model, adapters)
    inputs = make_inputs()
    grads = {}
    for checkpointing in (False, True):
        model.gradient_checkpointing = checkpointing
        adapters.zero_grad(set_to_none=True)
        model(*inputs).square().mean().backward()
        grads[checkpointing] = {name: parameter.grad.clone() for name, parameter in adapters.named_parameters()}
    for name, grad in grads[False].items():
        torch.testing.assert_close(grads[True][name], grad, rtol=1e-6, atol=1e-9, msg=name)


def test_layer_selection_wraps_only_the_chosen_layers():
    model, adapters = attached("text", families=("layers",), layers=(1,))
    assert adapters.paths == ["layers.1.attention.qkv"]
    wrapped = [path for path, module in model.named_modules() if "forward" in module.__dict__]
    assert wrapped == ["layers.1.attention.qkv"]


@pytest.mark.parametrize("overrides, value", [
    (dict(rank=0), "0"), (dict(rank=300), "300"), (dict(alpha=0.0), "0.0"), (dict(alpha=-1.0), "-1.0"),
    (dict(gate="both"), "'both'"), (dict(slices=("q", "o")), "'o'"), (dict(slices=()), "()"),
    (dict(families=("decoder",)), "'decoder'"),
])
def test_adapter_config_rejects_invalid_values(overrides, value):
    with pytest.raises(ValueError) as error:
        AdapterConfig(**overrides)
    assert value in str(error.value)
