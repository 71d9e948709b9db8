"""The shuffle bank (EraseConfig.shuffle_bank): word orders drawn from their own seeded stream with keywords whole,
encoded before training; training then never calls the text encoder and the trainer keeps no reference to it;
resume stays bit-exact. Tiny random DiT with refiners, word-level conditioner."""
from __future__ import annotations

import dataclasses
import gc
import json
import weakref

import numpy
import pytest
import torch
from zerase_fixtures import TINY_CONFIG, WordConditioner, fresh_dit

from zerase_core.common.prompts import PromptSet
from zerase_core.engine.erase_config import EraseConfig
from zerase_core.engine.shuffle_bank import ShuffleBank
from zerase_core.engine.trainer import EraseTrainer

PROMPTS = PromptSet(erase=("a red circle on white background", "a red star on black background"),
                    keywords=("red circle", "red star"),
                    anchors=("a circle on white background", "a star on black background"))
WORDS = "a red blue green circle square star on white black background with".split()


class CountingConditioner(WordConditioner):
    """The word conditioner, counting the prompts it encodes."""

    def __init__(self):
        super().__init__(WORDS)
        self.encoded = 0

    def encode(self, prompts):
        self.encoded += len(prompts)
        return super().encode(prompts)


def make_trainer(conditioner, **overrides) -> EraseTrainer:
    settings = dict(steps=4, pool_prompts=2, sample_steps=2, batch_size=2, sample_cfg=1.0, latent_size=(4, 4), rank=2,
                    stationarity_every=2, shuffle_bank=3)
    settings.update(overrides)
    return EraseTrainer(fresh_dit(dataclasses.replace(TINY_CONFIG, n_layers=2)), conditioner, PROMPTS,
                        EraseConfig(**settings))


def test_a_bank_holds_word_orders_with_each_keyword_whole_fixed_by_the_seed():
    bank = ShuffleBank(PROMPTS, PROMPTS.erase, size=5, seed=0)
    for prompt, orders in bank.orders.items():
        assert len(orders) == 5 and len(set(orders)) > 1
        keyword = PROMPTS.keywords_in(prompt)[0]
        for order in orders:
            assert sorted(order.split()) == sorted(prompt.split()) and keyword in order
    assert ShuffleBank(PROMPTS, PROMPTS.erase, 5, seed=0).orders == bank.orders
    assert ShuffleBank(PROMPTS, PROMPTS.erase, 5, seed=1).orders != bank.orders
    picks = {bank.pick(PROMPTS.erase[0], numpy.random.default_rng(seed), 0.9) for seed in range(60)}
    assert PROMPTS.erase[0] in picks and picks <= {PROMPTS.erase[0], *bank.orders[PROMPTS.erase[0]]}


def test_with_a_bank_training_never_calls_the_text_encoder_and_keeps_no_reference_to_it():
    conditioner = CountingConditioner()
    trainer = make_trainer(conditioner)
    encoded = conditioner.encoded
    assert encoded > 0 and trainer.bank is not None
    assert all(order in trainer.pool.segments.text for order in trainer.bank.prompts())   # text segments kept too
    history = trainer.run()
    assert conditioner.encoded == encoded
    assert all(numpy.isfinite(list(record.metrics.values())).all() for record in history)
    released = weakref.ref(conditioner)
    del conditioner
    gc.collect()
    assert released() is None


def test_a_bank_works_without_kept_segments_and_refuses_unknown_prompts():
    trainer = make_trainer(CountingConditioner(), cache=False)
    assert trainer.pool.segments is None
    trainer.run()
    with pytest.raises(ValueError, match="not encoded before training"):
        trainer.conditioner.encode(["a green square"])


def test_resume_with_a_bank_reproduces_an_uninterrupted_run_bit_for_bit(word_conditioner):
    straight = make_trainer(word_conditioner)
    straight.run()
    first = make_trainer(word_conditioner)
    first.train_step()
    first.train_step()
    metadata = json.loads(json.dumps(first.state_metadata()))
    resumed = make_trainer(word_conditioner)
    resumed.restore(first.adapters.export_tensors(), first.state_tensors(), metadata)
    resumed.run()
    ours, theirs = resumed.adapters.export_tensors(), straight.adapters.export_tensors()
    assert all(torch.equal(ours[key], theirs[key]) for key in theirs)
    assert [record.metrics for record in resumed.history] == [record.metrics for record in straight.history]


@pytest.mark.parametrize("value", [-1, 5000, 1.5, True])
def test_bank_sizes_out_of_range_are_refused(value):
    with pytest.raises(ValueError, match="shuffle_bank"):
        EraseConfig(shuffle_bank=value)
