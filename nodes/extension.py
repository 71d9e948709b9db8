"""The pack's V3 extension: registers the models folder and the four nodes."""

from __future__ import annotations

from comfy_api.latest import ComfyExtension, io

from . import comfy_bridge
from .apply_node import ApplyErasedWeights
from .compare_node import ErasureCompare
from .load_node import LoadSingleStreamDiT
from .train_node import ZEraseTrain


class ZEraseExtension(ComfyExtension):
    async def on_load(self) -> None:
        comfy_bridge.register_folders()

    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        return [LoadSingleStreamDiT, ZEraseTrain, ApplyErasedWeights, ErasureCompare]
