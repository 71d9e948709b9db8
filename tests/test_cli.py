"""The CLI as users run it: bad input exits 2 with one line and writes nothing; erase → generate round trip."""
import shutil
import subprocess
import sys

import pytest
import torch
from safetensors.torch import save_file
from zerase_fixtures import randomized_dit

from zerase_core.model.checkpoint import save_dit
from zerase_core.nano import paths
from zerase_core.nano.evaluator import Evaluator
from zerase_core.nano.text_encoder import NanoTextEncoder, TextEncoderConfig
from zerase_core.nano.training.dit import NANO_CONFIG


def _random_world(folder, seed):
    """A nano-shaped world with random DiT/text encoder (and the shipped codec/evaluator when present)."""
    folder.mkdir(parents=True, exist_ok=True)
    save_dit(randomized_dit(NANO_CONFIG, seed=seed, std=0.02), folder / paths.DIT.name)
    torch.manual_seed(seed)
    NanoTextEncoder(TextEncoderConfig(width=NANO_CONFIG.cap_feat_dim)).save(folder / paths.TEXT_ENCODER.name)
    shutil.copy(paths.CODEC, folder / paths.CODEC.name)
    if paths.EVALUATOR.exists():
        shutil.copy(paths.EVALUATOR, folder / paths.EVALUATOR.name)
    else:
        Evaluator().save(folder / paths.EVALUATOR.name)
    return folder


@pytest.fixture(scope="module")
def world_folder(tmp_path_factory):
    return _random_world(tmp_path_factory.mktemp("world"), seed=0)


class Result:
    def __init__(self, returncode, stderr):
        self.returncode, self.stderr = returncode, stderr


def run_cli(*args, world=None):
    """In-process `python -m zerase_core ...` (the same `main`), capturing stderr."""
    import contextlib
    import io
    import os

    from zerase_core.cli import main
    previous = os.environ.get("ZERASE_NANO_WEIGHTS")
    os.environ["ZERASE_NANO_WEIGHTS"] = str(world or "")
    stderr = io.StringIO()
    try:
        with contextlib.redirect_stderr(stderr), contextlib.redirect_stdout(io.StringIO()):
            code = main([str(arg) for arg in args])
    finally:
        if previous is None:
            os.environ.pop("ZERASE_NANO_WEIGHTS")
        else:
            os.environ["ZERASE_NANO_WEIGHTS"] = previous
    return Result(code, stderr.getvalue())


def assert_one_line_error(result, *fragments):
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), result.stderr
    for fragment in fragments:
        assert fragment in lines[0]


@pytest.mark.parametrize("arguments, fragments", [
    (["--concept", "zebra"], ["'zebra'", "nano vocabulary"]),
    (["--concept", "on"], ["'on'", "not an attribute word"]),
    (["--concept", "star", "--eta", "99"], ["eta=99.0"]),
    (["--concept", "star", "--epsilon", "2"], ["epsilon=2.0"]),
    (["--concept", "star", "--beta", "-1"], ["beta=-1.0"]),
    (["--concept", "star", "--rank", "0"], ["rank=0"]),
    (["--concept", "star", "--steps", "0"], ["steps=0"]),
    (["--concept", "star", "--shuffle-bank", "-1"], ["shuffle_bank=-1"]),
])
def test_bad_erase_settings_exit_2_and_write_nothing(tmp_path, world_folder, arguments, fragments):
    out = tmp_path / "out.safetensors"
    result = run_cli("erase", *arguments, "--out", out, world=world_folder)
    assert_one_line_error(result, *fragments)
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_a_dual_stream_base_is_refused(tmp_path, world_folder):
    flux = tmp_path / "flux.safetensors"
    save_file({"double_blocks.0.img_attn.qkv.weight": torch.zeros(6, 2),
               "single_blocks.0.linear1.weight": torch.zeros(4, 2)}, str(flux))
    out = tmp_path / "out.safetensors"
    result = run_cli("erase", "--concept", "star", "--base", flux, "--out", out, world=world_folder)
    assert_one_line_error(result, "Flux")
    assert not out.exists()


@pytest.fixture(scope="module")
def erased_file(tmp_path_factory, world_folder):
    out = tmp_path_factory.mktemp("erasure") / "star.safetensors"
    result = run_cli("erase", "--concept", "star", "--steps", "2", "--pool-prompts", "4", "--sample-steps", "4",
                     "--no-strength-search", "--out", out, world=world_folder)
    assert result.returncode == 0, result.stderr
    return out


def test_erase_then_generate_with_the_file(tmp_path, world_folder, erased_file):
    import os
    grid = tmp_path / "grid.png"
    result = subprocess.run([sys.executable, "-m", "zerase_core", "generate", "--erasure", str(erased_file),
                             "--prompt", "a red star on a white background", "--steps", "2", "--out", str(grid)],
                            capture_output=True, text=True, timeout=120,
                            env=dict(os.environ, ZERASE_NANO_WEIGHTS=str(world_folder)))
    assert result.returncode == 0, result.stderr
    assert grid.stat().st_size > 0


def test_a_file_for_another_base_is_refused(tmp_path, erased_file):
    other = _random_world(tmp_path / "other", seed=1)
    grid = tmp_path / "grid.png"
    result = run_cli("generate", "--erasure", erased_file, "--prompt", "a red star", "--steps", "2", "--out", grid,
                     world=other)
    assert_one_line_error(result, "fingerprint", "allow_other_base")
    assert not grid.exists()


@pytest.mark.parametrize("damage", ["truncate", "forge"])
def test_a_damaged_erasure_file_is_refused(tmp_path, world_folder, erased_file, damage):
    broken = tmp_path / "broken.safetensors"
    data = erased_file.read_bytes()
    if damage == "truncate":
        broken.write_bytes(data[: len(data) // 2])
    else:
        forged = data.replace(b'\\"rank\\": 8', b'\\"rank\\": 4')
        assert forged != data
        broken.write_bytes(forged)
    grid = tmp_path / "grid.png"
    result = run_cli("generate", "--erasure", broken, "--prompt", "a red star", "--steps", "2", "--out", grid,
                     world=world_folder)
    assert_one_line_error(result, str(broken.name))
    assert not grid.exists()
