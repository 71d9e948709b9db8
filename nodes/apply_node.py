"""ApplyErasedWeights: gated erasure adapters on a MODEL clone (never merged); several stack at 1/N each."""

from __future__ import annotations

from comfy_api.latest import io

from . import comfy_bridge
from .ids import APPLY, CATEGORY, ERASURE_TYPE, display_name
from .parsing import erasure_strengths

Erasure = io.Custom(ERASURE_TYPE)
NONE = "none"
FILE_SLOTS = 3


class ApplyErasedWeights(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        files = [NONE, *comfy_bridge.erasure_files()]
        return io.Schema(
            node_id=APPLY,
            display_name=display_name("Apply Erasure"),
            category=CATEGORY,
            description="Applies ZErase erasures to a MODEL as text-gated adapters (stock LoRA loaders cannot: the "
            "delta depends on which tokens are text).",
            inputs=[
                io.Model.Input("model", tooltip="The Z-Image MODEL to apply the erasure(s) to (it is cloned)."),
                Erasure.Input("erasure", optional=True, tooltip="An ERASURE from ZEraseTrain."),
                *[
                    io.Combo.Input(
                        f"erasure_file_{slot}",
                        options=files,
                        default=NONE,
                        tooltip="An erasure file from models/zerase.",
                    )
                    for slot in range(1, FILE_SLOTS + 1)
                ],
                io.Float.Input(
                    "strength",
                    default=1.0,
                    min=0.0,
                    max=10.0,
                    step=0.05,
                    tooltip="Multiplier of each erasure's recommended strength; with N erasures each "
                    "gets 1/N of it (the paper's merge: summing over-erases).",
                ),
                io.String.Input(
                    "strengths",
                    default="",
                    advanced=True,
                    tooltip="Optional explicit strength per erasure, comma-separated in order (ERASURE "
                    "input first, then the files); 'auto' keeps the 1/N default. Used as given.",
                ),
                io.Boolean.Input(
                    "allow_other_base",
                    default=False,
                    tooltip="Apply an erasure trained on another base model (e.g. a fine-tune of it).",
                ),
            ],
            outputs=[io.Model.Output(display_name="MODEL")],
        )

    @classmethod
    def execute(cls, model, strength, allow_other_base, erasure=None, strengths="", **files) -> io.NodeOutput:
        erasures = [erasure] if erasure is not None else []
        for slot in range(1, FILE_SLOTS + 1):
            name = files.get(f"erasure_file_{slot}", NONE)
            if name != NONE:
                path = comfy_bridge.existing_erasure(name, f"erasure_file_{slot}")
                erasures.append(comfy_bridge.ErasureData.from_file(path))
        if not erasures:
            raise ValueError("no erasure given: connect an ERASURE or pick an erasure file")
        values = erasure_strengths(strengths, strength, [data.info.recommended_strength for data in erasures])
        entries = [comfy_bridge.ErasureEntry(data, value) for data, value in zip(erasures, values, strict=True)]
        return io.NodeOutput(comfy_bridge.with_erasures(model, entries, allow_other_base))
