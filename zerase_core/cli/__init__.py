"""The command line, `python -m zerase_core ...`: the parser and `main` (`parser.py`), one module per command
(`generate`, `erase`, `many/` for erase-many, `export_lora`, `demo`); evaluate and bench live in `evaluation/`."""

from .erase import erase_config_from_args
from .parser import build_parser, main
