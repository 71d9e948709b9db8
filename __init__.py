"""ZErase ComfyUI node pack entry point.

Registers nodes only when imported by ComfyUI; importing the pack elsewhere (tests, CLI) does nothing.
"""
WEB_DIRECTORY = "./js"

try:
    import comfy_api.latest  # noqa: F401  (present only inside ComfyUI)
except ImportError:
    comfy_api_available = False
else:
    comfy_api_available = True

if comfy_api_available:
    from .nodes import comfy_entrypoint  # noqa: F401

__all__ = ["WEB_DIRECTORY"]
