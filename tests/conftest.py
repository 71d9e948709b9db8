"""pytest fixtures. The helpers live in `zerase_fixtures` (a unique module name: tests in sub-folders have their
own conftest.py, so `from conftest import ...` would be ambiguous)."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from zerase_fixtures import tiny_dit, word_conditioner  # noqa: E402,F401  (fixtures)
