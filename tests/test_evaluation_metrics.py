"""Metrics on inputs whose answer is known in closed form."""
import pytest
import torch

from zerase_core.evaluation.metrics import (attribute_accuracy, detection_rate, frechet_distance,
                                            frechet_from_statistics, high_frequency_energy, thumbnail_features)


def test_frechet_of_gaussians_matches_the_closed_form_for_diagonal_covariances():
    mean_a, mean_b = torch.tensor([0.0, 1.0, 2.0]), torch.tensor([1.0, 1.0, 0.0])
    variance_a, variance_b = torch.tensor([1.0, 4.0, 9.0]), torch.tensor([4.0, 4.0, 1.0])
    # diagonal case: ‖Δμ‖² + Σ (σ_a − σ_b)²
    expected = (mean_a - mean_b).square().sum() + (variance_a.sqrt() - variance_b.sqrt()).square().sum()
    found = frechet_from_statistics(mean_a, torch.diag(variance_a), mean_b, torch.diag(variance_b))
    assert found == pytest.approx(float(expected), abs=1e-9)


def test_frechet_is_invariant_to_a_shared_rotation_and_zero_for_identical_sets():
    generator = torch.Generator().manual_seed(0)
    features = torch.randn(200, 4, generator=generator) @ torch.randn(4, 4, generator=generator)
    shifted = features + torch.tensor([3.0, 0.0, 0.0, 4.0])
    rotation, _ = torch.linalg.qr(torch.randn(4, 4, generator=generator))
    assert frechet_distance(features, features) == pytest.approx(0.0, abs=1e-8)
    assert frechet_distance(features, shifted) == pytest.approx(25.0, rel=1e-6)     # same covariance, Δμ = (3, 0, 0, 4)
    assert frechet_distance(features @ rotation, shifted @ rotation) == pytest.approx(25.0, rel=1e-6)


def test_frechet_needs_two_samples_and_matching_widths():
    with pytest.raises(ValueError, match="≥ 2 samples"):
        frechet_distance(torch.zeros(1, 3), torch.zeros(5, 3))
    with pytest.raises(ValueError, match=r"\(N, D\)"):
        frechet_distance(torch.zeros(4, 3), torch.zeros(4, 2))


def test_high_frequency_energy_of_flat_checkerboard_and_smooth_images():
    flat = torch.full((1, 3, 64, 64), 0.3)
    rows, columns = torch.meshgrid(torch.arange(64), torch.arange(64), indexing="ij")
    checker = ((rows + columns) % 2).float().expand(1, 3, 64, 64)
    ramp = (columns / 63.0).float().expand(1, 3, 64, 64)
    energy = high_frequency_energy(torch.cat([flat, checker, ramp]))
    assert energy[0] == 0.0
    assert energy[1] == pytest.approx(1.0, abs=1e-6)
    assert energy[2] < 0.05


def test_detection_rate_and_attribute_accuracy_count_exact_matches():
    verdicts = [{"shape": "star", "colour": "red"}, {"shape": "none", "colour": "red"}, {"shape": "star", "colour": "blue"}]
    assert detection_rate(verdicts, "shape", "star") == pytest.approx(2 / 3)
    expected = [{"shape": "star", "colour": "red"}] * 3
    assert attribute_accuracy(verdicts, expected) == pytest.approx(4 / 6)
    with pytest.raises(ValueError, match="no 'pattern' verdict"):
        detection_rate(verdicts, "pattern", "plain")


def test_thumbnail_features_are_pooled_colours():
    images = torch.zeros(2, 3, 64, 64)
    images[1, 0] = 1.0
    features = thumbnail_features(images, side=2)
    assert features.shape == (2, 12)
    assert torch.equal(features[1, :4], torch.ones(4)) and features[0].abs().sum() == 0
