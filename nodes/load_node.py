"""LoadSingleStreamDiT: the bundled nano model, or a Z-Image / Lumina-2 file from `diffusion_models` via ComfyUI's
loader."""

from __future__ import annotations

from comfy_api.latest import io

from . import comfy_bridge
from .ids import CATEGORY, LOAD, NANO_CHOICE, display_name


class LoadSingleStreamDiT(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id=LOAD,
            display_name=display_name("Load Single-Stream DiT"),
            category=CATEGORY,
            description="Loads a single-stream DiT (Z-Image / Z-Image-Turbo, Lumina-Image-2.0) for erasure, or the "
            "bundled nano model with its own text encoder and latent codec.",
            inputs=[
                io.Combo.Input(
                    "model_name",
                    options=[NANO_CHOICE, *comfy_bridge.diffusion_model_files()],
                    tooltip="A Z-Image or Lumina-2 file from models/diffusion_models (loaded by "
                    "ComfyUI's own loader), or the bundled nano model that runs on CPU in seconds.",
                ),
                io.Clip.Input(
                    "clip",
                    optional=True,
                    tooltip="For a Z-Image file: the Qwen3-4B text encoder; for Lumina-2: Gemma-2-2B "
                    "(CLIPLoader, type lumina2); passed through. Ignored for the nano model, "
                    "which brings its own.",
                ),
                io.Vae.Input(
                    "vae",
                    optional=True,
                    tooltip="For a Z-Image or Lumina-2 file: the Flux VAE (ae); passed through. Ignored for "
                    "the nano model, which brings its own codec.",
                ),
            ],
            outputs=[
                io.Model.Output(display_name="MODEL"),
                io.Clip.Output(display_name="CLIP"),
                io.Vae.Output(display_name="VAE"),
                io.String.Output(display_name="layout"),
            ],
        )

    @classmethod
    def execute(cls, model_name: str, clip=None, vae=None) -> io.NodeOutput:
        if model_name == NANO_CHOICE:
            model, clip, vae = comfy_bridge.load_nano()
        else:
            model = comfy_bridge.load_diffusion_file(model_name)
        return io.NodeOutput(model, clip, vae, comfy_bridge.describe_layout(model))
