"""pytest fixtures. The helpers live in `zerase_fixtures` (a unique module name: tests in sub-folders have their
own conftest.py, so `from conftest import ...` would be ambiguous)."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from zerase_fixtures import tiny_dit, word_conditioner  # noqa: E402,F401  (fixtures)

import pytest  # noqa: E402
import torch  # noqa: E402


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny models run fastest on one thread (and don't fight other jobs for the cores)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
