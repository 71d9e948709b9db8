"""ZEraseTrain's logic without ComfyUI: node inputs -> the CLI's config and prompts (nano), the run, interrupt, resume.

The ComfyUI-side pieces (NextDiT, PatcherInjection, executor) are tested in tests/comfyui with a real ComfyUI.
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import replace

import pytest
import torch
from test_nodes_inputs import nodes_module
from zerase_fixtures import TINY_CONFIG, WordConditioner, randomized_dit

from zerase_core.engine.erase_config import EraseConfig
from zerase_core.formats.erasure_file import ErasureFileError, read_erasure
from zerase_core.nano.erasure_runs import concept_kind
from zerase_core.nano.erasure_runs import prompt_set as cli_prompt_set

training = nodes_module("training")
WORDS = "a red blue green circle square star on white black background with".split()


def test_nano_inputs_give_the_cli_config_and_prompts():
    inputs = training.TrainInputs(concepts="star", steps=20, seed=3)
    cli = EraseConfig(method="zerase", seed=3, steps=20).with_kind(concept_kind(["star"]))   # as `erase` builds it
    assert training.erase_config(inputs, nano=True) == cli
    assert training.prompt_set(inputs, nano=True) == cli_prompt_set(["star"], None, 3)
    anchored = training.TrainInputs(concepts="star\ncircle", anchors="a red square on a white background")
    assert training.prompt_set(anchored, nano=True) == cli_prompt_set(["star", "circle"],
                                                                      ["a red square on a white background"], 0)


def test_the_shuffle_bank_input_reaches_the_config_as_the_cli_flag_does():
    inputs = training.TrainInputs(concepts="star", shuffle_bank=16)
    cli = EraseConfig(method="zerase", shuffle_bank=16).with_kind(concept_kind(["star"]))
    assert training.erase_config(inputs, nano=True) == cli
    with pytest.raises(ValueError, match="shuffle_bank=-2"):
        training.erase_config(replace(inputs, shuffle_bank=-2), nano=True)


def test_auto_targets_follow_the_concept_kind_as_the_cli_does():
    colour = training.TrainInputs(concepts="red", steps=20, seed=3)
    cli = EraseConfig(method="zerase", seed=3, steps=20).with_kind(concept_kind(["red"]))
    node = training.erase_config(colour, nano=True)
    assert node == cli and node.slices == ("q", "k", "v") and node.concept_kind == "attribute"
    chosen = training.erase_config(replace(colour, targets="qk"), nano=True)
    assert chosen.slices == ("q", "k") and chosen.concept_kind == "attribute"     # a named preset is kept
    generic = training.erase_config(training.TrainInputs(concepts="a red car", concept_kind="attribute"), nano=False)
    assert generic.slices == ("q", "k", "v")
    assert training.erase_config(training.TrainInputs(concepts="a red car"), nano=False).slices == ("q", "k")


def test_generic_prompts_default_keywords_and_anchors():
    inputs = training.TrainInputs(concepts="a painting by Van Gogh\nVan Gogh starry night", keywords="Van Gogh",
                                  preserve="a photo of a cat")
    prompts = training.prompt_set(inputs, nano=False)
    assert prompts.keywords == ("Van Gogh",)
    assert prompts.anchors == ("a photo of a cat",)
    bare = training.prompt_set(training.TrainInputs(concepts="a painting by Van Gogh", keywords="van gogh"), False)
    assert bare.anchors == ("a painting by",)
    config = training.erase_config(training.TrainInputs(concepts="x", resolution=512, targets="qkv", epsilon=0.02),
                                   nano=False)
    assert config.latent_size == (64, 64) and config.slices == ("q", "k", "v") and config.epsilon_value == 0.02


@pytest.mark.parametrize("fields, fragment", [
    ({"method": "uce-text"}, "not trainable"), ({"resolution": 72}, "multiple of 16"), ({"concepts": " \n "}, "empty"),
    ({"targets": "qo"}, "targets"), ({"concept_kind": "planet"}, "concept_kind"),
])
def test_bad_inputs_are_named(fields, fragment):
    with pytest.raises(ValueError, match=fragment):
        training.TrainInputs(**{"concepts": "star", **fields})


def test_nano_keywords_must_be_the_concepts():
    with pytest.raises(ValueError, match="leave keywords empty"):
        training.prompt_set(training.TrainInputs(concepts="star", keywords="pentagram"), nano=True)


SMALL = dict(steps=4, batch_size=2, pool_prompts=2, sample_steps=2, latent_size=(4, 4), sample_cfg=1.0,
             stationarity_every=0)


def _run(tmp_path, name, steps=4, on_step=None, resume=None, attach=None):
    model = randomized_dit()
    prompts = training.prompt_set(training.TrainInputs(concepts="a red star on white", keywords="star"), nano=False)
    config = EraseConfig(**{**SMALL, "steps": steps})
    if resume is not None:
        config, prompts = resume.config, resume.prompts
    result = training.run_erasure(model, WordConditioner(WORDS), prompts, config, out=tmp_path / name,
                                  base_config=TINY_CONFIG.to_dict(), concepts=("star",), in_channels=16, resume=resume,
                                  on_step=on_step, attach=attach)
    return model, result


def test_run_saves_and_uses_the_given_attach(tmp_path):
    seen = []

    @contextmanager
    def attach(adapters):
        adapters.attach(model_holder[0])
        seen.append(adapters)
        try:
            yield adapters
        finally:
            adapters.detach()

    model_holder = [randomized_dit()]
    model = model_holder[0]
    prompts = training.prompt_set(training.TrainInputs(concepts="a red star on white", keywords="star"), nano=False)
    result = training.run_erasure(model, WordConditioner(WORDS), prompts, EraseConfig(**SMALL),
                                  out=tmp_path / "e.safetensors", base_config=TINY_CONFIG.to_dict(),
                                  concepts=("star",), attach=attach)
    assert seen and not seen[0].attached and "forward" not in model.layers[0].attention.qkv.__dict__
    info, tensors, state = read_erasure(tmp_path / "e.safetensors")
    assert not info.partial and info.steps_done == 4 and not state
    assert info.training["erase"] == ["a red star on white"] and info.keywords == ("star",)
    assert all(torch.equal(tensors[key], result.tensors[key]) for key in tensors)


def test_interrupt_saves_a_partial_file_that_resumes_to_the_same_result(tmp_path):
    def stop_at_two(step, total, metrics):
        if step == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        _run(tmp_path, "e.safetensors", on_step=stop_at_two)
    info, _, state = read_erasure(tmp_path / "e.safetensors")
    assert info.partial and info.steps_done == 2 and state
    resume = training.resume_state(tmp_path / "e.safetensors", nano=False)
    _, resumed = _run(tmp_path, "e.safetensors", resume=resume)
    _, straight = _run(tmp_path, "straight.safetensors")
    assert resumed.info.steps_done == 4
    for key, value in straight.tensors.items():
        torch.testing.assert_close(resumed.tensors[key], value, rtol=1e-5, atol=1e-7)
    with pytest.raises(ErasureFileError, match="finished erasure"):
        training.resume_state(tmp_path / "straight.safetensors", nano=False)
