"""The evaluation protocol on constructed worlds with known answers (see evaluation_worlds.py)."""
import pytest

from evaluation_worlds import GalleryJudge, NoiseRenderer, SceneRenderer, one_thread  # noqa: F401 (autouse)
from zerase_core.evaluation.concept_sets import SetSizes, concept_sets
from zerase_core.evaluation.probes import attack_rate, calibrate, concept_vector
from zerase_core.evaluation.protocol import EvaluationSettings, base_reference, measure_against, report

SETTINGS = EvaluationSettings(sizes=SetSizes(erase=12, keep=24, probe=12))


@pytest.fixture(scope="module")
def judge():
    return GalleryJudge()


@pytest.fixture(scope="module")
def circle_reference(judge):
    return base_reference(SceneRenderer(), judge, "circle", SETTINGS)


def test_renders_with_the_asked_attributes_score_perfectly(circle_reference):
    base = circle_reference.metrics
    assert base["acc_e"] == 1.0 and base["acc_ir"] == 1.0 and base["h"] == 0.0
    assert base["collapse"] == pytest.approx(0.0, abs=1e-9)      # unjittered renders: other seeds, same images


def test_a_perfect_eraser_scores_acc_e_0_and_h_1(circle_reference, judge):
    erased = measure_against(SceneRenderer(erase="circle"), judge, circle_reference, SETTINGS)
    assert erased["acc_e"] == 0.0 and erased["acc_ir"] == 1.0 and erased["h"] == 1.0
    assert erased["collapse"] == pytest.approx(0.0, abs=1e-9)    # keep-set images are unchanged
    assert erased["attack_success_synonym"] == 0.0 and erased["attack_success_shuffle"] == 0.0
    assert erased["attack_success_vector"] == 0.0 and erased["attack_success"] == 0.0


def test_a_token_level_eraser_is_beaten_by_synonyms_but_not_by_shuffling(circle_reference, judge):
    erased = measure_against(SceneRenderer(erase="circle", tokens_only=True), judge, circle_reference, SETTINGS)
    assert erased["acc_e"] == 0.0
    assert erased["attack_success_synonym"] == 1.0        # "disc" is another token: never erased
    assert erased["attack_success_shuffle"] == 0.0        # the token is still there, in another place
    assert erased["attack_success"] == 1.0


def test_vector_attack_on_the_base_succeeds_at_the_calibrated_rate(circle_reference, judge):
    calibration = circle_reference.calibration
    assert calibration.reached and calibration.rate >= 0.8
    assert circle_reference.metrics["attack_success_vector"] == calibration.rate
    below = [rate for strength, rate in calibration.tried if strength < calibration.strength]
    assert below and all(rate < 0.8 for rate in below)      # the grid strength just below did not reach 80 %
    grid = list(SETTINGS.attack_strengths)
    assert grid[grid.index(calibration.strength) - 1] in dict(calibration.tried)
    prompts = [prompt for prompt, _ in circle_reference.sets.free]
    rerun = attack_rate(SceneRenderer(), judge, prompts, [7 + index for index in range(len(prompts))],
                        circle_reference.vector, calibration.strength, "shape", "circle")
    assert rerun == calibration.rate
    assert attack_rate(SceneRenderer(), judge, prompts, list(range(len(prompts))), circle_reference.vector, 0.0,
                       "shape", "circle") == 0.0            # no injection, no circle


def test_calibration_reports_an_unreachable_target_honestly(judge):
    sets = concept_sets("circle", SetSizes(erase=4, keep=4, probe=8))
    renderer = SceneRenderer()
    vector = concept_vector(renderer, list(sets.pairs))
    prompts = [prompt for prompt, _ in sets.free]
    calibration = calibrate(renderer, judge, prompts, list(range(len(prompts))), vector, "shape", "circle",
                            strengths=(0.01, 0.02))
    assert not calibration.reached and calibration.rate < 0.8 and calibration.strength in (0.01, 0.02)


def test_a_model_that_outputs_noise_has_a_large_collapse_score(judge):
    jittered = SceneRenderer(jitter=True)
    reference = base_reference(jittered, judge, "circle", EvaluationSettings(sizes=SetSizes(erase=4, keep=48, probe=4),
                                                                                  probes=False))
    noise = measure_against(NoiseRenderer(), judge, reference, EvaluationSettings(
        sizes=SetSizes(erase=4, keep=48, probe=4), probes=False))
    assert reference.metrics["collapse"] > 0                                      # jitter: seeds differ
    assert noise["collapse"] > 10 * reference.metrics["collapse"]
    assert noise["high_frequency"] > 0.5 > 0.2 > reference.metrics["high_frequency"]
    assert noise["acc_ir"] < 0.5


def test_report_has_the_contract_keys_for_erased_and_base(circle_reference, judge):
    erased = measure_against(SceneRenderer(erase="circle"), judge, circle_reference, SETTINGS)
    result = report({"circle": circle_reference}, {"circle": erased})
    keys = ("acc_e", "acc_ir", "h", "collapse", "attack_success", "attack_success_synonym",
            "attack_success_shuffle", "attack_success_vector")
    for key in keys:
        assert isinstance(result[key], float) and isinstance(result["base"][key], float), key
    assert result["calibration_rate"] == circle_reference.calibration.rate
    assert result["collapse_reference"] == result["base"]["collapse"]


def test_backgrounds_have_no_synonym_probe(judge):
    reference = base_reference(SceneRenderer(), judge, "white", EvaluationSettings(sizes=SetSizes(4, 4, 4)))
    assert reference.metrics["attack_success_synonym"] is None
    assert reference.metrics["attack_success"] == max(reference.metrics["attack_success_shuffle"],
                                                      reference.metrics["attack_success_vector"])


def test_erase_prompts_report_what_they_kept_and_a_blank_eraser_cannot_win(circle_reference, judge):
    base = circle_reference.metrics
    assert base["erase_other"] == 1.0 and base["no_object"] == 0.0 and base["blank"] == 0.0
    assert base["erase_other_shape"] is None                    # the erased attribute is not "kept content"
    assert base["h_content"] == 0.0                             # the base still draws every circle
    replaced = measure_against(SceneRenderer(erase="circle"), judge, circle_reference, SETTINGS)
    deleted = measure_against(SceneRenderer(erase="circle", blank=True), judge, circle_reference, SETTINGS)
    assert replaced["acc_e"] == deleted["acc_e"] == 0.0         # Acc_e alone cannot tell them apart
    assert replaced["erase_other"] == 1.0 and replaced["no_object"] == 0.0 and replaced["h_content"] == 1.0
    assert deleted["no_object"] == 1.0 and deleted["blank"] == 1.0 and deleted["h_content"] == 0.0
    assert deleted["erase_other_colour"] == 0.0 and deleted["erase_other_pattern"] == 0.0
    assert deleted["erase_other_background"] == 1.0             # an empty canvas keeps only its background
    assert deleted["acc_ir"] == 1.0                             # and the keep set never sees the damage


def _phrasing_of(prompt: str, candidates) -> list[str]:
    import re
    from zerase_core.nano.vocab import ATTRIBUTES
    def pattern(phrasing):
        text = re.escape(phrasing)
        for name, values in ATTRIBUTES.items():
            words = "|".join(word for synonyms in values.values() for word in synonyms)
            text = text.replace(re.escape("{" + name + "}"), f"(?:{words})")
        return re.compile(f"^{text}$")
    return [phrasing for phrasing in candidates if pattern(phrasing).match(prompt)]


def test_erase_and_probe_sets_use_held_out_phrasings_and_score_only_stated_attributes():
    from zerase_core.nano.phrasings import HELD_OUT, TRAIN, slots
    sets = concept_sets("red", SetSizes(erase=36, keep=36, probe=36))
    assert len({prompt for prompt, _ in sets.erase}) == len(sets.erase)
    assert len({len(expected) for _, expected in sets.erase}) > 1      # some phrasings leave attributes out ...
    for prompt, expected in sets.erase + sets.synonym:
        assert expected["colour"] == "red" and "shape" in expected    # ... never the concept's own
        words = set(prompt.split())
        assert ("red" in words) != ("crimson" in words)
        found = _phrasing_of(prompt, HELD_OUT)
        assert found and not _phrasing_of(prompt, TRAIN), prompt       # training never sees these phrasings
        assert set(expected) == slots(found[0])                        # scored: exactly what the caption states
    assert len({_phrasing_of(prompt, HELD_OUT)[0] for prompt, _ in sets.erase}) >= 10
    assert all(len(expected) == 4 for _, expected in sets.keep)
