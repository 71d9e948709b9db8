"""Judges: the classifier wrapper and the NudeNet adapter (its detector is a third-party optional extra)."""
import importlib.util

import numpy
import pytest
import torch
from PIL import Image

from zerase_core.evaluation.judges import ClassifierJudge, NudeNetJudge


class RedDetector:
    """Stands in for nudenet.NudeDetector (same `detect(path)` contract): a red image is "exposed" with the share
    of red pixels as its score."""

    def detect(self, path):
        pixels = numpy.asarray(Image.open(path)).astype(float)
        share = float(((pixels[..., 0] > 200) & (pixels[..., 1] < 60)).mean())
        return [{"class": "BELLY_EXPOSED", "score": share, "box": [0, 0, 1, 1]},
                {"class": "FACE_FEMALE", "score": 0.99, "box": [0, 0, 1, 1]}]


def _images(red_shares):
    images = torch.zeros(len(red_shares), 3, 16, 16)
    for index, share in enumerate(red_shares):
        rows = int(round(share * 16))
        images[index, 0, :rows] = 1.0
    return images


def test_nudenet_judge_flags_only_counted_classes_above_the_threshold():
    judge = NudeNetJudge(threshold=0.6, detector=RedDetector())
    verdicts = judge.verdicts(_images([0.0, 0.5, 0.75, 1.0]))
    assert [verdict["nudity"] for verdict in verdicts] == ["none", "none", "exposed", "exposed"]
    assert judge.features(_images([1.0])).shape == (1, 48)


@pytest.mark.skipif(importlib.util.find_spec("nudenet") is not None, reason="nudenet is installed")
def test_nudenet_judge_without_the_package_says_how_to_install_it():
    with pytest.raises(ImportError, match=r"pip install 'comfyui-zerase\[nudenet\]'"):
        NudeNetJudge().verdicts(_images([1.0]))


def test_classifier_judge_turns_per_attribute_lists_into_per_image_verdicts():
    def predict(images):
        bright = images.mean(dim=(1, 2, 3)) > 0.5
        return {"light": ["bright" if flag else "dark" for flag in bright.tolist()], "kind": ["square"] * len(images)}

    judge = ClassifierJudge(predict, batch_size=2)
    images = torch.stack([torch.zeros(3, 8, 8), torch.ones(3, 8, 8), torch.ones(3, 8, 8)])
    assert judge.verdicts(images) == [{"light": "dark", "kind": "square"}, {"light": "bright", "kind": "square"},
                                      {"light": "bright", "kind": "square"}]
    assert judge.features(images).shape == (3, 48)


def test_nudenet_threshold_is_checked():
    with pytest.raises(ValueError, match="threshold 1.5"):
        NudeNetJudge(threshold=1.5)


@pytest.mark.skipif(importlib.util.find_spec("nudenet") is None, reason="the optional nudenet package is not installed")
def test_nudenet_judge_with_the_real_detector():
    """The installed NudeNet: every class the judge counts is one of its labels, and flat images (no body at all)
    go through its `detect(path)` as "none"."""
    import nudenet.nudenet as detector_module
    from zerase_core.evaluation.judges import NUDENET_EXPOSED
    labels = set(getattr(detector_module, "__labels"))
    assert set(NUDENET_EXPOSED) <= labels, sorted(set(NUDENET_EXPOSED) - labels)
    images = torch.stack([torch.full((3, 64, 64), 0.5), torch.zeros(3, 64, 64), _images([1.0])[0].repeat(1, 4, 4)])
    verdicts = NudeNetJudge().verdicts(images)
    assert verdicts == [{"nudity": "none"}] * 3
