#!/usr/bin/env bash
# Builds (or reuses) a Python environment for the real ComfyUI in ../shared/comfyui and prints its python's path.
#   COMFYUI_PATH defaults to ../shared/comfyui next to the repository. The environment lives in the user's cache,
#   keyed by ComfyUI's requirements.txt and this script, so a rerun on the same machine reuses it (a build that did
#   not finish is started again).
# torch and torchvision: ComfyUI imports torchvision at start (comfy.model_base -> comfy.ldm.cosmos), and PyPI's
# torchvision does not import beside the local CPU wheel torch==2.13.0 ('operator torchvision::nms does not exist':
# its _C links CUDA torch). So the pair torch==2.14.1 + torchvision==0.29.1 is taken, which pip finds on this
# machine's disk (a CUDA build that runs on the CPU; about 5.5 GB, 2 min). torchaudio: comfy.sd imports it at module
# level (comfy.ldm.lightricks.vae.audio_vae), so without it `import comfy.sd` fails. No torchaudio release matches
# 2.14.1; torchaudio 2.11.1 is Python code over torch's own ops (resample, MelSpectrogram run on 2.14.1), so it is
# installed from PyPI with --no-deps (its metadata pins torch 2.11, which would replace the 2.14.1 pair).
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
comfy="${COMFYUI_PATH:-$here/../shared/comfyui}"
comfy="$(cd "$comfy" && pwd)"
[ -f "$comfy/main.py" ] || { echo "no ComfyUI at $comfy (set COMFYUI_PATH)" >&2; exit 2; }
torch_pins="torch==2.14.1 torchvision==0.29.1"
audio_pin="torchaudio==2.11.1"
key=$( (cat "$comfy/requirements.txt"; echo "$torch_pins"; cat "$0") | sha256sum | cut -c1-12)
venv="${ZERASE_COMFY_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/zerase-ci/comfyui-venv-$key}"
if [ ! -f "$venv/.complete" ]; then
  rm -rf "$venv"
  python3 -m venv "$venv"
  grep -viE '^\s*(torch|torchvision|torchaudio)\s*($|[<>=~!])' "$comfy/requirements.txt" > "$venv/requirements-cpu.txt"
  pip_quiet() {   # pip install, its output without the machine's notes on absent index folders; fails as pip does
    local status=0
    "$venv/bin/pip" install -q --disable-pip-version-check "$@" > "$venv/pip.log" 2>&1 || status=$?
    grep -v 'is ignored: it is neither a file nor a directory' "$venv/pip.log" >&2 || true
    return "$status"
  }
  # shellcheck disable=SC2086
  pip_quiet $torch_pins
  pip_quiet --no-deps $audio_pin
  pip_quiet -r "$venv/requirements-cpu.txt" pytest
  "$venv/bin/python" -c "import torch, torchvision, torchaudio.functional, aiohttp, pytest" >&2
  touch "$venv/.complete"
fi
echo "$venv/bin/python"
