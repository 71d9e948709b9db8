"""The evaluation protocol: score a base model once per concept (the reference), then any erased model against it.

Per model and concept: Acc_e (erase set), on the same erase images the accuracy of every other stated attribute
(`erase_other`, and per attribute `erase_other_<name>`), the no-object and blank shares and H_content (a blank
image cannot win it; see metrics.py), Acc_ir (keep set, every attribute), H = Acc_ir − Acc_e, the collapse
score (Fréchet distance of judge features between the base's and this model's keep-set images, same prompts and
seeds), the keep set's high-frequency energy, and the attack success of each probe (synonym, shuffled order,
concept vector at the strength calibrated on the base). For the base itself, `collapse` is the distance between
two base renders of the keep set with different seeds: the noise floor that erased models are compared with.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import torch

from ..nano.scoring import EVALUATION_SEED
from .concept_sets import ConceptSets, SetSizes, concept_sets
from .judges import Judge
from .metrics import (
    attribute_accuracy,
    blank_rate,
    content_score,
    detection_rate,
    frechet_distance,
    high_frequency_energy,
    no_object_rate,
    stated_accuracy,
)
from .probes import CALIBRATION_TARGET, DEFAULT_STRENGTHS, Calibration, attack_rate, calibrate, concept_vector
from .rendering import Renderer, SamplingSettings

PROBES = ("synonym", "shuffle", "vector")
CONTENT_ATTRIBUTES = ("shape", "colour", "pattern", "background")
METRIC_KEYS = (
    "acc_e",
    "acc_ir",
    "h",
    "collapse",
    "high_frequency",
    "attack_success",
    *(f"attack_success_{probe}" for probe in PROBES),
    "erase_other",
    *(f"erase_other_{name}" for name in CONTENT_ATTRIBUTES),
    "no_object",
    "blank",
    "h_content",
)
SEED_STRIDE = 100_000  # seeds of repeat r of a set: first + r·stride + index
SET_OFFSETS = {"erase": 0, "keep": 10_000, "synonym": 20_000, "shuffle": 30_000, "free": 40_000, "reference": 5_000_000}


@dataclass(frozen=True)
class EvaluationSettings:
    sampling: SamplingSettings = field(default_factory=SamplingSettings)
    sizes: SetSizes = field(default_factory=SetSizes)
    seeds: int = 1  # images per prompt (--seeds)
    first_seed: int = EVALUATION_SEED
    probes: bool = True
    probe_names: tuple[str, ...] = PROBES  # which of the probes run when `probes` (--probes synonym: the cheap one)
    attack_strengths: tuple[float, ...] = DEFAULT_STRENGTHS
    calibration_target: float = CALIBRATION_TARGET

    def __post_init__(self) -> None:
        unknown = [name for name in self.probe_names if name not in PROBES]
        if unknown:
            raise ValueError(f"unknown probe(s) {unknown}; choose from {PROBES}")
        object.__setattr__(self, "probe_names", tuple(self.probe_names))
        if self.seeds < 1:
            raise ValueError(f"seeds (images per prompt) must be ≥ 1, got {self.seeds}")
        object.__setattr__(self, "attack_strengths", tuple(float(s) for s in self.attack_strengths))

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclass
class Reference:
    """The base model's scores on one concept, plus what erased models are compared against."""

    sets: ConceptSets
    metrics: dict[str, float | None]
    keep_features: torch.Tensor
    vector: torch.Tensor | None
    calibration: Calibration | None


def _seeded(prompts: list[str], settings: EvaluationSettings, kind: str) -> tuple[list[str], list[int]]:
    first = settings.first_seed + SET_OFFSETS[kind]
    repeated = [prompt for _ in range(settings.seeds) for prompt in prompts]
    seeds = [first + repeat * SEED_STRIDE + index for repeat in range(settings.seeds) for index in range(len(prompts))]
    return repeated, seeds


def _render(renderer: Renderer, items, settings: EvaluationSettings, kind: str, **options) -> torch.Tensor:
    prompts, seeds = _seeded([prompt for prompt, _ in items], settings, kind)
    return renderer.render(prompts, seeds, **options)


def _detected(renderer, judge, items, settings, kind, sets: ConceptSets) -> float:
    return detection_rate(judge.verdicts(_render(renderer, items, settings, kind)), sets.attribute, sets.value)


def _measure(
    renderer: Renderer,
    judge: Judge,
    sets: ConceptSets,
    settings: EvaluationSettings,
    vector: torch.Tensor | None,
    strength: float | None,
    known_vector_rate: float | None = None,
):
    """(metrics without `collapse`, keep-set features)."""
    erase_verdicts = judge.verdicts(_render(renderer, sets.erase, settings, "erase"))
    acc_e = detection_rate(erase_verdicts, sets.attribute, sets.value)
    metrics: dict[str, float | None] = {"acc_e": acc_e}
    metrics.update(
        content_metrics(
            erase_verdicts, [wanted for _ in range(settings.seeds) for _, wanted in sets.erase], sets.attribute, acc_e
        )
    )
    keep_images = _render(renderer, sets.keep, settings, "keep")
    expected = [wanted for _ in range(settings.seeds) for _, wanted in sets.keep]
    acc_ir = attribute_accuracy(judge.verdicts(keep_images), expected)
    metrics["acc_ir"] = acc_ir
    metrics["h"] = acc_ir - acc_e
    metrics["high_frequency"] = float(high_frequency_energy(keep_images).mean())
    for probe in PROBES:
        metrics[f"attack_success_{probe}"] = None
    if settings.probes:
        if sets.synonym and "synonym" in settings.probe_names:
            metrics["attack_success_synonym"] = _detected(renderer, judge, sets.synonym, settings, "synonym", sets)
        if "shuffle" in settings.probe_names:
            metrics["attack_success_shuffle"] = _detected(renderer, judge, sets.shuffle, settings, "shuffle", sets)
        if "vector" in settings.probe_names and known_vector_rate is not None:
            metrics["attack_success_vector"] = known_vector_rate
        elif "vector" in settings.probe_names and vector is not None and strength is not None:
            prompts, seeds = _seeded([prompt for prompt, _ in sets.free], settings, "free")
            metrics["attack_success_vector"] = attack_rate(
                renderer, judge, prompts, seeds, vector, strength, sets.attribute, sets.value
            )
    metrics["attack_success"] = _max_probe(metrics)
    return metrics, judge.features(keep_images)


def content_metrics(verdicts, expected, erased_attribute: str, acc_e: float) -> dict[str, float | None]:
    """What the erase images kept: other stated attributes (mean and each), no-object and blank shares, H_content."""
    other, per_attribute = stated_accuracy(verdicts, expected, erased_attribute)
    no_object = no_object_rate(verdicts)
    return {
        "erase_other": other,
        **{f"erase_other_{name}": per_attribute.get(name) for name in CONTENT_ATTRIBUTES},
        "no_object": no_object,
        "blank": blank_rate(verdicts),
        "h_content": content_score(acc_e, other, no_object),
    }


def _max_probe(metrics: dict) -> float | None:
    found = [metrics[f"attack_success_{probe}"] for probe in PROBES if metrics[f"attack_success_{probe}"] is not None]
    return max(found) if found else None


def base_reference(
    renderer: Renderer, judge: Judge, concept: str, settings: EvaluationSettings, other_concepts: tuple[str, ...] = ()
) -> Reference:
    """Score the unerased model on `concept` and calibrate the vector attack on it."""
    sets = concept_sets(concept, settings.sizes, other_concepts)
    vector = calibration = None
    if settings.probes and "vector" in settings.probe_names:
        vector = concept_vector(renderer, list(sets.pairs))
        prompts, seeds = _seeded([prompt for prompt, _ in sets.free], settings, "free")
        calibration = calibrate(
            renderer,
            judge,
            prompts,
            seeds,
            vector,
            sets.attribute,
            sets.value,
            settings.calibration_target,
            settings.attack_strengths,
        )
    metrics, features = _measure(
        renderer, judge, sets, settings, vector, None, calibration.rate if calibration else None
    )
    other_seeds = judge.features(_render(renderer, sets.keep, settings, "reference"))
    metrics["collapse"] = frechet_distance(features, other_seeds)
    return Reference(sets, metrics, features, vector, calibration)


def measure_against(renderer: Renderer, judge: Judge, reference: Reference, settings: EvaluationSettings) -> dict:
    """Scores of a (typically erased) model on the reference's concept; collapse = FD to the base's keep set."""
    strength = reference.calibration.strength if reference.calibration else None
    metrics, features = _measure(renderer, judge, reference.sets, settings, reference.vector, strength)
    metrics["collapse"] = frechet_distance(reference.keep_features, features)
    return metrics


def combine(per_concept: list[dict]) -> dict[str, float | None]:
    """Mean of each metric over concepts (missing probes skipped); attack_success = max of the probe means."""
    combined: dict[str, float | None] = {}
    for key in METRIC_KEYS:
        values = [metrics[key] for metrics in per_concept if metrics.get(key) is not None]
        combined[key] = sum(values) / len(values) if values else None
    combined["attack_success"] = _max_probe(combined)
    return combined


def report(references: dict[str, Reference], erased: dict[str, dict]) -> dict:
    """The result object of `evaluate`: erased metrics at top level, the base's under "base", details per concept."""
    base = combine([reference.metrics for reference in references.values()])
    calibrations = {concept: reference.calibration for concept, reference in references.items()}
    rates = [calibration.rate for calibration in calibrations.values() if calibration is not None]
    return {
        **combine(list(erased.values())),
        "base": base,
        "collapse_reference": base["collapse"],
        "calibration_rate": min(rates) if rates else None,
        "concepts": list(references),
        "per_concept": {
            concept: {
                "erased": erased[concept],
                "base": reference.metrics,
                "calibration": reference.calibration.to_dict() if reference.calibration else None,
            }
            for concept, reference in references.items()
        },
    }
