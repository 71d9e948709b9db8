"""The erasure engine: prompt sets, word shuffling and keyword columns; EraseConfig validation; EraseTrainer for every
method (metrics, gates, what a step changes, the falling erase loss), the same-probe λ update and its bounds,
divergence handling and bit-exact resume. Tiny DiT, word-level conditioner, a handful of steps."""
from __future__ import annotations

import dataclasses
import json
import math

import numpy
import pytest
import torch
import torch._dynamo  # noqa: F401  (the first optimizer imports it lazily, ~3 s: pay at collection, not in a test)
from zerase_fixtures import TINY_CONFIG, fresh_dit

from zerase_core.common.prompts import PromptSet, keyword_columns, shuffle_words
from zerase_core.engine.erase_config import METHODS, EraseConfig
from zerase_core.engine.trainer import EraseTrainer, TrainingDiverged

# two joint layers and no refiners: the trainer only adapts joint layers, and every forward counts here
TRAINER_DIT = dataclasses.replace(TINY_CONFIG, n_layers=2, n_refiner_layers=0)
PROMPTS = PromptSet(erase=("a red circle on white background", "a red star on black background"), keywords=("red",),
                    anchors=("a circle on white background", "a star on black background"))


def make_config(**overrides) -> EraseConfig:
    settings = dict(steps=4, pool_prompts=2, sample_steps=2, batch_size=1, sample_cfg=1.0, latent_size=(4, 4), rank=2,
                    stationarity_every=2)
    settings.update(overrides)
    return EraseConfig(**settings)


def make_trainer(conditioner, prompts: PromptSet = PROMPTS, **overrides) -> EraseTrainer:
    return EraseTrainer(fresh_dit(TRAINER_DIT), conditioner, prompts, make_config(**overrides))


def adapter_state(trainer: EraseTrainer) -> dict[str, torch.Tensor]:
    return {name: tensor.detach().clone() for name, tensor in trainer.adapters.state_dict().items()}


# -- prompts -------------------------------------------------------------------------------------------------------

SHUFFLE_PROMPT = "a red circle on white background with a blue star"
SHUFFLE_KEYWORDS = ["red circle", "white background"]


def contiguous(words: list[str], phrase: str) -> bool:
    target = phrase.split()
    return any(words[index:index + len(target)] == target for index in range(len(words) - len(target) + 1))


def test_shuffle_keeps_keywords_whole_and_the_words_the_same():
    rng = numpy.random.default_rng(0)
    orders = set()
    for _ in range(40):
        shuffled = shuffle_words(SHUFFLE_PROMPT, SHUFFLE_KEYWORDS, rng, probability=1.0)
        words = shuffled.split()
        assert sorted(words) == sorted(SHUFFLE_PROMPT.split())
        for keyword in SHUFFLE_KEYWORDS:
            assert contiguous(words, keyword), (keyword, shuffled)
        orders.add(shuffled)
    assert len(orders) > 10                      # it does shuffle
    assert any(not shuffled.startswith("a red circle") for shuffled in orders)


def test_shuffle_with_probability_zero_returns_the_prompt():
    rng = numpy.random.default_rng(0)
    prompt = "A Red circle, on white background"
    assert all(shuffle_words(prompt, ["red"], rng, probability=0.0) == prompt for _ in range(10))


def test_shuffle_keeps_the_case_of_words():
    rng = numpy.random.default_rng(0)
    prompt = "A photo of Van Gogh painting a Starry Night"
    shuffled = shuffle_words(prompt, ["van gogh"], rng, probability=1.0)
    assert sorted(shuffled.split()) == sorted(prompt.split())
    assert contiguous(shuffled.split(), "Van Gogh")


def test_keyword_columns_follow_the_shuffled_words(word_conditioner):
    rng = numpy.random.default_rng(3)
    base = ["a red circle on white background", "a red star on black background with a blue square"]
    for _ in range(10):
        prompts = [shuffle_words(prompt, ["red circle", "blue square"], rng, 1.0) for prompt in base]
        keywords = [["red circle"], ["red", "blue square"]]
        columns, mask = keyword_columns(word_conditioner, prompts, keywords)
        assert columns.shape == mask.shape == (2, 3)
        assert mask.tolist() == [[True, True, False], [True, True, True]]
        for row, (prompt, words) in enumerate(zip(prompts, keywords)):
            tokens = prompt.split()
            found = [tokens[column] for column in columns[row][mask[row]].tolist()]
            assert sorted(found) == sorted(" ".join(words).split()), prompt
            assert columns[row][mask[row]].tolist() == sorted(columns[row][mask[row]].tolist())
            assert contiguous([tokens[c] for c in columns[row][mask[row]].tolist()], words[-1])


def test_keyword_columns_raise_when_a_prompt_lacks_its_keyword(word_conditioner):
    with pytest.raises(ValueError, match="a blue square"):
        keyword_columns(word_conditioner, ["a red circle", "a blue square"], [["red"], ["red"]])


@pytest.mark.parametrize("keyword", ["green", "red star", "circle on black"])
def test_prompt_set_rejects_a_keyword_absent_from_every_erase_prompt(keyword):
    with pytest.raises(ValueError, match=repr(keyword)):
        PromptSet(erase=("a red circle on white background", "a blue star"), keywords=("red", keyword),
                  anchors=("a circle",))


def test_prompt_set_matches_whole_words_only():
    with pytest.raises(ValueError, match="'red'"):
        PromptSet(erase=("a reddish circle",), keywords=("red",), anchors=("a circle",))
    prompts = PromptSet(erase=("A Red circle, on white",), keywords=("red", "circle"), anchors=("a circle",))
    assert prompts.keywords_in("a red square") == ["red"]


@pytest.mark.parametrize("field", ["erase", "keywords", "anchors"])
def test_prompt_set_needs_every_part(field):
    parts = dict(erase=("a red circle",), keywords=("red",), anchors=("a circle",))
    parts[field] = ()
    with pytest.raises(ValueError, match=field.rstrip("s")[:5]):
        PromptSet(**parts)


# -- EraseConfig ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("field, value", [
    ("eta", -0.5), ("eta", 51.0), ("eta", float("nan")), ("epsilon", -0.1), ("epsilon", 1.5), ("beta", -1.0),
    ("beta", 101.0), ("rank", 0), ("rank", 257), ("steps", 0), ("steps", 100_001), ("learning_rate", 2.0),
    ("batch_size", 0), ("shuffle_probability", 1.5),
])
def test_erase_config_rejects_out_of_range_values(field, value):
    with pytest.raises(ValueError) as error:
        EraseConfig(**{field: value})
    assert f"{field}={value}" in str(error.value)


@pytest.mark.parametrize("field, value", [("lambda_max", -1.0), ("lagrangian_alpha", 0.0), ("lagrangian_alpha", -0.01)])
def test_erase_config_rejects_out_of_range_lagrangian_settings(field, value):
    with pytest.raises(ValueError) as error:
        EraseConfig(**{field: value})
    assert f"{field}={value}" in str(error.value)


def test_erase_config_rejects_unknown_methods_listing_the_valid_ones():
    with pytest.raises(ValueError) as error:
        EraseConfig(method="lora")
    assert "'lora'" in str(error.value)
    for method in METHODS:
        assert method in str(error.value)


def test_erase_config_round_trips_through_a_dict():
    config = make_config(layers=[0, 1], slices=["q", "k", "v"], epsilon=0.005)
    assert EraseConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    with pytest.raises(ValueError, match="'learning_rat'"):
        EraseConfig.from_dict({"learning_rat": 1e-3})


# -- trainer -------------------------------------------------------------------------------------------------------

EXPECTED_METRICS = {
    "zerase": ({"loss_erase", "loss_attention", "loss_preserve", "loss_total", "lambda", "g_tilde", "probe_preserve"},
               set()),
    "esd": ({"loss_erase", "loss_total", "lambda"}, {"loss_attention", "loss_preserve", "g_tilde", "stationarity"}),
    "ac": ({"loss_erase", "loss_total", "lambda"}, {"loss_attention", "loss_preserve", "g_tilde", "stationarity"}),
    "naive-esd": ({"loss_erase", "loss_total", "lambda"}, {"loss_attention", "loss_preserve", "g_tilde"}),
}


@pytest.mark.parametrize("method", [method for method in METHODS if method != "eraseanything"])
def test_each_method_runs_and_logs_its_metrics(method, word_conditioner):
    trainer = make_trainer(word_conditioner, method=method, steps=4, stationarity_every=2, batch_size=2)
    history = trainer.run()
    assert trainer.step == 4 and [record.step for record in history] == [1, 2, 3, 4]
    required, forbidden = EXPECTED_METRICS[method]
    for record in history:
        assert required <= set(record.metrics), record.metrics
        assert not forbidden & set(record.metrics)
        assert all(math.isfinite(value) for value in record.metrics.values())
        assert ("stationarity" in record.metrics) == (method == "zerase" and record.step % 2 == 0)
    if method == "zerase":
        assert all(record.metrics["stationarity"] > 0 for record in history if record.step % 2 == 0)
        assert all(record.metrics["loss_attention"] > 0 for record in history)


def test_eraseanything_alternates_erase_and_preserve_steps(word_conditioner):
    history = make_trainer(word_conditioner, method="eraseanything", steps=4).run()
    for record in history:
        keys = set(record.metrics)
        if record.step % 2 == 1:
            assert {"loss_erase", "loss_attention"} <= keys and "loss_preserve" not in keys
        else:
            assert "loss_preserve" in keys and "loss_erase" not in keys
        assert all(math.isfinite(value) for value in record.metrics.values())


@pytest.mark.parametrize("method, gate", [("zerase", "text"), ("esd", "text"), ("ac", "text"),
                                          ("eraseanything", "text"), ("naive-esd", "all")])
def test_naive_esd_opens_the_gate_everywhere_and_the_others_only_on_text(method, gate, word_conditioner):
    trainer = make_trainer(word_conditioner, method=method, steps=1)
    assert make_config(method=method).gate == gate
    assert trainer.adapters.config.gate == gate
    assert {adapter.gate_policy for adapter in trainer.adapters.adapters.values()} == {gate}


@pytest.mark.parametrize("method", METHODS)
def test_a_step_changes_only_adapter_parameters(method, word_conditioner):
    trainer = make_trainer(word_conditioner, method=method, steps=2)
    frozen = {name: tensor.clone() for name, tensor in trainer.model.state_dict().items()}
    before = adapter_state(trainer)
    trainer.run()
    after = trainer.model.state_dict()
    assert list(after) == list(frozen)
    assert all(torch.equal(after[name], frozen[name]) for name in frozen)
    assert not any(parameter.requires_grad for parameter in trainer.model.parameters())
    moved = [name for name, tensor in adapter_state(trainer).items() if not torch.equal(tensor, before[name])]
    assert any(".up." in name for name in moved)


def test_esd_erase_loss_falls_on_a_fixed_problem(word_conditioner):
    prompts = PromptSet(erase=("a red circle on white background",), keywords=("red",),
                        anchors=("a circle on white background",))
    trainer = make_trainer(word_conditioner, prompts, method="esd", steps=20, pool_prompts=1, sample_steps=1,
                           batch_size=1, rank=4, learning_rate=3e-3)
    losses = [record.metrics["loss_erase"] for record in trainer.run()]
    assert losses[-1] < 0.7 * losses[0]
    assert max(losses[-5:]) < losses[0]


@pytest.mark.parametrize("epsilon, beta, lambda_max, bound", [(0.0, 100.0, 0.5, "upper"), (1.0, 1.0, 100.0, "lower")])
def test_lambda_starts_at_zero_and_stays_in_bounds(epsilon, beta, lambda_max, bound, word_conditioner):
    config = dict(method="zerase", steps=5, epsilon=epsilon, beta=beta, lambda_max=lambda_max, stationarity_every=0)
    trainer = make_trainer(word_conditioner, **config)
    assert trainer.lam == 0.0
    history = [record.metrics for record in trainer.run()]
    lambdas = [metrics["lambda"] for metrics in history] + [trainer.lam]
    assert lambdas[0] == 0.0
    assert all(0.0 <= value <= lambda_max for value in lambdas)
    # λ_{t+1} = clip(λ_t − β·g̃_t, 0, λ_max), with the logged g̃
    for metrics, following in zip(history, lambdas[1:]):
        assert following == pytest.approx(min(lambda_max, max(0.0, metrics["lambda"] - beta * metrics["g_tilde"])),
                                          rel=1e-12, abs=1e-15)
    if bound == "upper":
        assert max(lambdas) == lambda_max          # the clip is reached, not just respected by luck
    else:
        assert all(metrics["g_tilde"] > 0 for metrics in history) and set(lambdas) == {0.0}


@pytest.mark.parametrize("lagrangian_alpha", [None, 0.05])
def test_g_tilde_compares_the_same_probe_before_and_after_the_step(lagrangian_alpha, word_conditioner):
    trainer = make_trainer(word_conditioner, method="zerase", steps=3, lagrangian_alpha=lagrangian_alpha,
                           epsilon=1e-3)
    alpha = trainer.config.alpha_value
    assert alpha == (trainer.config.learning_rate if lagrangian_alpha is None else lagrangian_alpha)
    for _ in range(3):
        before = float(trainer.probe())
        metrics = trainer.train_step()
        after = float(trainer.probe())
        expected = (before - after) / alpha + 1e-3
        assert metrics["g_tilde"] == pytest.approx(expected, rel=1e-6)
        assert metrics["probe_preserve"] == after
    assert after > 0            # the probe did move: the check compares real numbers


@pytest.mark.parametrize("families", [("layers",), ("layers", "context_refiner")])
def test_the_probe_keeps_its_refiner_prefix_only_while_the_refiners_are_not_adapted(families, word_conditioner):
    dit = fresh_dit(dataclasses.replace(TINY_CONFIG, n_layers=2, n_refiner_layers=1))
    trainer = EraseTrainer(dit, word_conditioner, PROMPTS, make_config(method="zerase", steps=3, families=families))
    with torch.no_grad():
        for adapter in trainer.adapters.adapters.values():       # non-zero deltas from the start, refiners included
            for up in adapter.up.values():
                up.normal_(0.0, 0.5)
    for _ in range(3):
        probed = float(trainer.probe())
        with torch.no_grad():
            uncached = trainer.preservation_loss(trainer.probe_picks).item()   # the full forwards, every time
        assert probed == pytest.approx(uncached, rel=1e-5, abs=1e-9)
        trainer.train_step()
    assert probed > 0
    assert (trainer._probe_prefix is not None) == (families == ("layers",))


def test_anchor_trajectories_measure_the_anchor_term_on_the_anchors_own_states(word_conditioner):
    trainer = make_trainer(word_conditioner, method="zerase", anchor_trajectories=True, sample_cfg=2.0)
    pool = trainer.pool
    assert pool.anchor_states is not None and pool.anchor_states.shape == pool.states.shape
    assert torch.equal(pool.anchor_states[:, 0], pool.states[:, 0])        # same seeds: the same starting noise
    assert not torch.equal(pool.anchor_states[:, 1], pool.states[:, 1])    # then the anchor prompt steers them
    picks = [(1, 1)]
    context, lengths = word_conditioner.encode([pool.anchors[1]])
    with torch.no_grad(), trainer.adapters.disabled():
        expected = trainer.model(pool.anchor_states[1, 1][None], pool.sigmas[1][None], context, lengths).float()
        on_erase_states = trainer.model(pool.states[1, 1][None], pool.sigmas[1][None], context, lengths).float()
    cached = trainer._teacher(picks)["anchor"]
    torch.testing.assert_close(cached, expected, rtol=1e-4, atol=1e-5)       # batched vs single: float noise
    assert not torch.allclose(cached, on_erase_states)
    history = [trainer.train_step() for _ in range(3)]                      # the fused forwards take per-list states
    assert all(math.isfinite(metrics["loss_preserve"]) for metrics in history)
    without = make_trainer(word_conditioner, method="zerase", sample_cfg=2.0, anchor_trajectories=False)
    assert without.pool.anchor_states is None and torch.equal(without.pool.states, pool.states)


def test_fixed_lambda_stays_constant(word_conditioner):
    trainer = make_trainer(word_conditioner, method="zerase", steps=4, lambda_mode="fixed", fixed_lambda=0.7)
    history = trainer.run()
    assert [record.metrics["lambda"] for record in history] == [0.7] * 4
    assert trainer.lam == 0.7
    assert not any("g_tilde" in record.metrics for record in history)


@pytest.mark.parametrize("method", ["zerase", "esd"])
def test_a_nan_in_an_adapter_weight_raises_and_restores_finite_weights(method, word_conditioner):
    trainer = make_trainer(word_conditioner, method=method, steps=4)
    trainer.train_step()
    after_first = adapter_state(trainer)
    trainer.train_step()
    with torch.no_grad():
        next(iter(trainer.adapters.adapters.values())).up["q"][0, 0] = float("nan")
    trainer.train_step()                            # reads nothing back: the check comes at a progress point
    with pytest.raises(TrainingDiverged, match="step 3") as error:
        trainer.check_finite()
    assert "state of step 1" in str(error.value)
    restored = adapter_state(trainer)
    assert all(torch.isfinite(tensor).all() for tensor in restored.values())
    assert all(torch.equal(restored[name], after_first[name]) for name in restored)
    assert trainer.step == 2 and len(trainer.history) == 2
    metrics = trainer.train_step()                  # training goes on from the restored weights
    assert all(math.isfinite(value) for value in metrics.values())


@pytest.mark.parametrize("method", ["zerase", "eraseanything"])
def test_resume_reproduces_an_uninterrupted_run_bit_for_bit(method, word_conditioner):
    config = dict(method=method, steps=4, stationarity_every=2)
    straight = make_trainer(word_conditioner, **config)
    straight.run()

    first = make_trainer(word_conditioner, **config)
    first.train_step()
    first.train_step()
    adapters = first.adapters.export_tensors()
    state = first.state_tensors()
    metadata = json.loads(json.dumps(first.state_metadata()))     # as stored in a file

    resumed = make_trainer(word_conditioner, **config)
    resumed.restore(adapters, state, metadata)
    assert resumed.step == 2
    resumed.run()

    ours, theirs = resumed.adapters.export_tensors(), straight.adapters.export_tensors()
    assert set(ours) == set(theirs)
    for key in ours:
        assert torch.equal(ours[key], theirs[key]), key
    assert resumed.lam == straight.lam
    assert [record.metrics for record in resumed.history] == [record.metrics for record in straight.history]


# -- erase targets (issue 18) ----------------------------------------------------------------------------------------

MAPPED = dataclasses.replace(PROMPTS, targets=("a blue circle on white background", "a blue star on black background"))


def test_erase_target_defaults_per_method_and_old_configs_keep_the_empty_target():
    assert make_config().erase_target_value == "anchor"
    assert make_config().target_states_value == "mapped"
    # under the anchor target shapes ("object") drop L_attn; other kinds, the ESD target and a chosen weight keep it
    assert make_config().with_kind("object").attention_weight == 0.0
    assert make_config().with_kind("attribute").attention_weight == 1.0
    assert make_config(erase_target="empty").with_kind("object").attention_weight == 1.0
    assert make_config(attention_weight=2.0).with_kind("object").attention_weight == 2.0
    with pytest.raises(ValueError, match="target_states"):
        make_config(target_states="anchor")
    assert make_config(method="esd").erase_target_value == "empty"
    assert make_config(method="zerase", erase_target="empty").erase_target_value == "empty"
    old = {key: value for key, value in make_config().to_dict().items() if key not in ("erase_target", "target_eta")}
    assert EraseConfig.from_dict(old).erase_target_value == "empty"      # a file trained before targets existed
    with pytest.raises(ValueError, match="erase_target"):
        make_config(erase_target="blank")


@pytest.mark.parametrize("target, eta, states", [("anchor", 1.0, "mapped"), ("anchor", 0.0, "mapped"),
                                                 ("anchor", 1.0, "erase"), ("empty", 2.0, "mapped")])
def test_the_erase_loss_regresses_onto_the_chosen_target_on_the_chosen_states(target, eta, states, word_conditioner):
    trainer = make_trainer(word_conditioner, MAPPED, erase_target=target, target_eta=eta, eta=eta, target_states=states,
                           shuffle_probability=0.0, attention_weight=0.0)
    pool = trainer.pool
    assert (pool.targets == ["a blue circle on white background", "a blue star on black background"]) == (target == "anchor")
    mapped = target == "anchor" and states == "mapped"
    assert (pool.target_states is not None) == mapped
    # "mapped": the anchor target on the mapped prompt's own trajectory (same seed); else on the erase prompt's
    states = pool.target_states if mapped else pool.states
    assert not torch.equal(pool.states[1, 1], pool.anchor_states[1, 1])
    if mapped:
        assert not torch.equal(pool.states[1, 1], pool.target_states[1, 1])
    picks = [(1, 1)]
    with torch.no_grad(), trainer.adapters.disabled():
        def velocity(prompt):
            context, lengths = word_conditioner.encode([prompt])
            return trainer.model(states[1, 1][None], pool.sigmas[1][None], context, lengths).float()
        concept, reference = velocity(pool.prompts[1]), velocity(MAPPED.targets[1] if target == "anchor" else "")
    teacher = trainer._teacher(picks)
    if target == "anchor":
        torch.testing.assert_close(teacher["target"], reference, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(teacher["concept"], concept, rtol=1e-4, atol=1e-5)
    # adapters start as a zero delta, so the student is the teacher: L_erase = (1 + η)²·‖v(c) − v(reference)‖²
    loss = trainer.erase_parts(picks, teacher, shuffle=False)["erase"]
    expected = (1 + eta) ** 2 * torch.nn.functional.mse_loss(concept, reference)
    torch.testing.assert_close(loss, expected, rtol=1e-3, atol=1e-7)
    assert float(expected) > 1e-6


def test_without_targets_the_anchor_target_uses_the_anchors(word_conditioner):
    trainer = make_trainer(word_conditioner)
    assert trainer.pool.targets == [PROMPTS.anchors[index % 2] for index in range(trainer.pool.size)]
    assert all(math.isfinite(trainer.train_step()["loss_erase"]) for _ in range(2))
