"""scripts/gpu_check.sh on its CPU path with the ComfyUI part (tiny sizes): both parts run and the ComfyUI run prints
s/step, forward time and the node's memory report. Slow (a few minutes on the shared cores): the GPU run itself
needs a lent GPU.

    COMFYUI_PATH=... comfyui-venv/bin/python -m pytest tests/comfyui/test_gpu_check_script.py -m "comfyui and slow"
"""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys

import pytest
from comfy_support import REPO_ROOT


@pytest.mark.slow
def test_gpu_check_runs_the_cli_and_the_comfyui_parts_on_its_cpu_path(comfy, tmp_path):
    environment = dict(os.environ, ZERASE_GPU_CHECK_DEVICE="cpu", ZERASE_GPU_CHECK_TINY="1", PYTHON=sys.executable,
                       COMFY_PYTHON=sys.executable, COMFYUI_PATH=os.environ["COMFYUI_PATH"],
                       ZERASE_GPU_CHECK_MODELS=str(tmp_path / "models"))
    done = subprocess.run(["bash", str(REPO_ROOT / "scripts" / "gpu_check.sh"), str(tmp_path / "out")],
                          env=environment, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    assert json.loads((tmp_path / "out" / "turbo512_b1.json").read_text())["zerase_step_s"] > 0
    saved = (tmp_path / "out" / "block_saved.txt").read_text()
    assert "dim 256" in saved and "total" in saved.splitlines()[-1], saved
    for name in ("comfy_bf16", "comfy_bf16_16gb"):
        row = json.loads((tmp_path / "out" / f"{name}.json").read_text())
        assert row["steps"] == 3 and row["s_per_step"] > 0 and row["forward_s"] > 0
        report = " ".join(row["report"])
        assert "prompts encoded before training" in report and "text encoder released" in report, report
        assert "DiT on the CPU" in report
    assert "| comfy_bf16 | cpu |" in done.stdout


def test_the_random_qwen3_file_is_what_cliploader_reads_as_z_image_qwen3_4b(comfy):
    """The full-size text-encoder file of the GPU run, checked on the meta device: ComfyUI detects Qwen3-4B and
    Z-Image's text encoder expects exactly its keys and shapes."""
    import torch

    import comfy.sd
    import comfy.text_encoders.z_image
    spec = importlib.util.spec_from_file_location("gpu_comfy_check", REPO_ROOT / "scripts" / "gpu_comfy_check.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    state = script.qwen3_4b("meta").state_dict()
    assert comfy.sd.detect_te_model(state) == comfy.sd.TEModel.QWEN3_4B
    expected = {key.split("transformer.", 1)[1]: value.shape for key, value in
                comfy.text_encoders.z_image.te()(device="meta", dtype=torch.bfloat16).state_dict().items()
                if "transformer." in key}
    assert {key: value.shape for key, value in state.items()} == expected
    assert sum(value.numel() for value in state.values()) > 4.0e9
