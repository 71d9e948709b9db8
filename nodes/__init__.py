"""ComfyUI nodes (thin wrappers over zerase_core). Filled in by the node-pack issue."""
from comfy_api.latest import ComfyExtension, io


class ZEraseExtension(ComfyExtension):
    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        return []


async def comfy_entrypoint() -> ZEraseExtension:
    return ZEraseExtension()
