"""The pack's erasure folder (`models/zerase`) and the `diffusion_models` files, through folder_paths."""

from __future__ import annotations

import os
from pathlib import Path

import folder_paths

from .. import names
from ..ids import MODELS_FOLDER


def register_folders() -> None:
    """The pack's models folder (`models/zerase`, .safetensors only), registered with folder_paths."""
    if MODELS_FOLDER not in folder_paths.folder_names_and_paths:
        folder_paths.folder_names_and_paths[MODELS_FOLDER] = (
            [os.path.join(folder_paths.models_dir, MODELS_FOLDER)],
            {names.SUFFIX},
        )
    os.makedirs(folder_paths.get_folder_paths(MODELS_FOLDER)[0], exist_ok=True)


def erasure_files() -> list[str]:
    """Erasure files directly inside the pack's folders (subfolders are not offered)."""
    register_folders()
    return [name for name in folder_paths.get_filename_list(MODELS_FOLDER) if "/" not in name and "\\" not in name]


def save_path(name: str) -> Path:
    register_folders()
    return names.output_inside(folder_paths.get_folder_paths(MODELS_FOLDER)[0], name, "save_name")


def existing_erasure(name: str, what: str) -> Path:
    register_folders()
    problem = None
    for folder in folder_paths.get_folder_paths(MODELS_FOLDER):
        try:
            return names.resolve_inside(folder, name, what, must_exist=True)
        except names.UnsafeNameError as error:
            problem = error
    raise problem if problem is not None else names.UnsafeNameError(f"{what} {name!r}: no erasure folder")


def diffusion_model_files() -> list[str]:
    return [name for name in folder_paths.get_filename_list("diffusion_models") if name.endswith(".safetensors")]
