"""The nano renderer and the collapse score on real (small, random) nano-world networks."""
import pytest
import torch
from evaluation_worlds import one_thread, tiny_nano_world  # noqa: F401 (autouse fixture)
from zerase_fixtures import randomized_dit

from zerase_core.adapters.gated import AdapterConfig, AdapterSet
from zerase_core.evaluation.judges import nano_judge
from zerase_core.evaluation.metrics import frechet_distance
from zerase_core.evaluation.rendering import NanoRenderer, SamplingSettings
from zerase_core.nano import paths

FAST = SamplingSettings(steps=4, cfg=1.0)
PROMPTS = ["a plain red circle on a white background", "a striped blue star on a gray background",
           "a dotted green square on a black background", "a red circle , pink background"]


@pytest.fixture(scope="module")
def world():
    return tiny_nano_world(randomized_dit(seed=3))


def test_renderer_reproduces_world_generate(world):
    seeds = [11, 12, 13, 14]
    sampling = SamplingSettings(steps=3, cfg=2.0)
    expected = world.generate(PROMPTS, seeds, steps=3, cfg=2.0)
    assert torch.allclose(NanoRenderer(world, sampling).render(PROMPTS, seeds), expected, atol=1e-6)


def test_token_zeroing_changes_only_prompts_with_the_keyword(world):
    seeds = [1, 2, 3, 4]
    plain = NanoRenderer(world, FAST).render(PROMPTS, seeds)
    zeroed = NanoRenderer(world, FAST, suppress_keywords=("circle",)).render(PROMPTS, seeds)
    changed = [not torch.allclose(a, b, atol=1e-6) for a, b in zip(plain, zeroed)]
    assert changed == [True, False, False, True]


def test_offset_changes_the_rendering(world):
    renderer = NanoRenderer(world, FAST)
    features, _ = renderer.encode(PROMPTS[:1])
    offset = torch.zeros_like(features[0])
    assert torch.equal(renderer.render(PROMPTS[:1], [5], offset=offset), renderer.render(PROMPTS[:1], [5]))
    assert not torch.allclose(renderer.render(PROMPTS[:1], [5], offset=offset + 3.0), renderer.render(PROMPTS[:1], [5]))


def _broken(model, seed: int = 0) -> AdapterSet:
    """Ungated adapters on q, k and v with large random weights: a deliberately broken model."""
    adapters = AdapterSet(model, AdapterConfig(rank=4, alpha=4.0, slices=("q", "k", "v"), gate="all"))
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in adapters.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator) * 2.0)
    return adapters.attach(model)


def _collapse_ratio(world, sampling, prompts, judge) -> tuple[float, float]:
    renderer = NanoRenderer(world, sampling)
    seeds = list(range(len(prompts)))
    other = [seed + 10_000 for seed in seeds]
    base = judge.features(renderer.render(prompts, seeds))
    floor = frechet_distance(base, judge.features(renderer.render(prompts, other)))
    adapters = _broken(world.dit)
    try:
        broken = frechet_distance(base, judge.features(renderer.render(prompts, seeds)))
    finally:
        adapters.detach()
    return broken, floor


SHIPPED = all(path.exists() for path in (paths.DIT, paths.TEXT_ENCODER, paths.CODEC, paths.EVALUATOR))


@pytest.mark.skipif(not SHIPPED, reason="nano weights not trained yet")
def test_broken_adapters_collapse_the_shipped_nano_model():
    from zerase_core.evaluation.concept_sets import SetSizes, concept_sets
    from zerase_core.nano.world import NanoWorld
    shipped = NanoWorld.load()
    prompts = [prompt for prompt, _ in concept_sets("circle", SetSizes(keep=32)).keep]
    broken, floor = _collapse_ratio(shipped, SamplingSettings(steps=8), prompts, nano_judge(shipped.evaluator))
    assert broken >= 10 * floor, (broken, floor)


@pytest.mark.skipif(not paths.EVALUATOR.exists(), reason="nano evaluator weights not trained yet")
def test_shipped_judge_scores_renders_of_the_asked_attributes_near_1():
    import numpy

    from zerase_core.evaluation.concept_sets import SetSizes, concept_sets
    from zerase_core.evaluation.metrics import attribute_accuracy, detection_rate
    from zerase_core.nano.evaluator import Evaluator
    from zerase_core.nano.render import random_scene, render_batch
    judge = nano_judge(Evaluator.load())
    sets = concept_sets("star", SetSizes(erase=24, keep=48))
    rng = numpy.random.default_rng(0)
    erase_images = render_batch([random_scene(rng, **expected) for _, expected in sets.erase])
    keep_images = render_batch([random_scene(rng, **expected) for _, expected in sets.keep])
    assert detection_rate(judge.verdicts(erase_images), "shape", "star") >= 0.95
    assert attribute_accuracy(judge.verdicts(keep_images), [expected for _, expected in sets.keep]) >= 0.97
