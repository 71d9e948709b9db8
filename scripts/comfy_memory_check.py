"""Peak RSS of ZEraseTrain inside ComfyUI against the core CLI, for the same erasure run on a random dim-3840 model.

The acceptance item: "on a random dim-3840, 4-joint-layer model, ZEraseTrain's peak RSS is ≤ 1.15× the CLI's for
the same run (no second copy of the weights in the ComfyUI path)". Every path runs in a FRESH subprocess. Peaks are
the kernel's high-water mark of the resident set (VmHWM, which `ru_maxrss` reports), read by the child itself: once
when the run starts training (then reset through /proc/self/clear_refs) and at the end, so each run gives
- **process peak**: the whole process, loading included;
- **train peak**: from the start of the training phase to the end. ComfyUI: from the moment ZEraseTrain starts
  executing (its MODEL already loaded by UNETLoader); CLI: from the moment the trainer is created (the weights
  already loaded by `load_dit`). Both then build the x_t pool, train, and save the erasure file.
The parent also samples each child's VmRSS / RssAnon / RssFile every 50 ms (a timeline, and the anon/file split at
the sampled peak: file-backed pages are the mmapped safetensors file, anon pages are copies).

Runs (--runs, in this order by default):
- **cli**: `python -m zerase_core erase --base FILE --concept star ...`, i.e. `zerase_core.cli.main(argv)` called
  from a tiny wrapper that only adds the markers: the core's own loader (`load_dit`, bf16 as stored), the nano text
  encoder, `EraseTrainer`, bf16 compute.
- **comfyui**: ComfyUI imported as its server does (`--cpu --bf16-unet`, the built-in extra nodes), the pack loaded
  by ComfyUI's custom-node loader from a symlink, one prompt run by ComfyUI's own `execution.PromptExecutor` (under
  its `torch.inference_mode()`, like the server): `UNETLoader` (stock; weight_dtype default) + `LoadSingleStreamDiT`
  (nano; only its CLIP, the nano text encoder, is used) -> `ZEraseTrain`. `--bf16-unet` keeps the file's bf16
  weights; on a CPU, ComfyUI *samples* in fp32 (`unet_manual_cast` -> float32), while ZEraseTrain trains the
  NextDiT in the weights' bf16 (nodes/comfy_bridge/graph_training.py, `training_dtype`).
- **comfyui-loader**: the same, but the pack's `LoadSingleStreamDiT` loads the file (ComfyUI's detection and dtype
  policy, the mmapped tensors assigned as the weights: nodes/comfy_bridge/loaders.py, `load_zimage_file`) instead of
  the stock UNETLoader, which copies them into new parameters.
- **comfyui-bf16-compute** (only when asked): `comfyui` with `comfy.model_management.unet_manual_cast` returning None
  for bf16 weights, i.e. what ComfyUI does on a bf16-capable GPU: bf16 weights and bf16 compute everywhere.
- **comfyui-cpu-default** (only when asked): no `--bf16-unet`; ComfyUI's CPU default stores the bf16 file as fp32.

Same run everywhere: the file is written with a caption width of 128 (the nano text encoder's), so the same text
encoder and conditioner (NanoConditioner) serve both; the node gets exactly the CLI's 96 erase prompts and 96
anchors (`zerase_core.nano.erasure_runs.prompt_set(["star"], None, seed)`) as its `concepts`/`anchors` lines and
`star` as the keyword; every EraseConfig value is given explicitly on both sides (checked afterwards: the
`training.config` stored in the erasure files must be equal); 64² (the CLI's only size: latent 8×8), batch 4, rank 8
on q+k, seed 0, 1 torch thread. What differs by construction: the network that runs (ComfyUI's NextDiT vs the core's
ZImageDiT, same weights), ComfyUI's imports and executor, and the CLI's loading of the small nano world (codec,
evaluator), which the node path replaces by LoadSingleStreamDiT's nano model.

    COMFYUI_PATH=/path/to/ComfyUI nice -n 19 /path/to/comfyui-venv/bin/python scripts/comfy_memory_check.py \
        [--layers 4] [--steps 2] [--trace-saved] [--json memory.json]

The random model (1.44B parameters, 2.69 GiB in bf16 at 4 layers) is written once to --workdir and reused.
--trace-saved lists, per training step, the tensors autograd saves for the backward (by dtype and shape; weights
saved as themselves are counted apart from weight-shaped copies). Each ComfyUI run is judged on both peaks against the
CLI's (limit 1.15×); exit status 1 when a ComfyUI run's process peak is above 1.15× the CLI's. Measured numbers and
where the extra memory goes: docs/comfyui.md.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

from comfy_memory_child import (  # beside this script
    CONCEPT,
    GIB,
    REPO,
    RUNS,
    SETTINGS,
    cli_argv,
    status,
)

CHILD = Path(__file__).resolve().parent / "comfy_memory_child.py"
LIMIT = 1.15
NANO_WIDTH = 128            # the nano text encoder's feature width (NANO_CONFIG.cap_feat_dim)
RESOLUTION = 64             # `zerase_core erase` trains at the EraseConfig default latent 8×8
DEFAULT_RUNS = "cli,comfyui,comfyui-loader"


def parse(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--comfyui", type=Path, default=os.environ.get("COMFYUI_PATH"),
                        help="ComfyUI source tree (default: $COMFYUI_PATH)")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/zerase-memory-check"),
                        help="model file, custom_nodes symlink, erasure files, logs (kept between runs)")
    parser.add_argument("--model", type=Path, help="a dim-3840 Z-Image file with caption width 128 (default: "
                                                    "written by make_random_zimage.py into --workdir)")
    parser.add_argument("--layers", type=int, default=4, help="joint layers of the random model")
    parser.add_argument("--steps", type=int, default=2, help="training steps")
    parser.add_argument("--pool-prompts", type=int, default=1, help="x_t trajectories (CLI --pool-prompts)")
    parser.add_argument("--sample-steps", type=int, default=2, help="sampler steps of the trajectories")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--runs", default=DEFAULT_RUNS, help=f"comma-separated, from {','.join(RUNS)}")
    parser.add_argument("--trace-saved", action="store_true",
                        help="diagnosis: report the tensors autograd saves for the backward in each training step")
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args(argv)
    args.runs = [run.strip() for run in args.runs.split(",") if run.strip()]
    unknown = sorted(set(args.runs) - set(RUNS))
    if unknown:
        parser.error(f"--runs: unknown {unknown}; choose from {RUNS}")
    return args


def child_env() -> dict:
    env = dict(os.environ)
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONUNBUFFERED="1", TOKENIZERS_PARALLELISM="false")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return env


def measured_run(command: list[str], label: str, log: Path) -> dict:
    """Run `command`, sample its memory every 50 ms; the child's own markers give the peaks."""
    started = time.monotonic()
    with open(log, "w") as output:
        process = subprocess.Popen(command, cwd=REPO, env=child_env(), stdout=output, stderr=subprocess.STDOUT)
        samples: list[tuple[float, dict]] = []
        done = threading.Event()

        def sample() -> None:
            while not done.is_set():
                fields = status(process.pid)
                if "VmRSS" in fields:
                    samples.append((time.monotonic() - started, fields))
                done.wait(0.05)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        _, wait_status, usage = os.wait4(process.pid, 0)
        code = os.waitstatus_to_exitcode(wait_status)
        done.set()
        sampler.join()
    seconds = time.monotonic() - started
    if code != 0:
        tail = log.read_text(errors="replace").splitlines()[-30:]
        raise SystemExit(f"{label} failed with status {code} (log {log}):\n" + "\n".join(tail))
    markers = _tagged(log, "ZERASE-MEMORY")
    reset = next((marker for marker in markers if marker.get("reset")), None)
    if reset is None:
        raise SystemExit(f"{label}: no training-phase marker in {log}")
    final = markers[-1]
    peak_at, peak = max(samples, key=lambda item: item[1]["VmRSS"]) if samples else (None, {})
    return {
        "label": label, "seconds": round(seconds, 1),
        "process_peak_kb": max([usage.ru_maxrss] + [marker["VmHWM"] for marker in markers]),
        "train_peak_kb": final["VmHWM"],
        "before_train_kb": reset["VmRSS"],
        "sampled_peak": {"at_s": round(peak_at, 1) if peak_at is not None else None, **peak},
        "markers": markers, "saved_for_backward": _tagged(log, "ZERASE-SAVED"), "log": str(log),
        "timeline": [(round(t, 1), fields["VmRSS"]) for t, fields in samples[::20]],
    }


def _tagged(log: Path, tag: str) -> list[dict]:
    """The JSON records printed after `tag` (mid-line too: tqdm's progress bar writes without a newline)."""
    return [json.loads(line.split(tag + " ", 1)[1]) for line in log.read_text(errors="replace").splitlines()
            if tag + " " in line]


def ensure_model(args) -> Path:
    path = args.model or args.workdir / "diffusion_models" / f"zimage-random-{args.layers}l-cap{NANO_WIDTH}.safetensors"
    if path.is_file():
        return path
    if args.model is not None:
        raise SystemExit(f"--model {path} does not exist")
    path.parent.mkdir(parents=True, exist_ok=True)
    print(f"writing the random model {path} ...", flush=True)
    subprocess.run([sys.executable, str(REPO / "scripts" / "make_random_zimage.py"), "--out", str(path),
                    "--layers", str(args.layers), "--cap-feat-dim", str(NANO_WIDTH), "--dtype", "bf16",
                    "--seed", str(args.seed)], cwd=REPO, env=child_env(), check=True)
    return path


def stored_settings(path: Path) -> dict:
    sys.path.insert(0, str(REPO))
    from zerase_core.formats.erasure_file import read_erasure
    info, _, _ = read_erasure(path)
    return {"config": info.training.get("config"), "anchors": info.training.get("anchors"),
            "keywords": list(info.keywords), "base_fingerprint": info.base_fingerprint, "steps": info.steps_done}


def main(argv=None) -> int:
    args = parse(argv)
    if args.comfyui is None or not (Path(args.comfyui).expanduser() / "comfy" / "model_management.py").is_file():
        raise SystemExit("point --comfyui or COMFYUI_PATH at a ComfyUI source tree (and run with ComfyUI's python)")
    args.workdir.mkdir(parents=True, exist_ok=True)
    model = ensure_model(args)
    sys.path.insert(0, str(REPO))
    from zerase_core.nano.erasure_runs import prompt_set
    prompts = prompt_set([CONCEPT], None, args.seed)
    outputs = {label: str(args.workdir / "zerase" / f"memcheck-{label}.safetensors") for label in RUNS}
    spec = {"comfyui": str(Path(args.comfyui).expanduser().resolve()), "workdir": str(args.workdir.resolve()),
            "model": str(model.resolve()), "steps": args.steps, "pool_prompts": args.pool_prompts,
            "sample_steps": args.sample_steps, "seed": args.seed, "erase": list(prompts.erase),
            "anchors": list(prompts.anchors), "keyword": CONCEPT, "resolution": RESOLUTION, "outputs": outputs,
            "trace_saved": args.trace_saved}
    spec_path = args.workdir / "spec.json"
    spec_path.write_text(json.dumps(spec))
    (args.workdir / "zerase").mkdir(exist_ok=True)
    results = {}
    for label in args.runs:
        Path(outputs[label]).unlink(missing_ok=True)
        command = [sys.executable, str(CHILD), label, str(spec_path)]
        print(f"[{label}] running ...", flush=True)
        results[label] = measured_run(command, label, args.workdir / f"{label}.log")
        results[label]["settings"] = stored_settings(Path(outputs[label]))
        print(f"[{label}] process peak {results[label]['process_peak_kb'] / 2**20:.3f} GiB, train peak "
              f"{results[label]['train_peak_kb'] / 2**20:.3f} GiB, {results[label]['seconds']:.0f} s", flush=True)
    report = {"model": spec["model"], "model_gib": model.stat().st_size / GIB, "layers": args.layers,
              "steps": args.steps, "pool_prompts": args.pool_prompts, "sample_steps": args.sample_steps,
              "resolution": RESOLUTION, "cli_equivalent": "python -m zerase_core " + " ".join(cli_argv(spec)),
              "results": results, "limit": LIMIT, "comparisons": {}}
    if "cli" in results:
        cli = results["cli"]
        for label, result in results.items():
            if label == "cli":
                continue
            report["comparisons"][label] = {
                "process_ratio": result["process_peak_kb"] / cli["process_peak_kb"],
                "train_ratio": result["train_peak_kb"] / cli["train_peak_kb"],
                "same_settings": result["settings"] == cli["settings"],
                "differences": {key: (result["settings"][key], cli["settings"][key]) for key in cli["settings"]
                                if result["settings"][key] != cli["settings"][key]},
            }
    print_table(report)
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))
        print(f"wrote {args.json}")
    return 0 if all(c["process_ratio"] <= LIMIT for c in report["comparisons"].values()) else 1


def print_table(report: dict) -> None:
    size = report["model_gib"]
    print(f"\nmodel: {report['model']} ({size:.2f} GiB, {report['layers']} joint layers + 2+2 refiners, dim 3840, "
          f"bf16); {report['steps']} steps at {report['resolution']}², pool {report['pool_prompts']}×"
          f"{report['sample_steps']}, batch {SETTINGS['batch_size']}, rank {SETTINGS['rank']} on q+k")
    print(f"CLI: {report['cli_equivalent']}")
    print(f"{'run':<22} {'process peak':>12} {'train peak':>11} {'RSS before':>11} {'sampled peak: anon':>19} "
          f"{'file':>6} {'seconds':>8}   (GiB)")
    for label, result in report["results"].items():
        sampled = result["sampled_peak"]
        print(f"{label:<22} {result['process_peak_kb'] / 2**20:>12.3f} {result['train_peak_kb'] / 2**20:>11.3f} "
              f"{result['before_train_kb'] / 2**20:>11.3f} {sampled.get('RssAnon', 0) / 2**20:>19.3f} "
              f"{sampled.get('RssFile', 0) / 2**20:>6.3f} {result['seconds']:>8.0f}")
    for label, result in report["results"].items():
        print(f"{label}:")
        for marker in result["markers"]:
            print(f"    {marker['at']:<44} RSS {marker['VmRSS'] / 2**20:6.3f} (anon {marker['RssAnon'] / 2**20:6.3f}, "
                  f"file {marker['RssFile'] / 2**20:6.3f})  high-water {marker['VmHWM'] / 2**20:6.3f}"
                  + ("  [high-water reset]" if marker.get("reset") else "")
                  + (f"  tensors {marker['tensors_gib']}" if marker.get("tensors_gib") else ""))
        for step in result["saved_for_backward"]:
            print(f"    saved for backward, step {step['step']}: {step['total_gib']:.3f} GiB in {step['tensors']} "
                  f"storages; weights saved as themselves {step['weights_gib']:.3f} GiB; weight-shaped copies "
                  f"{step['weight_copies_gib']:.3f} GiB; other by dtype {step['by_dtype']}")
            for shape, gib, count in step["top"]:
                print(f"        {gib:7.3f} GiB  {count:4d} × {shape}")
    for label, comparison in report["comparisons"].items():
        process, train = (("PASS" if comparison[key] <= LIMIT else "FAIL") for key in ("process_ratio", "train_ratio"))
        print(f"{label} / cli: process peak {comparison['process_ratio']:.3f} ({process}), train peak "
              f"{comparison['train_ratio']:.3f} ({train}) (limit {LIMIT}); same stored settings: "
              f"{comparison['same_settings']}" + (f" {comparison['differences']}" if comparison["differences"] else ""))


if __name__ == "__main__":
    sys.exit(main())
