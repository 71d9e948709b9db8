#!/usr/bin/env bash
# Builds (or reuses) a Python environment for the real ComfyUI in ../shared/comfyui and prints its python's path.
#   COMFYUI_PATH defaults to ../shared/comfyui next to the repository. The environment lives in the user's cache,
#   keyed by ComfyUI's requirements.txt, so a rerun on the same machine reuses it.
# torch comes from the local CPU wheel (torch==2.13.0); torchvision/torchaudio from PyPI do not import beside that
# wheel, so they and spandrel (which needs torchvision; ComfyUI lists it as non-essential) are left out. The nodes that
# need them (upscale models, audio) fail to load with a logged message; nothing the pack uses depends on them.
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
comfy="${COMFYUI_PATH:-$here/../shared/comfyui}"
comfy="$(cd "$comfy" && pwd)"
[ -f "$comfy/main.py" ] || { echo "no ComfyUI at $comfy (set COMFYUI_PATH)" >&2; exit 2; }
key=$( (cat "$comfy/requirements.txt"; echo torch==2.13.0; cat "$0") | sha256sum | cut -c1-12)
venv="${ZERASE_COMFY_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/zerase-ci/comfyui-venv-$key}"
if [ ! -f "$venv/.complete" ]; then
  rm -rf "$venv"
  python3 -m venv "$venv"
  grep -viE '^\s*(torch|torchvision|torchaudio|spandrel)\s*($|[<>=~!])' "$comfy/requirements.txt" > "$venv/requirements-cpu.txt"
  "$venv/bin/pip" install -q --disable-pip-version-check torch==2.13.0 >&2
  "$venv/bin/pip" install -q --disable-pip-version-check -r "$venv/requirements-cpu.txt" pytest >&2
  touch "$venv/.complete"
fi
echo "$venv/bin/python"
