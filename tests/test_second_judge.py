"""The second nano judge (judge2): its own architecture, saved and loaded like the evaluator, and a few real
training steps on renders lower its loss."""
import argparse

import numpy
import pytest
import torch

from zerase_core.nano.evaluator import CLASSES
from zerase_core.nano.none_renders import render_mixed
from zerase_core.nano.second_judge import SecondJudge, SecondJudgeConfig
from zerase_core.nano.training.evaluator import label_tensor


def test_save_load_round_trip_and_predictions_name_the_classes(tmp_path):
    torch.manual_seed(0)
    judge = SecondJudge(SecondJudgeConfig(widths=(4, 4, 8, 8, 8), feature_dim=8)).eval()
    images, _ = render_mixed(numpy.random.default_rng(0), 6)
    path = tmp_path / "judge2.safetensors"
    judge.save(path)
    loaded = SecondJudge.load(path)
    for attribute, names in loaded.predict(images).items():
        assert names == judge.predict(images)[attribute] and set(names) <= set(CLASSES[attribute])
    with pytest.raises(ValueError, match="5 widths"):
        SecondJudgeConfig(widths=(4, 4))
    from zerase_core.nano.evaluator import Evaluator
    Evaluator().save(tmp_path / "evaluator.safetensors")
    with pytest.raises(Exception, match="judge2|kind"):
        SecondJudge.load(tmp_path / "evaluator.safetensors")


def test_training_steps_on_renders_lower_the_loss():
    torch.manual_seed(1)
    judge = SecondJudge(SecondJudgeConfig(widths=(8, 8, 16, 16, 16), feature_dim=16))
    optimizer = torch.optim.AdamW(judge.parameters(), lr=1e-2)
    images, labels = render_mixed(numpy.random.default_rng(1), 32)
    targets = label_tensor(labels)

    def loss():
        logits = judge.logits(images)
        return sum(torch.nn.functional.cross_entropy(logits[name], targets[name]) for name in CLASSES)
    first = float(loss().detach())
    for _ in range(60):
        optimizer.zero_grad()
        value = loss()
        value.backward()
        optimizer.step()
    assert float(loss().detach()) < 0.5 * first


def test_judge2_is_a_training_part():
    from zerase_core.nano import train
    assert "judge2" in train.PARTS
    parser = argparse.ArgumentParser()
    from zerase_core.nano.training import judge2
    judge2.add_arguments(parser)
    assert parser.parse_args([]).seed == 7          # its own seed, not the evaluator's
