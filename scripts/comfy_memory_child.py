"""The measured side of scripts/comfy_memory_check.py: one run (`cli` or a ComfyUI variant) in a fresh process.

    python scripts/comfy_memory_child.py LABEL SPEC.json      (started by comfy_memory_check.py, not by hand)

It prints `ZERASE-MEMORY {json}` markers (RSS, high-water mark, optionally a census of live tensors) at each phase,
resets the high-water mark when training starts, and with `trace_saved` prints `ZERASE-SAVED {json}`: the tensors
autograd saves for the backward in each training step.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
GIB = 2 ** 30
CONCEPT = "star"
RUNS = ("cli", "comfyui", "comfyui-loader", "comfyui-bf16-compute", "comfyui-cpu-default")
# every training setting, given explicitly to both sides (the node's widget names; the CLI's flags below)
SETTINGS = {"method": "zerase", "learning_rate": 1e-3, "rank": 8, "targets": "qk", "epsilon": 0.0, "beta": 0.1,
            "eta": 2.0, "sample_cfg": 3.0, "batch_size": 4}


# ---------------------------------------------------------------- parent


def status(pid: int | str = "self") -> dict[str, int]:
    fields = {}
    try:
        with open(f"/proc/{pid}/status") as stream:
            for line in stream:
                name, _, value = line.partition(":")
                if name in ("VmRSS", "VmHWM", "RssAnon", "RssFile"):
                    fields[name] = int(value.split()[0])
    except OSError:
        pass
    return fields


def cli_argv(spec: dict) -> list[str]:
    """`python -m zerase_core` arguments of the run (every setting explicit, as the node gets them)."""
    targets = [flag for slice_ in SETTINGS["targets"] for flag in ("--targets", slice_)]
    return ["erase", "--base", spec["model"], "--concept", CONCEPT, "--method", SETTINGS["method"],
            "--steps", str(spec["steps"]), "--lr", str(SETTINGS["learning_rate"]), "--rank", str(SETTINGS["rank"]),
            *targets, "--eta", str(SETTINGS["eta"]), "--beta", str(SETTINGS["beta"]),
            "--pool-prompts", str(spec["pool_prompts"]), "--sample-steps", str(spec["sample_steps"]),
            "--seed", str(spec["seed"]), "--no-strength-search", "--out", spec["outputs"]["cli"]]


def tensor_census() -> dict:
    """GiB held by live tensors (unique storages of at least 1 MiB), by dtype; `inference` = inference tensors."""
    import gc
    import warnings

    import torch
    seen, sizes = set(), {}
    with warnings.catch_warnings():       # isinstance() on deprecated torch objects warns
        warnings.simplefilter("ignore")
        objects = [obj for obj in gc.get_objects() if isinstance(obj, torch.Tensor)]
    for obj in objects:
        try:
            if obj.is_meta or obj.device.type != "cpu":
                continue
            storage = obj.untyped_storage()
            key, size = storage.data_ptr(), storage.nbytes()
        except Exception:  # noqa: BLE001  (odd tensor subclasses)
            continue
        if size < 2 ** 20 or key in seen:
            continue
        seen.add(key)
        name = str(obj.dtype).replace("torch.", "") + (" inference" if obj.is_inference() else "")
        sizes[name] = sizes.get(name, 0.0) + size / GIB
    return {name: round(value, 3) for name, value in sorted(sizes.items())}


def mark(at: str, census: bool = False, reset: bool = False) -> None:
    """Print the memory now; `reset`: then restart the high-water mark (the training phase begins)."""
    record = {"at": at, **status()}
    if census:
        record["tensors_gib"] = tensor_census()
    if reset:
        record["reset"] = True
    print("ZERASE-MEMORY " + json.dumps(record), flush=True)
    if reset:
        with open("/proc/self/clear_refs", "w") as stream:
            stream.write("5")


def install_hooks(spec: dict, reset_at_trainer: bool) -> None:
    """Marks when the EraseTrainer (both paths use it) is created and after each step; optionally the tracer."""
    import gc
    import warnings

    import torch
    from torch import nn

    from zerase_core.engine import trainer as trainer_module

    trainer_class = trainer_module.EraseTrainer
    original_init, original_step = trainer_class.__init__, trainer_class.train_step

    def init(self, *args, **kwargs):
        mark("EraseTrainer created (weights loaded)", census=True, reset=reset_at_trainer)
        original_init(self, *args, **kwargs)
        mark("x_t pool and teacher cache built")

    def traced_step(self, *args, **kwargs):
        params = {}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            found = [obj for obj in gc.get_objects() if isinstance(obj, nn.Parameter)]
        for obj in found:
            if obj.device.type == "cpu":
                params[obj.untyped_storage().data_ptr()] = tuple(obj.shape)
        del found
        weight_shapes = {shape for shape in params.values() if len(shape) == 2}
        seen, totals, by_dtype, shapes = set(), {"total": 0, "weights": 0, "copies": 0}, {}, {}

        def pack(tensor):
            try:
                storage = tensor.untyped_storage()
                key, size = storage.data_ptr(), storage.nbytes()
            except Exception:  # noqa: BLE001
                return tensor
            if key in seen:
                return tensor
            seen.add(key)
            totals["total"] += size
            if key in params:
                totals["weights"] += size
                return tensor
            if tuple(tensor.shape) in weight_shapes:
                totals["copies"] += size
            name = str(tensor.dtype).replace("torch.", "")
            by_dtype[name] = by_dtype.get(name, 0) + size
            shape = f"{name} {list(tensor.shape)}"
            count, total = shapes.get(shape, (0, 0))
            shapes[shape] = (count + 1, total + size)
            return tensor

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
            result = original_step(self, *args, **kwargs)
        top = sorted(shapes.items(), key=lambda item: -item[1][1])[:10]
        print("ZERASE-SAVED " + json.dumps({
            "step": self.step, "tensors": len(seen), "total_gib": totals["total"] / GIB,
            "weights_gib": totals["weights"] / GIB, "weight_copies_gib": totals["copies"] / GIB,
            "by_dtype": {name: round(size / GIB, 3) for name, size in by_dtype.items()},
            "top": [(shape, round(size / GIB, 3), count) for shape, (count, size) in top]}), flush=True)
        return result

    def step(self, *args, **kwargs):
        result = (traced_step if spec.get("trace_saved") else original_step)(self, *args, **kwargs)
        mark(f"training step {self.step} done")
        return result

    trainer_class.__init__, trainer_class.train_step = init, step


def child(spec: dict, label: str) -> int:
    mark("start")
    if label == "cli":
        import torch
        torch.set_num_threads(1)
        install_hooks(spec, reset_at_trainer=True)
        from zerase_core.cli import main as cli_main
        code = cli_main(cli_argv(spec))
        mark("done", census=True)
        return code
    return comfyui_child(spec, label)


def comfyui_child(spec: dict, label: str) -> int:
    import asyncio

    root = spec["comfyui"]
    sys.path.insert(0, root)
    flags = ["--cpu"] if label == "comfyui-cpu-default" else ["--cpu", "--bf16-unet"]
    saved_argv, sys.argv = sys.argv, [sys.argv[0], *flags]
    import comfy.options
    comfy.options.enable_args_parsing()
    import comfy.cli_args  # noqa: F401  (parses the flags)
    sys.argv = saved_argv
    import torch
    torch.set_num_threads(1)
    import comfy.model_management
    if label == "comfyui-bf16-compute":
        stock = comfy.model_management.unet_manual_cast

        def bf16_compute(weight_dtype, inference_device, *args, **kwargs):
            if weight_dtype == torch.bfloat16:
                return None                   # compute in the weights' bf16, as on a bf16-capable GPU
            return stock(weight_dtype, inference_device, *args, **kwargs)

        comfy.model_management.unet_manual_cast = bf16_compute
    import execution
    import folder_paths
    import nodes
    import server as comfy_server

    install_hooks(spec, reset_at_trainer=False)
    workdir = Path(spec["workdir"])
    model = Path(spec["model"])
    folder_paths.folder_names_and_paths["diffusion_models"] = ([str(model.parent)], {".safetensors"})
    folder_paths.folder_names_and_paths["zerase"] = ([str(workdir / "zerase")], {".safetensors"})
    folder_paths.set_output_directory(str(workdir / "output"))
    folder_paths.set_temp_directory(str(workdir / "temp"))
    custom = workdir / "custom_nodes"
    custom.mkdir(exist_ok=True)
    link = custom / "ComfyUI-ZErase"
    if link.is_symlink() or link.exists():
        link.unlink()
    link.symlink_to(REPO, target_is_directory=True)
    loader = ({"class_type": "LoadSingleStreamDiT", "inputs": {"model_name": model.name}} if label == "comfyui-loader"
              else {"class_type": "UNETLoader", "inputs": {"unet_name": model.name, "weight_dtype": "default"}})
    prompt = {
        "1": loader,
        "2": {"class_type": "LoadSingleStreamDiT", "inputs": {"model_name": "nano (bundled)"}},
        "3": {"class_type": "ZEraseTrain", "inputs": {
            "model": ["1", 0], "clip": ["2", 1], "concepts": "\n".join(spec["erase"]), "keywords": spec["keyword"],
            "anchors": "\n".join(spec["anchors"]), "preserve": "", **{k: v for k, v in SETTINGS.items()},
            "steps": spec["steps"], "seed": spec["seed"], "resolution": spec["resolution"],
            "save_name": Path(spec["outputs"][label]).stem, "resume_from": "none", "preview_every": 0,
            "concept_kind": "object", "sample_steps": spec["sample_steps"], "pool_prompts": spec["pool_prompts"]}},
    }

    class Server:
        """What PromptExecutor and the nodes need of the server; marks memory when a node starts."""

        client_id = last_node_id = last_prompt_id = None

        def send_sync(self, event, data, sid=None):
            if event == "executing" and data.get("node") is not None:
                node = data["node"]
                kind = prompt[node]["class_type"]
                mark(f"node {node} ({kind}) starts", census=True, reset=kind == "ZEraseTrain")

        def __getattr__(self, name):
            return lambda *args, **kwargs: None

    server = Server()
    comfy_server.PromptServer.instance = server
    asyncio.run(nodes.init_builtin_extra_nodes())
    if not asyncio.run(nodes.load_custom_node(str(link))):
        raise SystemExit("ComfyUI could not load the pack")
    mark("ComfyUI imported, pack loaded")
    valid, error, outputs, node_errors = asyncio.run(execution.validate_prompt("memcheck", prompt, None))
    if not valid:
        raise SystemExit(f"invalid prompt: {error} {node_errors}")
    executor = execution.PromptExecutor(server, cache_type=execution.CacheType.CLASSIC,
                                        cache_args={"lru": 0, "ram": 0, "ram_inactive": 0})
    executor.execute(prompt, "memcheck", {"client_id": "memcheck"}, outputs)
    if not executor.success:
        raise SystemExit(f"the prompt failed: {executor.status_messages[-1:]}")
    mark("done", census=True)
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] not in RUNS:
        sys.exit(f"usage: {Path(__file__).name} {{{','.join(RUNS)}}} SPEC.json  (run by comfy_memory_check.py)")
    sys.exit(child(json.loads(Path(sys.argv[2]).read_text()), sys.argv[1]))
