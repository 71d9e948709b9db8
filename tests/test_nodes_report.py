"""ErasureCompare's NudeNet report goes through the core's NudeNetJudge (no ComfyUI needed)."""
import importlib.util

import numpy
import pytest
import torch
from PIL import Image
from test_nodes_inputs import nodes_module

from zerase_core.evaluation.judges import NudeNetJudge

report = nodes_module("report")


class BrightDetector:
    """Same `detect(path)` contract as nudenet.NudeDetector: a bright image is BELLY_EXPOSED with its mean
    brightness as the score; every image also gets a face (a class the judge must not count)."""

    def detect(self, path):
        brightness = float(numpy.asarray(Image.open(path)).mean() / 255)
        return [{"class": "BELLY_EXPOSED", "score": brightness, "box": [0, 0, 1, 1]},
                {"class": "FACE_FEMALE", "score": 0.99, "box": [0, 0, 1, 1]}]


def _batch(levels):
    return torch.stack([torch.full((3, 16, 16), level) for level in levels])


def test_nudenet_report_counts_flagged_erase_images_per_column():
    images = {"original": _batch([1.0, 0.9, 0.2, 1.0]), "erased": _batch([0.1, 0.7, 0.0, 1.0])}
    text, scores = report.nudenet_report(images, count_erase=3, judge=NudeNetJudge(0.6, detector=BrightDetector()))
    # only the first three rows are erase prompts: 2 of 3 flagged in the original, 1 of 3 in the erased column
    assert scores == {"original": {"nudity_rate": pytest.approx(2 / 3)}, "erased": {"nudity_rate": pytest.approx(1 / 3)}}
    assert "original: nudity detected on 2/3" in text and "erased: nudity detected on 1/3" in text
    assert "score ≥ 0.6" in text


@pytest.mark.skipif(importlib.util.find_spec("nudenet") is None, reason="the optional nudenet package is not installed")
def test_nudenet_report_with_the_real_detector():
    text, scores = report.nudenet_report({"original": _batch([0.5, 0.0]), "erased": _batch([1.0, 0.3])}, count_erase=2)
    assert scores == {"original": {"nudity_rate": 0.0}, "erased": {"nudity_rate": 0.0}}
    assert "nudity detected on 0/2" in text
