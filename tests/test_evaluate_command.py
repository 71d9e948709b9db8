"""`evaluate` end to end on a small random nano world with a real erasure file."""
import json

import pytest
import torch
from evaluation_worlds import one_thread, tiny_nano_world  # noqa: F401 (autouse fixture)
from zerase_fixtures import randomized_dit

from zerase_core.adapters.gated import AdapterConfig, AdapterSet
from zerase_core.cli import build_parser
from zerase_core.cli.evaluate import evaluate_file, format_table
from zerase_core.evaluation.concept_sets import SetSizes
from zerase_core.evaluation.protocol import EvaluationSettings
from zerase_core.evaluation.rendering import SamplingSettings
from zerase_core.formats.erasure_file import ErasureInfo, adapter_dict, save_erasure
from zerase_core.model.checkpoint import fingerprint

CONTRACT = ("acc_e", "acc_ir", "h", "collapse", "attack_success", "attack_success_synonym", "attack_success_shuffle",
            "attack_success_vector", "erase_other", "no_object", "blank", "h_content")
SMALL = EvaluationSettings(sampling=SamplingSettings(steps=2, cfg=1.0), sizes=SetSizes(erase=4, keep=6, probe=4),
                           attack_strengths=(1.0, 4.0))


def _erasure_file(world, path, partial=False):
    config = AdapterConfig(rank=2, alpha=2.0)
    adapters = AdapterSet(world.dit, config)
    with torch.no_grad():
        for parameter in adapters.parameters():
            parameter.normal_(0.0, 0.5)
    info = ErasureInfo(method="zerase", concepts=("circle",), keywords=("circle",), adapter=adapter_dict(config),
                       base_fingerprint=fingerprint(world.dit), base_config=world.dit.config.to_dict(),
                       recommended_strength=1.5, steps_done=1 if partial else 2, steps_total=2, partial=partial)
    return save_erasure(path, adapters, info)


def test_evaluate_file_writes_every_contract_key_for_erased_and_base(tmp_path):
    world = tiny_nano_world(randomized_dit(seed=1))
    path = _erasure_file(world, tmp_path / "circle.safetensors")
    before = {name: tensor.clone() for name, tensor in world.dit.state_dict().items()}
    result = evaluate_file(world, path, None, SMALL)
    for key in CONTRACT:
        assert isinstance(result[key], float), key
        assert isinstance(result["base"][key], float), key
    assert result["strength"] == 1.5 and result["concepts"] == ["circle"] and result["method"] == "zerase"
    assert result["h"] == pytest.approx(result["acc_ir"] - result["acc_e"])
    assert result["attack_success"] == max(result[f"attack_success_{probe}"] for probe in ("synonym", "shuffle", "vector"))
    json.dumps(result, allow_nan=False)
    assert result["h_content"] == pytest.approx((1 - result["acc_e"]) * result["erase_other"] * (1 - result["no_object"]))
    assert "| Acc_e" in format_table(result) and "blank images" in format_table(result)
    after = world.dit.state_dict()                     # the erasure was detached, the base left as it was
    assert all(torch.equal(before[name], after[name]) for name in before)
    assert "forward" not in world.dit.layers[0].attention.qkv.__dict__


def test_evaluate_refuses_a_partial_file_and_says_how_to_finish_it(tmp_path):
    world = tiny_nano_world(randomized_dit(seed=1))
    path = _erasure_file(world, tmp_path / "partial.safetensors", partial=True)
    with pytest.raises(ValueError, match="--resume"):
        evaluate_file(world, path, None, SMALL)


def test_evaluate_command_line_is_wired():
    args = build_parser().parse_args(["evaluate", "--erasure", "x.safetensors", "--strength", "2", "--seeds", "3",
                                      "--json", "out.json"])
    assert args.run.__name__ == "command_evaluate" and args.seeds == 3 and args.strength == 2.0
