"""pytest plugin for CI's ComfyUI phase (`-p comfyui_gate` with .ci on PYTHONPATH): the run fails unless every
selected test ran, i.e. none skipped (a skip there means ComfyUI, chromium or a dependency is missing from CI), and
at least one was selected. A module skipped while collected fails the run too when it holds ComfyUI tests; the
others (e.g. the diffusers parity modules, which need the project's venv) are listed. It prints how many ran, passed, failed and skipped, and the slowest tests.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

_outcomes: dict[str, str] = {}
_skips: list[tuple[str, str]] = []
_durations: dict[str, float] = {}
_module_skips: list[tuple[str, str]] = []          # test modules skipped while collected (not ComfyUI tests)


def _marks_comfyui(path: str) -> bool:
    """A module that holds ComfyUI tests: under tests/comfyui, or one that marks tests `comfyui` itself."""
    file = Path(path)
    return "comfyui" in file.parts[:-1] or (file.is_file() and "mark.comfyui" in file.read_text(errors="replace"))


def pytest_collectreport(report) -> None:
    if report.skipped:
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        (_skips if _marks_comfyui(report.nodeid) else _module_skips).append((report.nodeid, reason))


def pytest_configure(config) -> None:
    if not os.environ.get("COMFYUI_PATH"):
        raise pytest.UsageError("comfyui_gate: COMFYUI_PATH is not set; CI's ComfyUI phase runs with a real ComfyUI")


def pytest_runtest_logreport(report) -> None:
    _durations[report.nodeid] = _durations.get(report.nodeid, 0.0) + report.duration
    if report.skipped:
        _outcomes[report.nodeid] = "skipped"
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        _skips.append((report.nodeid, reason))
    elif report.failed:
        _outcomes[report.nodeid] = "failed"
    elif report.when == "call":
        _outcomes.setdefault(report.nodeid, "passed")


def pytest_sessionfinish(session, exitstatus) -> None:
    if _skips or not _outcomes:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter) -> None:
    counts = {name: sum(1 for value in _outcomes.values() if value == name) for name in ("passed", "failed", "skipped")}
    ran = counts["passed"] + counts["failed"]
    write = terminalreporter.write_line
    write(f"comfyui_gate: {ran} ComfyUI tests ran ({counts['passed']} passed, {counts['failed']} failed), "
          f"{counts['skipped']} skipped (0 allowed)")
    for nodeid, reason in _skips:
        write(f"comfyui_gate: SKIPPED {nodeid}: {reason}")
    for nodeid, reason in _module_skips:
        write(f"comfyui_gate: (not a ComfyUI module, skipped while collected in ComfyUI's venv) {nodeid}: {reason}")
    if not _outcomes:
        write("comfyui_gate: no test was selected (expected tests marked comfyui)")
    slowest = sorted(_durations.items(), key=lambda item: -item[1])[:8]
    write("comfyui_gate: slowest: " + ", ".join(f"{nodeid} {seconds:.0f} s" for nodeid, seconds in slowest))
