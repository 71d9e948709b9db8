"""One erase run (`engine.run.run_erasure`): the CLI's nano erase and the node's run write the same file for the same
settings, and an erase run leaves every global random generator as it found it."""
from __future__ import annotations

import random

import numpy
import torch
from test_nodes_inputs import nodes_module

from zerase_core.formats.erasure_file import read_erasure
from zerase_core.nano.erasure_runs import erase
from zerase_core.nano.prompts import NanoConditioner
from zerase_core.nano.world import NanoWorld

training = nodes_module("training")
QUICK = {"steps": 3, "pool_prompts": 2, "sample_steps": 2, "batch_size": 2}
VOLATILE = ("created", "train_seconds")


def _comparable(info) -> dict:
    data = info.to_metadata()
    import json
    decoded = {key: json.loads(value) for key, value in data.items()}

    def strip(value):
        if isinstance(value, dict):
            return {key: strip(item) for key, item in value.items() if key not in VOLATILE}
        return value
    return strip(decoded)


def test_cli_and_node_files_carry_the_same_metadata_and_tensors(tmp_path):
    world = NanoWorld.load()
    inputs = training.TrainInputs(concepts="star", seed=2, **QUICK)
    config = training.erase_config(inputs, nano=True)
    erase(world, ["star"], config, tmp_path / "cli.safetensors", choose_strength=False)
    prompts = training.prompt_set(inputs, nano=True)
    training.run_erasure(world.dit, NanoConditioner(world.text_encoder), prompts, config,
                         out=tmp_path / "node.safetensors", base_config=world.dit.config.to_dict(),
                         concepts=training.concept_list(inputs, nano=True), in_channels=world.dit.config.in_channels,
                         shift=world.dit.config.shift)
    cli_info, cli_tensors, _ = read_erasure(tmp_path / "cli.safetensors")
    node_info, node_tensors, _ = read_erasure(tmp_path / "node.safetensors")
    assert _comparable(cli_info) == _comparable(node_info)
    # the union of what each used to store: erase prompts and mapped prompts (resume anywhere), the strength table
    assert cli_info.training["erase"] == list(prompts.erase) and cli_info.training["targets"] == list(prompts.targets)
    assert cli_info.summary["strength_table"] == [] and cli_info.recommended_strength == 1.0
    assert cli_tensors.keys() == node_tensors.keys()
    assert all(torch.equal(cli_tensors[key], node_tensors[key]) for key in cli_tensors)


def test_an_erase_run_leaves_the_global_random_generators_alone(tmp_path):
    world = NanoWorld.load()
    torch.manual_seed(1234)
    random.seed(99)
    numpy.random.seed(7)
    before = (torch.get_rng_state(), random.getstate(), numpy.random.get_state())
    config = training.erase_config(training.TrainInputs(concepts="red", **QUICK), nano=True)
    erase(world, ["red"], config, tmp_path / "red.safetensors", choose_strength=False)
    after = (torch.get_rng_state(), random.getstate(), numpy.random.get_state())
    assert torch.equal(before[0], after[0])
    assert before[1] == after[1]
    assert before[2][0] == after[2][0] and numpy.array_equal(before[2][1], after[2][1]) and before[2][2:] == after[2][2:]
