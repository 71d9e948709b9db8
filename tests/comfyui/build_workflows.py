"""Writes workflows/*.json (editor format) and workflows/api/*.json (API format) from the prompts below.

    COMFYUI_PATH=/path/to/ComfyUI /path/to/comfyui-venv/bin/python tests/comfyui/build_workflows.py

`test_comfyui_workflows.py` checks that each editor workflow converts to its API copy, so an edit made in the editor
must be saved to both (or made here and rebuilt). Names of the CPU-runnable workflows contain `nano`.
"""
from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

NANO_ERASE = ("a red star on a white background\na striped blue star on a gray background\n"
              "a dotted yellow pentagram on a black background")
NANO_KEEP = ("a red circle on a white background\na striped blue square on a gray background\n"
             "a dotted green triangle on a pink background")
NANO_LOADER = {"class_type": "LoadSingleStreamDiT", "inputs": {"model_name": "nano (bundled)"}}


def train(model, clip, vae, **overrides) -> dict:
    inputs = {"model": model, "clip": clip, "vae": vae, "concepts": "star", "keywords": "", "anchors": "",
              "preserve": "", "method": "zerase", "steps": 100, "learning_rate": 1e-3, "rank": 8, "targets": "auto",
              "epsilon": 0.0, "beta": 1.0, "eta": 2.0, "seed": 0, "resolution": 64, "save_name": "nano-star",
              "resume_from": "none", "preview_every": 25, "concept_kind": "auto", "sample_steps": 20, "sample_cfg": 3.0,
              "batch_size": 4, "pool_prompts": 32, "shuffle_bank": 0}
    return {"class_type": "ZEraseTrain", "inputs": {**inputs, **overrides}}


def compare(original, erased, clip, vae, **overrides) -> dict:
    inputs = {"original": original, "erased": erased, "clip": clip, "vae": vae, "erase_prompts": NANO_ERASE,
              "keep_prompts": NANO_KEEP, "seed": 0, "steps": 20, "cfg": 3.0, "size": 64, "strength_sweep": ""}
    return {"class_type": "ErasureCompare", "inputs": {**inputs, **overrides}}


def apply(model, file: str) -> dict:
    return {"class_type": "ApplyErasedWeights", "inputs": {
        "model": model, "erasure_file_1": file, "erasure_file_2": "none", "erasure_file_3": "none", "strength": 1.0,
        "strengths": "", "allow_other_base": False}}


WORKFLOWS = {
    "zerase_nano_demo": ({
        "1": NANO_LOADER,
        "2": train(["1", 0], ["1", 1], ["1", 2]),
        "3": compare(["1", 0], ["2", 0], ["1", 1], ["1", 2]),
        "4": {"class_type": "LossGraphNode", "inputs": {"loss": ["2", 2], "filename_prefix": "zerase_nano_loss"}},
    }, "Erase 'star' from the bundled nano model (CPU, a few minutes), then compare original and erased on erase "
       "and keep prompts; the report gives the nano evaluator's numbers. Writes models/zerase/nano-star.safetensors, "
       "which the other nano workflows apply."),
    "zerase_nano_apply_generate": ({
        "1": NANO_LOADER,
        "2": apply(["1", 0], "nano-star.safetensors"),
        "3": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["1", 1], "text": "a red star on a white background"}},
        "4": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["1", 1], "text": ""}},
        "5": {"class_type": "EmptySD3LatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 4}},
        "6": {"class_type": "KSampler", "inputs": {
            "model": ["2", 0], "seed": 0, "steps": 20, "cfg": 3.0, "sampler_name": "euler", "scheduler": "simple",
            "positive": ["3", 0], "negative": ["4", 0], "latent_image": ["5", 0], "denoise": 1.0}},
        "7": {"class_type": "VAEDecode", "inputs": {"samples": ["6", 0], "vae": ["1", 2]}},
        "8": {"class_type": "PreviewImage", "inputs": {"images": ["7", 0]}},
    }, "Apply a saved erasure (run zerase_nano_demo first) and generate with the stock sampler nodes."),
    "zerase_nano_compare": ({
        "1": NANO_LOADER,
        "2": apply(["1", 0], "nano-star.safetensors"),
        "3": compare(["1", 0], ["2", 0], ["1", 1], ["1", 2], strength_sweep="0.5, 2"),
    }, "Compare the original and the erased nano model, with a strength sweep (×0.5, ×2)."),
    "zerase_turbo_erase": ({
        "1": {"class_type": "UNETLoader", "inputs": {"unet_name": "z_image_turbo_bf16.safetensors",
                                                     "weight_dtype": "default"}},
        "2": {"class_type": "CLIPLoader", "inputs": {"clip_name": "qwen_3_4b.safetensors", "type": "lumina2",
                                                     "device": "default"}},
        "3": {"class_type": "VAELoader", "inputs": {"vae_name": "ae.safetensors"}},
        "4": train(["1", 0], ["2", 0], ["3", 0], concepts="a painting in the style of Van Gogh\n"
                   "Van Gogh's starry night over a village, oil on canvas", keywords="Van Gogh",
                   anchors="a painting\na starry night over a village, oil on canvas", steps=200, resolution=512,
                   save_name="turbo-van-gogh", preview_every=50, concept_kind="style", sample_steps=8, sample_cfg=1.0),
        "5": compare(["1", 0], ["4", 0], ["2", 0], ["3", 0], erase_prompts="a portrait in the style of Van Gogh\n"
                     "sunflowers in a vase, painted by Van Gogh", keep_prompts="a portrait in the style of Rembrandt\n"
                     "sunflowers in a vase, painted by Monet", steps=8, cfg=1.0, size=512),
        "6": {"class_type": "LossGraphNode", "inputs": {"loss": ["4", 2], "filename_prefix": "zerase_turbo_loss"}},
    }, "Z-Image Turbo with the stock loaders (bf16, fp8 or GGUF diffusion model; CLIPLoader type lumina2 with "
       "Qwen3-4B; the Flux ae VAE): erase a style, then compare. Needs a GPU."),
}


def main() -> None:
    from comfy_support import REPO_ROOT, require_comfy
    from conftest import COMFY_MODULES, PACK_FOLDER
    from workflow_format import api_to_ui, ui_to_api

    require_comfy(*COMFY_MODULES)
    import tempfile

    import nodes
    link = Path(tempfile.mkdtemp()) / PACK_FOLDER
    link.symlink_to(REPO_ROOT, target_is_directory=True)
    asyncio.run(nodes.init_builtin_extra_nodes())
    assert asyncio.run(nodes.load_custom_node(str(link)))
    classes = nodes.NODE_CLASS_MAPPINGS
    folder = REPO_ROOT / "workflows"
    (folder / "api").mkdir(parents=True, exist_ok=True)
    for name, (prompt, note) in WORKFLOWS.items():
        ui = api_to_ui(prompt, classes, {"ZErase": note})
        assert ui_to_api(ui, classes) == prompt, name
        (folder / f"{name}.json").write_text(json.dumps(ui, indent=1) + "\n")
        (folder / "api" / f"{name}.json").write_text(json.dumps(prompt, indent=1) + "\n")
        print("wrote", name)


if __name__ == "__main__":
    main()
