"""The `comfyui` path of `bench --flops`: ZEraseTrain's training on ComfyUI's own NextDiT, through nodes/comfy_bridge.

Imported only when that path is asked for; it needs a ComfyUI source tree (`COMFYUI_PATH`) importable by the running
python (ComfyUI's venv). The pack's `nodes` package is loaded under its own name, as ComfyUI loads a custom node, so
it does not meet ComfyUI's top-level `nodes` module.
"""
from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from pathlib import Path

PACK_ROOT = Path(__file__).resolve().parent.parent
PACK_NAME = "zerase_pack_flops"


def comfy_available():
    """(the pack's comfy_bridge module, None) or (None, why not)."""
    root = os.environ.get("COMFYUI_PATH")
    if not root:
        return None, "COMFYUI_PATH is not set (a ComfyUI source tree; run with ComfyUI's python)"
    root_path = Path(root).expanduser().resolve()
    if not (root_path / "comfy" / "model_management.py").is_file():
        return None, f"COMFYUI_PATH={root} has no comfy/model_management.py"
    if str(root_path) not in sys.path:
        sys.path.insert(0, str(root_path))
    try:
        if "comfy.cli_args" not in sys.modules:
            saved, sys.argv = sys.argv, [sys.argv[0] if sys.argv else "zerase", "--cpu"]
            try:
                import comfy.options
                comfy.options.enable_args_parsing()
                import comfy.cli_args  # noqa: F401
            finally:
                sys.argv = saved
        return _pack_module("comfy_bridge"), None
    except Exception as error:  # noqa: BLE001  (any failure to import ComfyUI means: not counted, with the reason)
        return None, f"cannot import ComfyUI from {root_path}: {type(error).__name__}: {error}"


def _pack_module(name: str):
    if PACK_NAME not in sys.modules:
        spec = importlib.util.spec_from_file_location(PACK_NAME, PACK_ROOT / "nodes" / "__init__.py",
                                                      submodule_search_locations=[str(PACK_ROOT / "nodes")])
        package = importlib.util.module_from_spec(spec)
        sys.modules[PACK_NAME] = package
        spec.loader.exec_module(package)
    return importlib.import_module(f"{PACK_NAME}.{name}")
