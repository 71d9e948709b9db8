"""Test helpers that run a real ComfyUI next to `zerase_core`.

ComfyUI is found through the environment variable `COMFYUI_PATH` (the source tree containing `comfy/`). Without it,
or when `comfy` cannot be imported by the running interpreter (the project venv has no torchvision, which ComfyUI
imports), the calling test is skipped with the reason and the commands that run it (`HOW_TO_RUN`). Every such test
is marked `comfyui` (tests/conftest.py fails one that is not); with ComfyUI's own python they all run:

    export COMFYUI_PATH=../shared/comfyui          # a ComfyUI source tree
    "$(bash .ci/comfyui_env.sh)" -m pytest -m comfyui    # builds or reuses ComfyUI's venv; slow tests included

`.ci/run` does this too, and fails if any of them is skipped.

Nothing here copies ComfyUI code: models are built by ComfyUI's own classes from a `DiTConfig`.
"""
from __future__ import annotations

import importlib
import os
import sys
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType

import pytest
import torch

ENV_VAR = "COMFYUI_PATH"
REPO_ROOT = Path(__file__).resolve().parents[1]
SKIP_PREFIX = "needs ComfyUI"
HOW_TO_RUN = (f"run the ComfyUI tests with ComfyUI's python: export {ENV_VAR}=../shared/comfyui (a ComfyUI source "
              f"tree), then \"$(bash .ci/comfyui_env.sh)\" -m pytest -m comfyui  (the script builds or reuses "
              f"ComfyUI's venv in ~/.cache/zerase-ci and prints its python; .ci/run runs them all)")

# ComfyUI's python must import `zerase_core` from this checkout, whatever the working directory.
if str(REPO_ROOT) not in sys.path:
    sys.path.append(str(REPO_ROOT))

from zerase_core.model.config import DiTConfig  # noqa: E402

# Modules every ComfyUI test needs; more can be asked for in `require_comfy(...)`.
_BASE_MODULES = ("comfy.model_management", "comfy.ops", "comfy.ldm.lumina.model")
_import_error: str | None = None


def _import_comfy_once() -> None:
    """Put ComfyUI on sys.path and import `comfy.cli_args` with `--cpu` (its args are parsed once, at import)."""
    global _import_error
    if "comfy.cli_args" in sys.modules or _import_error is not None:
        return
    root = os.environ.get(ENV_VAR)
    if not root:
        _import_error = f"{ENV_VAR} is not set (point it at a ComfyUI source tree and run with ComfyUI's python)"
        return
    root_path = Path(root).expanduser().resolve()
    if not (root_path / "comfy" / "model_management.py").is_file():
        _import_error = f"{ENV_VAR}={root} does not contain comfy/model_management.py"
        return
    if str(root_path) not in sys.path:
        # First, so that ComfyUI's top-level modules (`nodes`, `folder_paths`, ...) win over same-named ones.
        sys.path.insert(0, str(root_path))
    saved_argv = sys.argv
    # comfy.cli_args parses sys.argv at import when parsing is enabled; give it only `--cpu`, not pytest's argv.
    sys.argv = [saved_argv[0] if saved_argv else "pytest", "--cpu"]
    try:
        import comfy.options

        comfy.options.enable_args_parsing()
        import comfy.cli_args  # noqa: F401
    except Exception as error:  # noqa: BLE001  (any failure to import ComfyUI means: skip, with the reason)
        _import_error = f"cannot import comfy from {root_path}: {type(error).__name__}: {error}"
    finally:
        sys.argv = saved_argv


def skip_without_comfy(reason: str):
    """Skip the calling test for want of ComfyUI (or of something a ComfyUI test needs), saying how to run it."""
    pytest.skip(f"{SKIP_PREFIX}: {reason}; {HOW_TO_RUN}")


def require_comfy(*modules: str) -> ModuleType:
    """Import ComfyUI (CPU mode) plus `modules`, or `pytest.skip` with the reason. Returns the `comfy` package."""
    _import_comfy_once()
    if _import_error is not None:
        skip_without_comfy(_import_error)
    for name in _BASE_MODULES + tuple(modules):
        try:
            importlib.import_module(name)
        except Exception as error:  # noqa: BLE001
            skip_without_comfy(f"cannot import {name} from ComfyUI: {type(error).__name__}: {error}")
    import comfy

    return comfy


def nextdit_unet_config(config: DiTConfig) -> dict:
    """The `unet_config` ComfyUI would hold for a Z-Image or Lumina-2 DiT of this config (keys of
    `detect_unet_config`; Lumina-2 has no z_image_modulation, time_scale 1 and no pad tokens)."""
    return dict(
        image_model="lumina2",
        patch_size=config.patch_size,
        in_channels=config.in_channels,
        dim=config.dim,
        cap_feat_dim=config.cap_feat_dim,
        n_layers=config.n_layers,
        n_refiner_layers=config.n_refiner_layers,
        qk_norm=True,
        n_heads=config.n_heads,
        n_kv_heads=config.kv_heads,
        multiple_of=config.ffn_multiple_of,
        ffn_dim_multiplier=config.ffn_dim_multiplier,
        norm_eps=config.norm_eps,
        axes_dims=list(config.axes_dims),
        axes_lens=list(config.axes_lens),
        rope_theta=config.rope_theta,
        z_image_modulation=config.kind == "z-image",
        time_scale=config.time_scale,
        pad_tokens_multiple=config.pad_tokens_multiple if config.pad_tokens else None,
    )


def build_comfy_zimage(config: DiTConfig, dtype: torch.dtype = torch.float32):
    """ComfyUI's own model for `config`: `supported_models.ZImage(...).get_model({})`, a `model_base.Lumina2`
    (FLOW sampling) whose `.diffusion_model` is a `comfy.ldm.lumina.model.NextDiT` with Z-Image modulation.

    Parameters are uninitialised (ComfyUI's `disable_weight_init` ops): load a state dict before use.
    """
    comfy = require_comfy("comfy.supported_models", "comfy.model_base")
    family = comfy.supported_models.ZImage if config.kind == "z-image" else comfy.supported_models.Lumina2
    model_config = family(nextdit_unet_config(config))
    model_config.set_inference_dtype(dtype, None)
    model = model_config.get_model({})
    assert type(model.diffusion_model) is comfy.ldm.lumina.model.NextDiT
    return model


def build_nextdit(config: DiTConfig, device=None, dtype: torch.dtype | None = None):
    """A bare `NextDiT` for `config` built with `comfy.ops.disable_weight_init` (works on the meta device)."""
    comfy = require_comfy()
    return comfy.ldm.lumina.model.NextDiT(
        **nextdit_unet_config(config), device=device, dtype=dtype, operations=comfy.ops.disable_weight_init
    )


@contextmanager
def comfy_training_flag(value: bool):
    """Set `comfy.model_management.in_training` (False: fused inference kernels; True: plain torch path)."""
    comfy = require_comfy()
    saved = comfy.model_management.in_training
    comfy.model_management.in_training = value
    try:
        yield
    finally:
        comfy.model_management.in_training = saved


def nextdit_velocity(nextdit, x: torch.Tensor, sigma: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
    """`NextDiT.forward` as `BaseModel._apply_model` calls it for Z-Image (no mask, fresh transformer_options)."""
    return nextdit(x, sigma, context=context, num_tokens=context.shape[1], transformer_options={})


__all__ = [
    "ENV_VAR",
    "HOW_TO_RUN",
    "REPO_ROOT",
    "SKIP_PREFIX",
    "require_comfy",
    "skip_without_comfy",
    "nextdit_unet_config",
    "build_comfy_zimage",
    "build_nextdit",
    "comfy_training_flag",
    "nextdit_velocity",
]
