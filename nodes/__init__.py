"""ComfyUI nodes: thin V3 wrappers over `zerase_core`; the `comfy_bridge` package alone uses ComfyUI internals.

Importing this package needs no ComfyUI (the pure helpers `names`, `training` and `report` are tested without it);
the node classes are imported when ComfyUI asks for the extension.
"""


async def comfy_entrypoint():
    from .extension import ZEraseExtension

    return ZEraseExtension()
