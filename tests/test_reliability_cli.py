"""Reliability of the CLI (issue 19): every output is checked before any work, bad numbers and files fail with one
line and exit 2, nothing is half-written or silently created, and Ctrl-C + --resume reaches the uninterrupted result.

A random nano-shaped world (tests/test_cli.py) keeps each erase to a few seconds; docs/safety.md lists the checks.
"""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file
from test_cli import _random_world, assert_one_line_error, run_cli
from zerase_fixtures import unwritable_folder  # noqa: F401 (fixture)

from zerase_core.common.files import PARTIAL_SUFFIX
from zerase_core.common.limits import ALPHA_RANGE, CFG_RANGE, STRENGTH_RANGE
from zerase_core.formats.erasure_file import read_erasure
from zerase_core.formats.erasure_info import METADATA_KEY

QUICK = ["--steps", "1", "--pool-prompts", "2", "--sample-steps", "2", "--no-strength-search"]
PROMPT = "a red star on a white background"


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return _random_world(tmp_path_factory.mktemp("world"), seed=0)


@pytest.fixture(scope="module")
def uce_file(tmp_path_factory, world):
    """A finished stream-pure erasure (uce-text: closed form, no training)."""
    out = tmp_path_factory.mktemp("uce") / "star-uce.safetensors"
    result = run_cli("erase", "--method", "uce-text", "--concept", "star", "--no-strength-search", "--out", out,
                     world=world)
    assert result.returncode == 0, result.stderr
    return out


@pytest.fixture(scope="module")
def adapter_file(tmp_path_factory, world):
    out = tmp_path_factory.mktemp("adapters") / "star.safetensors"
    result = run_cli("erase", "--concept", "star", *QUICK, "--out", out, world=world)
    assert result.returncode == 0, result.stderr
    return out


def _output_commands(uce_file):
    """Each command with an output, its name for --out, and its other arguments."""
    return {"erase": (["erase", "--concept", "star", *QUICK], "out.safetensors"),
            "generate": (["generate", "--prompt", PROMPT, "--steps", "1"], "out.png"),
            "export-lora": (["export-lora", uce_file], "out.stock-lora.safetensors"),
            "demo": (["demo", "--erasure-out", "/nonexistent-folder/x.safetensors"], "out.png")}


@pytest.mark.parametrize("command", ["erase", "generate", "export-lora", "demo"])
@pytest.mark.parametrize("case", ["existing folder", "missing parent", "unwritable folder"])
def test_an_unwritable_output_is_refused_before_any_work(tmp_path, world, uce_file, request, command, case):
    arguments, name = _output_commands(uce_file)[command]
    if case == "existing folder":
        out, fragment = tmp_path / name, "is an existing folder"
        out.mkdir()
    elif case == "missing parent":
        out, fragment = tmp_path / "missing" / name, "does not exist; create it first"
    else:
        out, fragment = request.getfixturevalue("unwritable_folder") / name, "cannot write into the folder"
    before = sorted(tmp_path.rglob("*"))
    result = run_cli(*arguments, "--out", out, world=world)
    assert_one_line_error(result, "--out", fragment)      # one line: no progress bar ever started
    assert sorted(tmp_path.rglob("*")) == before          # nothing written, no folder created


def test_json_reports_still_create_their_folder(tmp_path):
    """JSON reports (evaluate/bench --json, erase-many status) keep creating their folder: only the outputs named
    with --out must be in an existing folder."""
    from zerase_core.common.files import atomic_write_json
    assert atomic_write_json({"ok": True}, tmp_path / "runs" / "report.json").exists()


@pytest.mark.parametrize("flag, range_", [("--strength", STRENGTH_RANGE), ("--cfg", CFG_RANGE)])
def test_non_finite_and_absurd_numbers_are_refused_with_the_range(tmp_path, world, adapter_file, uce_file, flag, range_):
    low, high = range_
    allowed = f"[{low:g}, {high:g}]"
    for erasure in (adapter_file, uce_file):
        for value in ("nan", "inf", "-inf", "1e9", "-5", str(high * 2), str(low - 1)):
            out = tmp_path / "grid.png"
            result = run_cli("generate", "--erasure", erasure, "--prompt", PROMPT, "--steps", "1", f"{flag}={value}",
                             "--out", out, world=world)
            assert_one_line_error(result, flag, allowed)
            assert not out.exists()
    for value in (str(low), str(high)):          # the ends of the range are allowed
        result = run_cli("generate", "--erasure", adapter_file, "--prompt", PROMPT, "--steps", "1", flag, value,
                         "--out", tmp_path / "ok.png", world=world)
        assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("arguments, fragment", [
    (["--lr", "nan"], "learning_rate=nan"), (["--eta", "inf"], "eta=inf"), (["--beta", "1e9"], "beta=1000000000.0"),
    (["--epsilon", "-5"], "epsilon=-5.0"),
])
def test_non_finite_erase_settings_are_refused(tmp_path, world, arguments, fragment):
    out = tmp_path / "out.safetensors"
    result = run_cli("erase", "--concept", "star", *arguments, "--out", out, world=world)
    assert_one_line_error(result, fragment, "out of range")
    assert list(tmp_path.iterdir()) == []


def _edited(source: Path, target: Path, change) -> Path:
    """A copy of an erasure file with its metadata edited by hand (as a user with a text editor could)."""
    with safe_open(str(source), framework="pt") as handle:
        metadata = dict(handle.metadata())
        tensors = {key: handle.get_tensor(key) for key in handle.keys()}
    data = json.loads(metadata[METADATA_KEY])
    change(data)
    metadata[METADATA_KEY] = json.dumps(data)
    save_file(tensors, str(target), metadata)
    return target


@pytest.mark.parametrize("field, value, allowed", [
    ("recommended_strength", 1e9, f"[{STRENGTH_RANGE[0]:g}, {STRENGTH_RANGE[1]:g}]"),
    ("recommended_strength", -5.0, f"[{STRENGTH_RANGE[0]:g}, {STRENGTH_RANGE[1]:g}]"),
    ("adapter.alpha", 1e30, f"({ALPHA_RANGE[0]:g}, {ALPHA_RANGE[1]:g}]"),
])
def test_absurd_numbers_edited_into_a_file_are_refused(tmp_path, world, adapter_file, field, value, allowed):
    def change(data):
        owner, key = (data["adapter"], "alpha") if field == "adapter.alpha" else (data, field)
        owner[key] = value
    edited = _edited(adapter_file, tmp_path / "edited.safetensors", change)
    result = run_cli("generate", "--erasure", edited, "--prompt", PROMPT, "--steps", "1", "--out", tmp_path / "g.png",
                     world=world)
    assert_one_line_error(result, field, allowed)


@pytest.fixture(scope="module")
def partial_file(tmp_path_factory, world):
    """A partial erasure file, as Ctrl-C after the first step leaves it."""
    from zerase_core.engine.erase_config import EraseConfig
    from zerase_core.nano.erasure_runs import erase
    from zerase_core.nano.world import NanoWorld
    out = tmp_path_factory.mktemp("partial") / "star-partial.safetensors"

    def interrupt(step, total, metrics):
        raise KeyboardInterrupt
    config = EraseConfig(steps=3, pool_prompts=2, sample_steps=2)
    with pytest.raises(KeyboardInterrupt):
        erase(NanoWorld.load(world), ["star"], config, out, on_step=interrupt, choose_strength=False)
    assert read_erasure(out)[0].partial
    return out


def test_generate_refuses_a_partial_file_unless_allowed(tmp_path, world, partial_file):
    grid = tmp_path / "grid.png"
    arguments = ["generate", "--erasure", partial_file, "--prompt", PROMPT, "--steps", "1", "--out", grid]
    assert_one_line_error(run_cli(*arguments, world=world), "partial erasure", "--resume", "--allow-partial")
    assert not grid.exists()
    assert run_cli(*arguments, "--allow-partial", world=world).returncode == 0 and grid.exists()


def test_resume_of_a_finished_file_fails_before_loading(tmp_path, adapter_file):
    result = run_cli("erase", "--resume", adapter_file, "--out", tmp_path / "x.safetensors", world=tmp_path / "none")
    assert_one_line_error(result, "finished erasure", "only partial files")


def test_concepts_are_lower_cased_and_counted_once(tmp_path, world):
    out = tmp_path / "star.safetensors"
    result = run_cli("erase", "--concept", "Star", "--concept", "star", "--concept", " STAR ", *QUICK, "--out", out,
                     world=world)
    assert result.returncode == 0, result.stderr
    info = read_erasure(out)[0]
    assert info.concepts == ("star",) and info.keywords == ("star",)


@pytest.mark.parametrize("mask", [0o022, 0o027, 0o077])
def test_output_files_follow_the_umask(tmp_path, world, mask):
    previous = os.umask(mask)
    try:
        out = tmp_path / "star.safetensors"
        result = run_cli("erase", "--method", "uce-text", "--concept", "star", "--no-strength-search", "--out", out,
                         world=world)
        grid = tmp_path / "grid.png"
        generated = run_cli("generate", "--prompt", PROMPT, "--steps", "1", "--out", grid, world=world)
    finally:
        os.umask(previous)
    assert result.returncode == 0 and generated.returncode == 0, result.stderr + generated.stderr
    for path in (out, grid):
        assert path.stat().st_mode & 0o777 == 0o666 & ~mask, (path, oct(path.stat().st_mode))


def test_a_killed_save_leaves_a_partial_that_the_next_save_removes(tmp_path, world):
    out = tmp_path / "star.safetensors"
    writer = ("import sys, time\nfrom zerase_core.common.files import atomic_write\n"
              "def write(temporary):\n    open(temporary, 'wb').write(b'half')\n    print('writing', flush=True)\n"
              "    time.sleep(600)\n"
              f"atomic_write({str(out)!r}, write)\n")
    process = subprocess.Popen([sys.executable, "-c", writer], stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout.readline().strip() == "writing"
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    stale = [path for path in tmp_path.iterdir() if path.name.endswith(PARTIAL_SUFFIX)]
    assert len(stale) == 1 and stale[0].name.startswith(f".{out.name}.") and not out.exists()
    result = run_cli("erase", "--method", "uce-text", "--concept", "star", "--no-strength-search", "--out", out,
                     world=world)
    assert result.returncode == 0, result.stderr
    assert sorted(path.name for path in tmp_path.iterdir()) == [out.name]


# ---------------------------------------------------------------- Ctrl-C, then --resume (a real SIGINT)

STEPS = 12


def _erase_process(world: Path, folder: Path, arguments: list[str], interrupt_at: int | None = None):
    """`python -m zerase_core erase ...` in `folder`; with `interrupt_at`, SIGINT once the train bar reaches it.
    Returns (return code, stderr)."""
    command = [sys.executable, "-m", "zerase_core", "erase", *arguments]
    process = subprocess.Popen(command, cwd=folder, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                               env=dict(os.environ, ZERASE_NANO_WEIGHTS=str(world), PYTHONUNBUFFERED="1"),
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # even if ours is off
    text, sent = b"", False
    while chunk := process.stderr.read(1):
        text += chunk
        if interrupt_at is not None and not sent and chunk in b"\r\n":
            done = re.findall(rb"train:[^\r\n]*?(\d+)/%d" % STEPS, text[-400:])
            if done and int(done[-1]) >= interrupt_at:
                process.send_signal(signal.SIGINT)
                sent = True
    return process.wait(timeout=300), text.decode(errors="replace")


def test_sigint_then_resume_gives_the_uninterrupted_file(tmp_path, world):
    """The issue's scenario, scaled down: SIGINT half-way through an erase, then --resume: the same adapters and λ
    as an uninterrupted run, and the resumed bars name the concept and the run's own step total."""
    settings = ["--pool-prompts", "2", "--sample-steps", "2", "--no-strength-search", "--steps", str(STEPS)]
    full = tmp_path / "full.safetensors"
    assert run_cli("erase", "--concept", "star", *settings, "--out", full, world=world).returncode == 0
    code, stderr = _erase_process(world, tmp_path, ["--concept", "star", *settings, "--out", "cut.safetensors"],
                                  interrupt_at=STEPS // 2)
    assert code == 130 and "continue with --resume cut.safetensors" in stderr, stderr
    cut = tmp_path / "cut.safetensors"
    partial = read_erasure(cut)[0]
    assert partial.partial and STEPS // 2 <= partial.steps_done < STEPS
    result = run_cli("erase", "--resume", cut, "--out", cut, "--no-strength-search", world=world)
    assert result.returncode == 0, result.stderr
    assert f"resuming {cut} at step {partial.steps_done} of {STEPS}" in result.stderr
    assert re.search(r"star: train:[^\r\n]*\b%d/%d\b" % (STEPS, STEPS), result.stderr), result.stderr  # concept, total
    full_info, expected, _ = read_erasure(full)
    resumed_info, resumed, _ = read_erasure(cut)
    assert expected.keys() == resumed.keys()
    assert all(torch.equal(expected[key], resumed[key]) for key in expected)
    assert resumed_info.summary["lambda"] == full_info.summary["lambda"]
    assert not resumed_info.partial and resumed_info.steps_done == STEPS
