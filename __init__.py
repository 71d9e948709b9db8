"""ZErase ComfyUI node pack entry point.

Registers nodes only when imported by ComfyUI; importing the pack elsewhere (tests, CLI) does nothing. The pack works
under any folder name: `zerase_core` is imported from this folder when it is not installed.
"""
import importlib.util
import os
import sys

WEB_DIRECTORY = "./js"

try:
    import comfy_api.latest  # noqa: F401  (present only inside ComfyUI)
except ImportError:
    comfy_api_available = False
else:
    comfy_api_available = True

if comfy_api_available:
    if importlib.util.find_spec("zerase_core") is None:
        sys.path.append(os.path.dirname(os.path.abspath(__file__)))   # appended: ComfyUI's own `nodes` keeps winning
    from .nodes import comfy_entrypoint  # noqa: F401

__all__ = ["WEB_DIRECTORY"]
