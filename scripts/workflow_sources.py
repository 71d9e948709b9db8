"""The example workflows as API prompts, with their notes: the source scripts/build_workflows.py builds from.

A workflow's file name is what ComfyUI's Templates dialog shows as its title and description (it lists
`workflows/*.json` of a pack by name only), so names are short sentences. `SLUGS` give each a stable short id for
code and screenshots. Names of the CPU-runnable workflows contain "nano".
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
FOLDER = REPO / "workflows"

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


@dataclass(frozen=True)
class Workflow:
    slug: str
    name: str            # the file name without .json: the title in ComfyUI's Templates dialog
    prompt: dict
    note: str            # markdown, in a note at the head of the graph

    @property
    def ui_path(self) -> Path:
        return FOLDER / f"{self.name}.json"

    @property
    def api_path(self) -> Path:
        return FOLDER / "api" / f"{self.name}.json"

    @property
    def thumbnail_path(self) -> Path:
        return FOLDER / f"{self.name}.jpg"

    @property
    def runs_on_cpu(self) -> bool:
        return "nano" in self.name


NANO_DEMO = Workflow("nano-demo", "ZErase nano demo, erase star then compare (CPU)", {
    "1": NANO_LOADER,
    "2": train(["1", 0], ["1", 1], ["1", 2]),
    "3": compare(["1", 0], ["2", 0], ["1", 1], ["1", 2]),
    "4": {"class_type": "LossGraphNode", "inputs": {"loss": ["2", 2], "filename_prefix": "zerase_nano_loss"}},
}, "## Start here\nErases the word **star** from the bundled nano model (runs on a CPU in a few minutes), then "
   "draws erase prompts and keep prompts with the original and the erased model side by side.\n\n"
   "- **Train Erasure** shows L_er, L_pr and λ live, and saves `models/zerase/nano-star.safetensors`.\n"
   "- **Compare Erasure** reports how often the nano evaluator still sees a star (erase prompts) and how well "
   "the other shapes are kept (keep prompts); drag its slider to compare.\n\n"
   "Press **Run**. The other nano templates apply the saved file.")

NANO_APPLY = Workflow("nano-apply", "ZErase nano, apply a saved erasure and generate (CPU)", {
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
}, "## Apply an erasure\nLoads `nano-star.safetensors` (made by the nano demo template: run that first) onto the "
   "nano model and samples with ComfyUI's own KSampler.\n\n"
   "**Apply Erased Weights** stacks up to three erasure files, each with its strength; the text-token gate stays "
   "on, so image tokens always see the original weights.")

NANO_COMPARE = Workflow("nano-compare", "ZErase nano, compare with a strength sweep (CPU)", {
    "1": NANO_LOADER,
    "2": apply(["1", 0], "nano-star.safetensors"),
    "3": compare(["1", 0], ["2", 0], ["1", 1], ["1", 2], strength_sweep="0.5, 2"),
}, "## Compare at several strengths\nApplies `nano-star.safetensors` (run the nano demo template first) and "
   "compares the original with the erased model at strength ×1, ×0.5 and ×2 (`strength_sweep`). The report "
   "gives the evaluator's numbers for each strength.")

TURBO_ERASE = Workflow("turbo-erase", "ZErase Z-Image Turbo, erase a style then compare (GPU)", {
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
}, "## Z-Image Turbo (GPU)\nPut the files here, then press **Run** (about 3 min of training on a 16 GB+ GPU):\n\n"
   "- `models/diffusion_models/z_image_turbo_bf16.safetensors` (or an fp8 / GGUF copy)\n"
   "- `models/text_encoders/qwen_3_4b.safetensors` (CLIPLoader, type **lumina2**)\n"
   "- `models/vae/ae.safetensors` (the Flux VAE)\n\n"
   "Erases the style *Van Gogh*; the anchors say what the erase prompts should become. Saves "
   "`models/zerase/turbo-van-gogh.safetensors`.")

LUMINA_ERASE = Workflow("lumina-erase", "ZErase Lumina-Image-2.0, erase a style then compare (GPU)", {
    "1": {"class_type": "UNETLoader", "inputs": {"unet_name": "lumina_2_model_bf16.safetensors",
                                                 "weight_dtype": "default"}},
    "2": {"class_type": "CLIPLoader", "inputs": {"clip_name": "gemma_2_2b_fp16.safetensors", "type": "lumina2",
                                                 "device": "default"}},
    "3": {"class_type": "VAELoader", "inputs": {"vae_name": "ae.safetensors"}},
    "4": train(["1", 0], ["2", 0], ["3", 0], concepts="a painting in the style of Van Gogh\n"
               "Van Gogh's starry night over a village, oil on canvas", keywords="Van Gogh",
               anchors="a painting\na starry night over a village, oil on canvas", steps=200, resolution=512,
               save_name="lumina2-van-gogh", preview_every=50, concept_kind="style", sample_steps=25, sample_cfg=4.0),
    "5": compare(["1", 0], ["4", 0], ["2", 0], ["3", 0], erase_prompts="a portrait in the style of Van Gogh\n"
                 "sunflowers in a vase, painted by Van Gogh", keep_prompts="a portrait in the style of Rembrandt\n"
                 "sunflowers in a vase, painted by Monet", steps=25, cfg=4.0, size=512),
    "6": {"class_type": "LossGraphNode", "inputs": {"loss": ["4", 2], "filename_prefix": "zerase_lumina2_loss"}},
}, "## Lumina-Image-2.0 (GPU)\nPut the files here, then press **Run** (a 12 GB+ GPU):\n\n"
   "- `models/diffusion_models/lumina_2_model_bf16.safetensors`\n"
   "- `models/text_encoders/gemma_2_2b_fp16.safetensors` (CLIPLoader, type **lumina2**)\n"
   "- `models/vae/ae.safetensors` (the Flux VAE)\n\n"
   "Erases the style *Van Gogh* from Lumina-2 (shift 6, 25 steps at cfg 4); the adapters act on text tokens only, "
   "and the caption stays unpadded as ComfyUI runs Lumina-2. Each prompt gets Lumina-2's system prompt, as "
   "CLIP Text Encode (Lumina 2) gives it. Saves `models/zerase/lumina2-van-gogh.safetensors`, which only a Lumina-2 model accepts.")

WORKFLOWS = (NANO_DEMO, NANO_APPLY, NANO_COMPARE, TURBO_ERASE, LUMINA_ERASE)
SLUGS = {workflow.slug: workflow for workflow in WORKFLOWS}
