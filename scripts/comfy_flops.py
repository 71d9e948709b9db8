"""`bench --flops` with the `comfyui` path: ZEraseTrain's training on ComfyUI's own NextDiT, through nodes/comfy_bridge.

    COMFYUI_PATH=../shared/comfyui "$(bash .ci/comfyui_env.sh)" scripts/comfy_flops.py [bench --flops options]

A script, not part of zerase_core (which never imports ComfyUI): it needs a ComfyUI source tree (`COMFYUI_PATH`)
importable by the running python (ComfyUI's venv) and prints the table of `bench --flops` with the comfyui rows. The pack's `nodes` package is loaded under its own name, as ComfyUI loads a custom node, so
it does not meet ComfyUI's top-level `nodes` module.
"""
from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from contextlib import contextmanager
from pathlib import Path

PACK_ROOT = Path(__file__).resolve().parent.parent
if str(PACK_ROOT) not in sys.path:
    sys.path.insert(0, str(PACK_ROOT))
PACK_NAME = "zerase_pack_flops"


def comfy_available():
    """(the pack's comfy_bridge module, None) or (None, why not)."""
    root = os.environ.get("COMFYUI_PATH")
    if not root:
        return None, "COMFYUI_PATH is not set (a ComfyUI source tree; run with ComfyUI's python)"
    root_path = Path(root).expanduser().resolve()
    if not (root_path / "comfy" / "model_management.py").is_file():
        return None, f"COMFYUI_PATH={root} has no comfy/model_management.py"
    if str(root_path) not in sys.path:
        sys.path.insert(0, str(root_path))
    try:
        if "comfy.cli_args" not in sys.modules:
            saved, sys.argv = sys.argv, [sys.argv[0] if sys.argv else "zerase", "--cpu"]
            try:
                import comfy.options
                comfy.options.enable_args_parsing()
                import comfy.cli_args  # noqa: F401
            finally:
                sys.argv = saved
        return _pack_module("comfy_bridge"), None
    except Exception as error:  # noqa: BLE001  (any failure to import ComfyUI means: not counted, with the reason)
        return None, f"cannot import ComfyUI from {root_path}: {type(error).__name__}: {error}"


def _pack_module(name: str):
    if PACK_NAME not in sys.modules:
        spec = importlib.util.spec_from_file_location(PACK_NAME, PACK_ROOT / "nodes" / "__init__.py",
                                                      submodule_search_locations=[str(PACK_ROOT / "nodes")])
        package = importlib.util.module_from_spec(spec)
        sys.modules[PACK_NAME] = package
        spec.loader.exec_module(package)
    return importlib.import_module(f"{PACK_NAME}.{name}")


@contextmanager
def gpu_attention():
    """NextDiT's attention as ComfyUI picks it on a GPU (`attention_pytorch`: SDPA, its default with CUDA) while
    counting. On a CPU ComfyUI picks a sub-quadratic attention that asks the device for its free memory, which a
    meta tensor has not; both compute the same products, so the count is the same."""
    import comfy.ldm.lumina.model as lumina
    import comfy.ldm.modules.attention as attention
    previous = lumina.optimized_attention_masked
    lumina.optimized_attention_masked = attention.attention_pytorch
    try:
        yield
    finally:
        lumina.optimized_attention_masked = previous


@contextmanager
def meta_weights_kept():
    """ComfyUI's load gives a module with `comfy_cast_weights` real zeros for each meta weight
    (`disable_weight_init._zero_init_parameter`, a factory call that meets no meta tensor): while counting, a meta
    weight is left as it is (frozen, as ComfyUI leaves its zeros), so the full Turbo config never holds its 12-24 GB
    of weights (it was killed for memory at 30 layers). Other weights take ComfyUI's own path."""
    import comfy.ops

    holder = comfy.ops.disable_weight_init
    previous = holder.__dict__["_zero_init_parameter"]

    def keep_meta(module, name):
        param = getattr(module, name)
        if getattr(param, "is_meta", False):
            param.requires_grad_(False)
        else:
            previous.__func__(module, name)

    holder._zero_init_parameter = staticmethod(keep_meta)
    try:
        yield
    finally:
        holder._zero_init_parameter = previous


def comfy_patcher(bridge, config, dtype):
    """A ComfyUI Z-Image MODEL (`model_base.Lumina2` holding a NextDiT) of `config` with meta weights: ComfyUI's own
    classes, as `comfy_bridge.build_zimage_patcher` builds them, without loading any weights."""
    import comfy.model_management as model_management
    import comfy.model_patcher
    import comfy.supported_models

    from zerase_core.bench.meta_count import META
    models = importlib.import_module(f"{PACK_NAME}.comfy_bridge.models")
    loaders = importlib.import_module(f"{PACK_NAME}.comfy_bridge.loaders")
    model_config = comfy.supported_models.ZImage(loaders._unet_config(config))
    model_config.sampling_settings = {"multiplier": 1.0, "shift": config.shift}
    model_config.set_inference_dtype(dtype, None)
    model = model_config.get_model({}, "", device=META)
    patcher = comfy.model_patcher.ModelPatcher(model, load_device=model_management.get_torch_device(),
                                               offload_device=model_management.unet_offload_device())
    patcher.set_attachments(models.BASE_ATTACHMENT, models.BaseInfo(config, False))
    return patcher


def comfy_path_counts(bridge, config, settings: dict, size: int, rank: int, prompts) -> dict:
    """{"comfyui": counts} of one ZEraseTrain step: `comfy_bridge.training` on a meta MODEL, the trainer's denoiser
    its `NextDiTDenoiser`, the adapters attached through its PatcherInjection (as nodes/train_node.py runs it)."""
    from zerase_core.bench.meta_count import MetaTensors, to_meta
    from zerase_core.bench.perf_flops import FlopTrainer, count_step, reference_forward_flops
    from zerase_core.bench.perf_options import DTYPES, step_config
    from zerase_core.bench.synthetic import SyntheticConditioner
    with MetaTensors(), gpu_attention(), meta_weights_kept():
        patcher = comfy_patcher(bridge, config, DTYPES[settings["dtype"]])
        conditioner = SyntheticConditioner(config.cap_feat_dim, settings["caption_tokens"] or 16)
        with bridge.training(patcher) as context:
            own_forward = reference_forward_flops(context.denoiser, conditioner, size, prompts.erase[0],
                                                  config.in_channels)
            attached = []

            def make(clock):
                trainer = FlopTrainer(context.network, conditioner, prompts, step_config(settings, size, rank),
                                      denoise=context.denoiser, in_channels=config.in_channels, shift=config.shift,
                                      clock=clock, build_batch=settings["build_batch"], attach=False)
                to_meta(trainer.adapters)
                attached.append(context.attached(trainer.adapters))
                attached[-1].__enter__()
                return trainer
            # the joint blocks checkpointed for this budget (`checkpointed_blocks`, as the core paths count them;
            # None or 0: none), wrapped as nodes/comfy_bridge/graph_training.py wraps them on a GPU
            vram = importlib.import_module(f"{PACK_NAME}.comfy_bridge.vram")
            blocks = settings.get("checkpointed_blocks")
            try:
                with vram.layer_checkpointing(context.network, bool(blocks), blocks):
                    counted = count_step(make)
            finally:
                for manager in attached:
                    manager.__exit__(None, None, None)
    counted.pop("trainer")
    counted["own_forward"], counted["blocks"] = own_forward, blocks or 0
    return {"comfyui": counted}


def main(argv=None) -> int:
    from zerase_core.bench import perf_flops
    bridge, why = comfy_available()
    if bridge is None:
        print(f"error: {why}", file=sys.stderr)
        return 2

    def comfyui(config, settings, size, rank, prompts):
        return comfy_path_counts(bridge, config, settings, size, rank, prompts)

    return perf_flops.main(argv, comfyui=comfyui, prog="scripts/comfy_flops.py")


if __name__ == "__main__":
    sys.exit(main())
