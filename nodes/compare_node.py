"""ErasureCompare: original vs erased (plus an optional strength sweep) on erase and keep prompts, with scores."""

from __future__ import annotations

import numpy
import torch

from comfy_api.latest import io, ui

from zerase_core.common.grid import labelled_grid

from . import comfy_bridge, report
from .ids import CATEGORY, COMPARE, display_name
from .parsing import lines, parse_sweep


class ErasureCompare(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id=COMPARE,
            display_name=display_name("Compare Erasure"),
            category=CATEGORY,
            is_output_node=True,
            description="Samples erase and keep prompts with the original and the erased MODEL (same noise) and "
            "scores them with the core's evaluator (nano evaluator; NudeNet when installed).",
            inputs=[
                io.Model.Input("original", tooltip="The MODEL before erasure."),
                io.Model.Input("erased", tooltip="The MODEL with the erasure (ZEraseTrain or ApplyErasedWeights)."),
                io.Clip.Input("clip", tooltip="The text encoder of both MODELs."),
                io.Vae.Input("vae", tooltip="The VAE that decodes both MODELs' latents."),
                io.String.Input(
                    "erase_prompts",
                    multiline=True,
                    default="a red star on a white background",
                    tooltip="Prompts with the erased concept, one per line (should come out without it).",
                ),
                io.String.Input(
                    "keep_prompts",
                    multiline=True,
                    default="a blue circle on a black background",
                    tooltip="Prompts without it, one per line (should come out unchanged).",
                ),
                io.Int.Input(
                    "seed",
                    default=0,
                    min=0,
                    max=2**31 - 1,
                    tooltip="Noise seed of the first row; row i uses seed + i, the same for every column.",
                ),
                io.Int.Input("steps", default=20, min=1, max=200, tooltip="Sampler steps (euler, simple schedule)."),
                io.Float.Input(
                    "cfg",
                    default=3.0,
                    min=1.0,
                    max=30.0,
                    step=0.1,
                    tooltip="Classifier-free guidance against the empty prompt (Turbo: 1).",
                ),
                io.Int.Input("size", default=64, min=16, max=2048, step=16, tooltip="Image width and height."),
                io.String.Input(
                    "strength_sweep",
                    default="",
                    tooltip="Extra columns: erasure strength multipliers, comma-separated (e.g. 0.5, 2); empty = none.",
                ),
            ],
            outputs=[io.Image.Output(display_name="grid"), io.String.Output(display_name="report")],
            hidden=[io.Hidden.unique_id],
        )

    @classmethod
    def execute(
        cls, original, erased, clip, vae, erase_prompts, keep_prompts, seed, steps, cfg, size, strength_sweep
    ) -> io.NodeOutput:
        erase, keep = list(lines(erase_prompts)), list(lines(keep_prompts))
        if not erase and not keep:
            raise ValueError("erase_prompts and keep_prompts are both empty; give at least one prompt")
        comfy_bridge.zimage_network(original)
        template = comfy_bridge.prompt_template(comfy_bridge.base_info(original).config)
        columns = {"original": original, "erased": erased}
        for scale in parse_sweep(strength_sweep):
            columns[f"erased ×{scale:g}"] = comfy_bridge.with_strength_scale(erased, scale)
        prompts = erase + keep
        negative = comfy_bridge.encode_prompt(clip, "", template)
        bar = comfy_bridge.progress_bar(len(prompts) * len(columns), getattr(cls.hidden, "unique_id", None))
        images: dict[str, list] = {title: [] for title in columns}
        for row, prompt in enumerate(prompts):
            positive = comfy_bridge.encode_prompt(clip, prompt, template)
            for title, model in columns.items():
                images[title].append(
                    comfy_bridge.sample_images(model, vae, positive, negative, seed + row, steps, cfg, size)
                )
                bar.update(1)
        batches = {title: torch.cat(found).movedim(-1, 1).float().cpu() for title, found in images.items()}
        text, _ = _report(original, erased, erase, keep, batches)
        grid = _grid(batches, prompts)
        pairs = {
            "zerase_before": ui.PreviewImage(torch.cat(images["original"]), cls=cls).as_dict()["images"],
            "zerase_after": ui.PreviewImage(torch.cat(images["erased"]), cls=cls).as_dict()["images"],
        }
        shown = ui.PreviewImage(grid, cls=cls).as_dict()
        return io.NodeOutput(grid, text, ui={**shown, **pairs, "text": [text]})


def _grid(batches: dict[str, torch.Tensor], prompts: list[str]) -> torch.Tensor:
    titles = list(batches)
    cells = torch.stack([batches[title][row] for row in range(len(prompts)) for title in titles])
    labels = [f"{prompt}" if title == "original" else title for prompt in prompts for title in titles]
    picture = labelled_grid(
        cells, labels, columns=len(titles), scale=max(1, 256 // cells.shape[-1]), column_titles=titles, label_lines=3
    )
    return torch.from_numpy(numpy.asarray(picture).astype(numpy.float32) / 255.0)[None]


def _report(original, erased, erase, keep, batches) -> tuple[str, dict]:
    entries = comfy_bridge.erasures_of(erased)
    concepts = [concept for entry in entries for concept in entry.erasure.info.concepts]
    header = (
        "; ".join(
            f"{entry.erasure.info.method} {', '.join(entry.erasure.info.concepts)} at strength {entry.strength:g}"
            for entry in entries
        )
        or "the erased MODEL carries no ZErase erasure"
    )
    if comfy_bridge.is_nano(original):
        text, scores = report.nano_report(concepts, erase, keep, batches, report.nano_evaluator())
        return f"{header}\n{text}", scores
    if report.nudenet_available():
        text, scores = report.nudenet_report(batches, len(erase))
        return f"{header}\n{text}", scores
    return f"{header}\nno evaluator for this model (install the optional `nudenet` package for nudity scores)", {}
