"""pytest fixtures. The helpers live in `zerase_fixtures` (a unique module name: tests in sub-folders have their
own conftest.py, so `from conftest import ...` would be ambiguous)."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from zerase_fixtures import tiny_dit, word_conditioner  # noqa: E402,F401  (fixtures)

import pytest  # noqa: E402
import torch  # noqa: E402


@pytest.fixture(autouse=True, scope="session")
def _one_thread_session():
    """Also for module- and session-scoped fixtures, which are set up before any function-scoped fixture: a module
    fixture that trains on torch's default thread count fights every other job for the cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny models run fastest on one thread (and don't fight other jobs for the cores)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


COMFYUI_TESTS = Path(__file__).resolve().parent / "comfyui"


def pytest_collection_modifyitems(config, items):
    """Every test under tests/comfyui needs ComfyUI: mark it `comfyui` (`pytest -m comfyui` selects them all)."""
    for item in items:
        if COMFYUI_TESTS in Path(str(item.path)).resolve().parents:
            item.add_marker(pytest.mark.comfyui)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """A test that skips for want of ComfyUI must be marked `comfyui`, or `-m comfyui` (CI) would never run it."""
    outcome = yield
    report = outcome.get_result()
    if report.skipped and item.get_closest_marker("comfyui") is None:
        from comfy_support import SKIP_PREFIX
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        if SKIP_PREFIX in reason:
            report.outcome = "failed"
            report.longrepr = (f"{item.nodeid} needs ComfyUI but is not marked: add @pytest.mark.comfyui so that "
                               f"`pytest -m comfyui` (.ci/run) runs it")
