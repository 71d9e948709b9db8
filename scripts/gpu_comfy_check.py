"""ZEraseTrain inside a real ComfyUI on random full-size Z-Image-Turbo + Qwen3-4B files: s/step, forward time, peak
VRAM (the ComfyUI part of scripts/gpu_check.sh, issue 16 item 5). Nothing is installed or downloaded.

    python scripts/gpu_comfy_check.py make-models DIR [--tiny]
    python scripts/gpu_comfy_check.py run --comfyui PATH --models DIR [--weight-dtype fp8_e4m3fn] [--vram-gb 16]
                                          [--steps 4] [--resolution 512] [--tiny] [--json FILE]
    python scripts/gpu_comfy_check.py table OUT_DIR

make-models writes `zimage-turbo-random.safetensors` (Z-Image-Turbo's exact config, 6.155B parameters, bf16, keys
as ComfyUI's UNETLoader reads them) and `qwen3-4b-random.safetensors` (ComfyUI's own Qwen3_4B class, 36 layers,
hidden 2560, bf16: CLIPLoader type lumina2 detects it as Qwen3-4B), with random weights made on the GPU when there
is one. `run` imports ComfyUI as its server does (its flags: `--reserve-vram R`, with R = total − vram_gb, so that
model management plans for a card of `vram_gb`; torch is also capped to that much, so a larger peak fails), loads
the pack by ComfyUI's custom-node loader, loads both files with the stock UNETLoader (`weight_dtype`) and CLIPLoader
and runs ZEraseTrain. It prints one `ZERASE-COMFY {json}` line: s/step (median after the first), the no-grad
forward time (median, batch 1), the peak allocated and reserved VRAM from ZEraseTrain's start, the node's report.

--tiny (CPU test of the script): a width-256 DiT with ZErase's metadata (LoadSingleStreamDiT) and ComfyUI's Qwen3
classes at hidden size 64 built in-process (tests/comfyui/test_comfyui_real_format.py), instead of the two files.
"""
from __future__ import annotations

import argparse
import atexit
import importlib
import importlib.util
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
GIB = 2 ** 30
DIT, TEXT_ENCODER = "zimage-turbo-random.safetensors", "qwen3-4b-random.safetensors"
TINY_DIT = "zimage-tiny-random.safetensors"
PROMPT = "a painting of a city street by Van Gogh"


def make_models(folder: Path, tiny: bool) -> None:
    import torch

    from zerase_core.model.checkpoint import save_dit
    from zerase_core.model.config import DiTConfig
    from zerase_core.bench.synthetic import random_dit
    folder.mkdir(parents=True, exist_ok=True)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    started = time.monotonic()
    if tiny:
        config = DiTConfig(dim=256, n_layers=2, n_refiner_layers=1, n_heads=2, cap_feat_dim=64, ffn_multiple_of=32)
        save_dit(random_dit(config, torch.float32, device), folder / TINY_DIT, dtype=torch.bfloat16)
        print(f"wrote {folder / TINY_DIT} ({time.monotonic() - started:.1f} s)", flush=True)
        return
    dit = random_dit(DiTConfig.turbo(), torch.bfloat16, device)
    save_dit(dit, folder / DIT)
    del dit
    print(f"wrote {folder / DIT} ({time.monotonic() - started:.1f} s)", flush=True)
    started = time.monotonic()
    save_qwen3_4b(folder / TEXT_ENCODER, device)
    print(f"wrote {folder / TEXT_ENCODER} ({time.monotonic() - started:.1f} s)", flush=True)


def qwen3_4b(device: str):
    """ComfyUI's own Qwen3-4B module (bf16, weights uninitialised): its state dict is the file format."""
    import torch

    import comfy.ops
    import comfy.text_encoders.llama as llama
    return llama.Qwen3_4B({}, torch.bfloat16, device, comfy.ops.disable_weight_init)


def save_qwen3_4b(path: Path, device: str) -> None:
    """Qwen3-4B's state dict with ComfyUI's key names, from a module of its own classes (needs ComfyUI on sys.path
    for `comfy.text_encoders.llama`): Linear weights N(0, 0.02), norms 1."""
    import torch
    from safetensors.torch import save_file

    model = qwen3_4b(device)
    generator = torch.Generator(device=device).manual_seed(0)
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.dim() == 1:
                parameter.fill_(1.0)
            else:
                parameter.normal_(0.0, 0.02, generator=generator)
    tensors = {key: value.contiguous().cpu() for key, value in model.state_dict().items()}
    temporary = path.with_suffix(".tmp")
    save_file(tensors, str(temporary))
    temporary.replace(path)


def _import_comfyui(root: Path, flags: list[str]):
    sys.path.insert(0, str(root))
    saved, sys.argv = sys.argv, [sys.argv[0], *flags]
    import comfy.options
    comfy.options.enable_args_parsing()
    import comfy.cli_args
    sys.argv = saved


def _load_pack(work: Path):
    import asyncio

    import folder_paths
    import server as comfy_server

    import nodes

    class Server:
        client_id = last_node_id = last_prompt_id = None

        def __getattr__(self, name):
            return lambda *args, **kwargs: None

    comfy_server.PromptServer.instance = Server()
    folder_paths.folder_names_and_paths["zerase"] = ([str(work / "zerase")], {".safetensors"})
    folder_paths.set_output_directory(str(work / "output"))
    folder_paths.set_temp_directory(str(work / "temp"))
    (work / "custom_nodes").mkdir()
    link = work / "custom_nodes" / "ComfyUI-ZErase"
    link.symlink_to(REPO, target_is_directory=True)
    asyncio.run(nodes.init_builtin_extra_nodes())
    if not asyncio.run(nodes.load_custom_node(str(link))):
        raise SystemExit("ComfyUI could not load the pack (see its log above)")
    return nodes, importlib.import_module(str(link).replace(".", "_x_") + ".nodes.comfy_bridge")


def _tiny_clip():
    spec = importlib.util.spec_from_file_location("real_format", REPO / "tests/comfyui/test_comfyui_real_format.py")
    module = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(REPO / "tests"))
    spec.loader.exec_module(module)
    return module.tiny_qwen3_clip()


def _timed(owner, name: str, record: list, keep):
    """Wrap `owner.name` to append (seconds, call args) to `record` where keep(args) (measurement only)."""
    import torch
    original = getattr(owner, name)

    def timed(*args, **kwargs):
        started = time.perf_counter()
        result = original(*args, **kwargs)
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        if keep(args):
            record.append(time.perf_counter() - started)
        return result

    setattr(owner, name, timed)


def run(args) -> int:
    flags = ["--cpu"] if args.cpu else []
    total = None
    if args.vram_gb and not args.cpu:
        import torch
        total = torch.cuda.get_device_properties(0).total_memory / GIB
        flags += ["--reserve-vram", f"{max(0.0, total - args.vram_gb):.2f}"]
    _import_comfyui(args.comfyui, flags)
    import torch

    import folder_paths

    from zerase_core.engine.trainer import EraseTrainer
    if total is not None:
        torch.cuda.set_per_process_memory_fraction(min(1.0, args.vram_gb / total))
    work = Path(tempfile.mkdtemp(prefix="zerase-gpu-comfy-"))
    atexit.register(shutil.rmtree, work, True)       # the pack's link, the erasure file
    nodes, bridge = _load_pack(work)
    folder_paths.folder_names_and_paths["diffusion_models"] = ([str(args.models)], {".safetensors"})
    folder_paths.folder_names_and_paths["text_encoders"] = ([str(args.models)], {".safetensors"})
    steps, forwards = [], []
    _timed(EraseTrainer, "train_step", steps, lambda call: True)
    _timed(bridge.NextDiTDenoiser, "__call__", forwards,
           lambda call: not torch.is_grad_enabled() and call[1].shape[0] == 1)
    started = time.monotonic()
    with torch.inference_mode():
        if args.tiny:
            model = nodes.NODE_CLASS_MAPPINGS["LoadSingleStreamDiT"].execute(TINY_DIT).result[0]
            clip = _tiny_clip()
        else:
            model = nodes.UNETLoader().load_unet(DIT, args.weight_dtype)[0]
            clip = nodes.CLIPLoader().load_clip(TEXT_ENCODER, "lumina2")[0]
    loaded = time.monotonic() - started
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    inputs = dict(concepts=PROMPT, keywords="Van Gogh", anchors="a painting of a city street", method="zerase",
                  steps=args.steps, learning_rate=1e-3, rank=8, targets="auto", epsilon=0.0, beta=0.1, eta=1.0,
                  seed=0, resolution=args.resolution, save_name="gpu-check", resume_from="none", preview_every=0,
                  sample_steps=args.sample_steps, sample_cfg=1.0, batch_size=1, pool_prompts=1,
                  shuffle_bank=args.shuffle_bank)
    started = time.monotonic()
    with torch.inference_mode():
        output = nodes.NODE_CLASS_MAPPINGS["ZEraseTrain"].execute(model=model, clip=clip, **inputs)
    record = {
        "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() and not args.cpu else "cpu",
        "weight_dtype": args.weight_dtype, "vram_gb": args.vram_gb, "comfyui_flags": flags,
        "resolution": args.resolution, "steps": len(steps), "load_s": round(loaded, 2),
        "node_s": round(time.monotonic() - started, 2),
        "s_per_step": round(statistics.median(steps[1:] or steps), 4),
        "first_step_s": round(steps[0], 4) if steps else None,
        "forward_s": round(statistics.median(forwards), 4) if forwards else None,
        "peak_allocated_gib": round(torch.cuda.max_memory_allocated() / GIB, 3) if torch.cuda.is_available() else None,
        "peak_reserved_gib": round(torch.cuda.max_memory_reserved() / GIB, 3) if torch.cuda.is_available() else None,
        "report": output.ui["text"]}
    print("ZERASE-COMFY " + json.dumps(record), flush=True)
    if args.json:
        temporary = args.json.with_suffix(".tmp")
        temporary.write_text(json.dumps(record, indent=1) + "\n")
        temporary.replace(args.json)
    return 0


def table(folder: Path) -> None:
    """The runs' JSON files as one table."""
    print("| run | device | s/step | forward s | peak allocated GiB | peak reserved GiB | DiT load (node report) |")
    print("|---|---|---|---|---|---|---|")
    for path in sorted(folder.glob("comfy_*.json")):
        row = json.loads(path.read_text())
        load = next((line for line in row["report"] if line.startswith("DiT")), "")
        print(f"| {path.stem} | {row['device']} | {row['s_per_step']} | {row['forward_s']} | "
              f"{row['peak_allocated_gib']} | {row['peak_reserved_gib']} | {load} |")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    make = commands.add_parser("make-models")
    make.add_argument("folder", type=Path)
    make.add_argument("--tiny", action="store_true")
    make.add_argument("--comfyui", type=Path, help="ComfyUI's folder (for its Qwen3 classes)")
    go = commands.add_parser("run")
    go.add_argument("--comfyui", type=Path, required=True)
    go.add_argument("--models", type=Path, required=True)
    go.add_argument("--weight-dtype", default="default", choices=["default", "fp8_e4m3fn"])
    go.add_argument("--vram-gb", type=float, default=None, help="plan and cap the run as on a card this large")
    go.add_argument("--steps", type=int, default=4)
    go.add_argument("--sample-steps", type=int, default=4)
    go.add_argument("--resolution", type=int, default=512)
    go.add_argument("--shuffle-bank", type=int, default=0, help="ZEraseTrain's shuffle_bank (0: auto, 8 on a GPU)")
    go.add_argument("--tiny", action="store_true")
    go.add_argument("--cpu", action="store_true")
    go.add_argument("--json", type=Path)
    summary = commands.add_parser("table")
    summary.add_argument("folder", type=Path)
    args = parser.parse_args(argv)
    if args.command == "table":
        table(args.folder)
        return 0
    if args.command == "make-models":
        if not args.tiny:
            if args.comfyui is None:
                parser.error("make-models needs --comfyui (ComfyUI's Qwen3 classes write the text encoder)")
            sys.path.insert(0, str(args.comfyui))
        make_models(args.folder, args.tiny)
        return 0
    if not (args.comfyui / "comfy" / "model_management.py").exists():
        parser.error(f"--comfyui {args.comfyui} is not a ComfyUI folder (no comfy/model_management.py)")
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
