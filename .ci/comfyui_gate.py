"""pytest plugin for CI's ComfyUI phase (`-p comfyui_gate` with .ci on PYTHONPATH): the run fails unless every
selected test ran, i.e. none skipped (a skip there means ComfyUI, chromium or a dependency is missing from CI), and
at least one was selected. It prints how many ran, passed, failed and skipped, and the slowest tests.
"""
from __future__ import annotations

import os

import pytest

_outcomes: dict[str, str] = {}
_skips: list[tuple[str, str]] = []
_durations: dict[str, float] = {}


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
    if not _outcomes:
        write("comfyui_gate: no test was selected (expected tests marked comfyui)")
    slowest = sorted(_durations.items(), key=lambda item: -item[1])[:8]
    write("comfyui_gate: slowest: " + ", ".join(f"{nodeid} {seconds:.0f} s" for nodeid, seconds in slowest))
