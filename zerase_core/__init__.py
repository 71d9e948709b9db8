"""ZErase core: pure-PyTorch Z-Erase for single-stream DiTs (no ComfyUI imports)."""
