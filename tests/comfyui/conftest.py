"""Fixtures for tests that run the pack inside a real ComfyUI (COMFYUI_PATH + ComfyUI's python; skipped without).

    COMFYUI_PATH=/path/to/ComfyUI nice -n 19 /path/to/comfyui-venv/bin/python -m pytest tests/comfyui -q

The pack is loaded the way ComfyUI loads it (`nodes.load_custom_node`) from a symlink with an unusual folder name,
so nothing depends on the folder being called `zerase`. Random nano-shaped weights (the shipped ones may not exist
yet) are written to a temporary folder and `zerase_core.nano.paths` is pointed at them for the session.
"""
from __future__ import annotations

import asyncio
import importlib
import sys
from pathlib import Path

import pytest
import torch

TESTS = Path(__file__).resolve().parents[1]
if str(TESTS) not in sys.path:
    sys.path.insert(0, str(TESTS))

from comfy_support import REPO_ROOT, require_comfy  # noqa: E402

COMFY_MODULES = ("comfy.sd", "comfy.sample", "comfy.samplers", "comfy.supported_models", "folder_paths", "nodes",
                 "execution", "comfy_extras.nodes_sd3")
PACK_FOLDER = "ComfyUI-ZErase.v1"


def write_random_nano(folder: Path, seed: int = 0) -> None:
    """Nano-shaped DiT (bf16, like the shipped file), text encoder, codec and evaluator with random weights."""
    from zerase_core.model.checkpoint import save_dit
    from zerase_core.model.dit import ZImageDiT
    from zerase_core.nano.codec import LatentCodec
    from zerase_core.nano.evaluator import Evaluator
    from zerase_core.nano.text_encoder import NanoTextEncoder, TextEncoderConfig
    from zerase_core.nano.training.dit import NANO_CONFIG

    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    dit = ZImageDiT(NANO_CONFIG)
    with torch.no_grad():
        for name, parameter in dit.named_parameters():
            if parameter.dim() == 1 and "bias" not in name:
                parameter.copy_(1.0 + 0.1 * torch.randn_like(parameter))
            else:
                parameter.copy_(torch.randn_like(parameter) * (parameter.shape[-1] ** -0.5 if parameter.dim() == 2
                                                                else 0.1))
    save_dit(dit, folder / "dit.safetensors", dtype=torch.bfloat16)
    NanoTextEncoder(TextEncoderConfig(width=NANO_CONFIG.cap_feat_dim)).save(folder / "text_encoder.safetensors")
    LatentCodec().save(folder / "codec.safetensors")
    Evaluator().save(folder / "evaluator.safetensors")


@pytest.fixture(scope="session")
def comfy():
    return require_comfy(*COMFY_MODULES)


@pytest.fixture(scope="session")
def nano_weights(tmp_path_factory):
    """Point zerase_core.nano.paths at random nano weights for the whole session."""
    from zerase_core.nano import paths
    folder = tmp_path_factory.mktemp("nano-weights")
    write_random_nano(folder)
    patch = pytest.MonkeyPatch()
    for name, file in (("WEIGHTS", None), ("DIT", "dit"), ("TEXT_ENCODER", "text_encoder"), ("CODEC", "codec"),
                       ("EVALUATOR", "evaluator")):
        patch.setattr(paths, name, folder if file is None else folder / f"{file}.safetensors")
    yield folder
    patch.undo()


@pytest.fixture(scope="session")
def pack(comfy, tmp_path_factory):
    """The pack loaded by ComfyUI's custom-node loader; its erasure folder is a temporary directory."""
    import folder_paths

    import nodes

    custom = tmp_path_factory.mktemp("custom_nodes")
    link = custom / PACK_FOLDER
    link.symlink_to(REPO_ROOT, target_is_directory=True)
    erasures = tmp_path_factory.mktemp("zerase-models")
    folder_paths.folder_names_and_paths["zerase"] = ([str(erasures)], {".safetensors"})
    # erasure files are where a stock LoRA loader could be pointed at them (it must ignore them)
    folder_paths.folder_names_and_paths["loras"] = ([str(erasures)], {".safetensors"})
    folder_paths.set_output_directory(str(tmp_path_factory.mktemp("output")))
    folder_paths.set_temp_directory(str(tmp_path_factory.mktemp("temp")))
    asyncio.run(nodes.init_builtin_extra_nodes())           # EmptySD3LatentImage, LossGraphNode, ... (comfy_extras)
    assert asyncio.run(nodes.load_custom_node(str(link))), "ComfyUI could not load the pack (see the log above)"
    bridge = importlib.import_module(str(link).replace(".", "_x_") + ".nodes.comfy_bridge")
    return {"nodes": nodes.NODE_CLASS_MAPPINGS, "erasures": erasures, "path": link, "bridge": bridge}
