"""Pure metrics on images, features and judge verdicts (no model in here).

  Acc_e = P(judge finds the erased value | erase prompt)            (lower is better)
  Acc_ir = mean over unrelated prompts and attributes of [verdict == asked]   (higher is better)
  H = Acc_ir − Acc_e
On erase prompts (the erasure must replace the concept, not delete the picture):
  other[a] = P(verdict a == asked | erase prompt states a), for every stated attribute a except the erased one
  no_object = P(the judge finds no object: shape "none");  blank = P(no object, colour and pattern: an empty canvas)
  H_content = (1 − Acc_e) · other · (1 − no_object)   (0 for a blank image, whatever it erased)
  FD(a, b) = ‖μ_a − μ_b‖² + Tr(Σ_a + Σ_b − 2 (Σ_a^½ Σ_b Σ_a^½)^½)    (Fréchet distance of Gaussian fits)
  high-frequency energy = share of an image's luminance spectrum (mean removed) above `cutoff` × Nyquist
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def detection_rate(verdicts: list[dict[str, str]], attribute: str, value: str) -> float:
    """Fraction of verdicts that name `value` for `attribute` (Acc_e, and the attack success of a probe)."""
    if not verdicts:
        raise ValueError("detection_rate needs at least one verdict; the prompt set is empty")
    missing = [index for index, verdict in enumerate(verdicts) if attribute not in verdict]
    if missing:
        raise ValueError(
            f"the judge gave no {attribute!r} verdict for image(s) {missing[:5]}; "
            f"it knows {sorted(verdicts[missing[0]])}"
        )
    return sum(verdict[attribute] == value for verdict in verdicts) / len(verdicts)


def attribute_accuracy(verdicts: list[dict[str, str]], expected: list[dict[str, str]]) -> float:
    """Mean over images and over every attribute each image asked for of [verdict == asked] (Acc_ir)."""
    if len(verdicts) != len(expected) or not verdicts:
        raise ValueError(
            f"attribute_accuracy needs one expected dict per verdict, got {len(verdicts)} verdicts "
            f"and {len(expected)} expected"
        )
    hits = [
        verdict.get(name) == value
        for verdict, wanted in zip(verdicts, expected, strict=True)
        for name, value in wanted.items()
    ]
    if not hits:
        raise ValueError("the expected attribute dicts are all empty: nothing to score")
    return sum(hits) / len(hits)


def _psd_sqrt(matrix: torch.Tensor) -> torch.Tensor:
    values, vectors = torch.linalg.eigh(matrix)
    return (vectors * values.clamp(min=0).sqrt()) @ vectors.T


def frechet_from_statistics(
    mean_a: torch.Tensor, covariance_a: torch.Tensor, mean_b: torch.Tensor, covariance_b: torch.Tensor
) -> float:
    """Fréchet distance of N(mean_a, covariance_a) and N(mean_b, covariance_b), in float64.

    Uses Σ_a^½ Σ_b Σ_a^½ (symmetric PSD), so the matrix square root is an eigen-decomposition, never complex.
    """
    mean_a, mean_b = mean_a.double(), mean_b.double()
    covariance_a, covariance_b = covariance_a.double(), covariance_b.double()
    root_a = _psd_sqrt(covariance_a)
    middle = root_a @ covariance_b @ root_a
    cross = torch.linalg.eigvalsh((middle + middle.T) / 2).clamp(min=0).sqrt().sum()
    distance = (mean_a - mean_b).square().sum() + covariance_a.trace() + covariance_b.trace() - 2 * cross
    return max(0.0, float(distance))


def frechet_distance(features_a: torch.Tensor, features_b: torch.Tensor) -> float:
    """Fréchet distance between two feature sets (N, D) and (M, D); each needs at least two rows."""
    if features_a.dim() != 2 or features_b.dim() != 2 or features_a.shape[1] != features_b.shape[1]:
        raise ValueError(
            f"frechet_distance needs (N, D) and (M, D) features, got {tuple(features_a.shape)} and "
            f"{tuple(features_b.shape)}"
        )
    if min(len(features_a), len(features_b)) < 2:
        raise ValueError(
            f"frechet_distance needs ≥ 2 samples per set for a covariance, got {len(features_a)} and "
            f"{len(features_b)}; evaluate more prompts or seeds"
        )
    statistics = []
    for features in (features_a, features_b):
        features = features.double()
        statistics += [features.mean(dim=0), torch.cov(features.T).reshape(features.shape[1], features.shape[1])]
    return frechet_from_statistics(*statistics)


def high_frequency_energy(images: torch.Tensor, cutoff: float = 0.5) -> torch.Tensor:
    """(B, 3, H, W) in [0, 1] -> (B,) share of luminance spectral energy above `cutoff` × Nyquist (0 if flat).

    Collapsed single-stream DiTs output grain and noise (the failure the paper shows for ESD-style tuning of the
    shared projections): this share rises towards 1, while clean flat-colour renders keep most energy at low
    frequencies.
    """
    if images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"images must be (B, 3, H, W) in [0, 1], got shape {tuple(images.shape)}")
    if not 0.0 < cutoff < 1.5:
        raise ValueError(f"cutoff {cutoff} must be in (0, 1.5) (a fraction of the Nyquist frequency)")
    weights = torch.tensor([0.299, 0.587, 0.114], dtype=torch.float64).view(1, 3, 1, 1)
    luminance = (images.double() * weights).sum(dim=1)
    luminance = luminance - luminance.mean(dim=(1, 2), keepdim=True)
    power = torch.fft.fft2(luminance).abs().square()
    rows = torch.fft.fftfreq(images.shape[2], dtype=torch.float64)
    columns = torch.fft.fftfreq(images.shape[3], dtype=torch.float64)
    radius = torch.sqrt(rows[:, None] ** 2 + columns[None, :] ** 2) / 0.5  # 1 = Nyquist along an axis
    total = power.sum(dim=(1, 2))
    high = (power * (radius > cutoff)).sum(dim=(1, 2))
    return torch.where(total > 0, high / total.clamp(min=1e-30), torch.zeros_like(total)).float()


def thumbnail_features(images: torch.Tensor, side: int = 4) -> torch.Tensor:
    """(B, 3, H, W) -> (B, 3·side²) average-pooled colours: a weight-free feature space for any judge."""
    if images.dim() != 4:
        raise ValueError(f"images must be (B, C, H, W), got shape {tuple(images.shape)}")
    return F.adaptive_avg_pool2d(images.float(), side).flatten(1)


NONE = "none"
OBJECT_ATTRIBUTES = ("shape", "colour", "pattern")  # what an empty canvas lacks; its background stays


def stated_accuracy(
    verdicts: list[dict[str, str]], expected: list[dict[str, str]], skip: str
) -> tuple[float | None, dict[str, float | None]]:
    """(mean, per attribute) accuracy of the attributes each prompt states other than `skip` (the erased one):
    the content an erasure should keep on its own erase prompts. None where no prompt states an attribute."""
    if len(verdicts) != len(expected):
        raise ValueError(
            f"stated_accuracy needs one expected dict per verdict, got {len(verdicts)} and {len(expected)}"
        )
    hits: dict[str, list[bool]] = {}
    for verdict, wanted in zip(verdicts, expected, strict=True):
        for name, value in wanted.items():
            if name != skip:
                hits.setdefault(name, []).append(verdict.get(name) == value)
    per_attribute: dict[str, float | None] = {name: sum(found) / len(found) for name, found in hits.items()}
    every = [hit for found in hits.values() for hit in found]
    return (sum(every) / len(every) if every else None), per_attribute


def no_object_rate(verdicts: list[dict[str, str]]) -> float | None:
    """Share of images in which the judge finds no object (shape "none"); None for a judge without shapes."""
    if not verdicts or any("shape" not in verdict for verdict in verdicts):
        return None
    return sum(verdict["shape"] == NONE for verdict in verdicts) / len(verdicts)


def blank_rate(verdicts: list[dict[str, str]]) -> float | None:
    """Share of empty canvases: no shape, no colour and no pattern found (only a background)."""
    if not verdicts or any(any(name not in verdict for name in OBJECT_ATTRIBUTES) for verdict in verdicts):
        return None
    return sum(all(verdict[name] == NONE for name in OBJECT_ATTRIBUTES) for verdict in verdicts) / len(verdicts)


def content_score(acc_e: float, other: float | None, no_object: float | None) -> float | None:
    """H_content = (1 − Acc_e) · other · (1 − no_object): high only when the concept is gone AND the rest of the
    asked picture is there; an empty canvas scores 0 (no object), a copy of the base scores ≈ 0 (Acc_e ≈ 1)."""
    if other is None:
        return None
    return (1.0 - acc_e) * other * (1.0 - (no_object or 0.0))
