"""The ComfyUI page in headless Chromium (scripts/browser_check.py): the pack's js/ loads with no console error of
its own, and ZEraseTrain's live chart receives one point per training step of the nano demo.

Starts a ComfyUI server (with this test's python, which must be ComfyUI's: the `comfy` fixture skips otherwise) and
Chromium as subprocesses. Skipped without COMFYUI_PATH, without a chromium binary, or without aiohttp (a ComfyUI
dependency). Marked slow: 35 s here on 2 shared cores, most of it ComfyUI's start-up (which took up to 80 s while
other jobs loaded both cores).

    COMFYUI_PATH=... nice -n 19 comfyui-venv/bin/python -m pytest tests/comfyui/test_browser_page.py -m slow
"""
from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest
from comfy_support import REPO_ROOT

STEPS = 3


def _script():
    spec = importlib.util.spec_from_file_location("browser_check", REPO_ROOT / "scripts" / "browser_check.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_page_loads_the_pack_without_errors_and_the_chart_fills(comfy):
    root = os.environ.get("COMFYUI_PATH")
    if not root or not (Path(root) / "main.py").is_file():
        pytest.skip("COMFYUI_PATH is not a ComfyUI source tree with main.py")
    pytest.importorskip("aiohttp")
    script = _script()
    if script.find_chromium(None) is None:
        pytest.skip("no chromium on PATH (apt-get install chromium)")
    report, problems = script.run(["--steps", str(STEPS), "--pool-prompts", "1", "--sample-steps", "2",
                                   "--compare-steps", "1", "--timeout", "400"])
    ours = [message for message in report["load_messages"] + report["run_messages"] if message["origin"] == "pack js/"]
    assert not problems, f"{problems}; messages from the pack's js/: {ours}"
    assert sorted(report["registered_extensions"]) == sorted(script.EXTENSIONS)
    assert not report["js_missing"], report["js_responses"]
    assert report["chart_points"] == STEPS and report["points_while_running"] >= 1
    assert report["chart_last_point"]["step"] == STEPS and report["chart_last_point"]["total"] == STEPS
    assert report["compare_slider_built"]
