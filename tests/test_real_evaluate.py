"""`evaluate --model ...` on a tiny random diffusers Z-Image: the nano JSON contract, with each real-model metric
that cannot run offline null and its reason under "skipped" (CLIP without a local checkpoint, NudeNet when it is
not installed)."""
from __future__ import annotations

import importlib.util
import json

import pytest

pytest.importorskip("diffusers", reason="diffusers is not installed (pip install -e \".[real]\")")

from real_models import QUICK_ERASE, diffusers_folder, tokenizer_folder  # noqa: E402
from test_evaluate_command import CONTRACT  # noqa: E402
from zerase_core.cli import main  # noqa: E402


@pytest.fixture(scope="module")
def erased(tmp_path_factory):
    if not tokenizer_folder().is_dir():
        pytest.skip(f"no Qwen tokenizer files at {tokenizer_folder()}")
    root = tmp_path_factory.mktemp("evaluate")
    folder = diffusers_folder(root / "Z-Image-Tiny")
    out = root / "cat.safetensors"
    assert main(["erase", "--concept", "cat", "--model", str(folder), *QUICK_ERASE, "--out", str(out)]) == 0
    return folder, out


def test_real_evaluate_writes_the_contract_and_says_what_was_skipped(erased, tmp_path, capsys):
    folder, path = erased
    report = tmp_path / "result.json"
    assert main(["evaluate", "--erasure", str(path), "--model", str(folder), "--size", "32", "--steps", "2",
                 "--strength", "4", "--keep-prompt", "a blue bird", "--json", str(report)]) == 0
    result = json.loads(report.read_text())
    for key in CONTRACT:
        assert key in result and key in result["base"], key
    assert result["concepts"] == ["cat"] and result["per_concept"]["cat"]["calibration"] is None
    assert isinstance(result["high_frequency"], float) and isinstance(result["base"]["high_frequency"], float)
    assert result["acc_e"] is None and result["judge"] == "none" and "--clip-checkpoint" in result["skipped"]["clip"]
    assert result["strength"] == 4.0 and "a blue bird" in result["settings"]["keep_prompts"]
    assert result["change"]["erase"] > 0, "the erasure changed no erase image"
    if importlib.util.find_spec("nudenet") is None:
        assert result["nudity"] is None and "not installed" in result["skipped"]["nudity"]
    out = capsys.readouterr().out
    assert "| Acc_e" in out and "skipped (clip)" in out and "pixel change" in out


def test_clip_needs_open_clip_and_a_local_file(erased, tmp_path, capsys):
    folder, path = erased
    checkpoint = tmp_path / "clip.pt"
    assert main(["evaluate", "--erasure", str(path), "--model", str(folder), "--size", "32", "--steps", "1",
                 "--clip-checkpoint", str(checkpoint)]) == 2
    err = capsys.readouterr().err
    if importlib.util.find_spec("open_clip") is None:
        assert "open_clip" in err and "pip install open_clip_torch" in err
    else:
        assert "is not a file" in err
