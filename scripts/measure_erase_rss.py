"""Peak RSS of `python -m zerase_core erase` on a real Z-Image or Lumina-2 (issue 14: ≤ max(DiT, text encoder) + 2 GB).

Runs the CLI as a child process on one thread, samples its /proc/PID/status (VmRSS, RssAnon, RssFile) every 0.2 s
and takes the kernel's own peak (ru_maxrss from wait4) at the end; prints one JSON line and, with --json, writes it.
The model files may be random (scripts/make_random_fullsize.py): memory does not depend on the values.

    python scripts/make_random_fullsize.py --dit /tmp/i14big/dit.safetensors --text-encoder /tmp/i14big/te.safetensors
    python scripts/measure_erase_rss.py --dit /tmp/i14big/dit.safetensors --text-encoder /tmp/i14big/te.safetensors \
        --tokenizer $COMFYUI_PATH/comfy/text_encoders/qwen25_tokenizer --json docs/erase-rss-cpu.json

A Lumina-Image-2.0 DiT and a Gemma-2-2B (make_random_fullsize.py --family lumina2) take a Gemma tokenizer folder
(a diffusers Lumina-Image-2.0 tokenizer/, or for memory alone any tokenizer with Gemma's special tokens).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

GIB = 2 ** 30


def _status(pid: int) -> dict[str, int]:
    values = {}
    try:
        with open(f"/proc/{pid}/status") as handle:
            for line in handle:
                name, _, rest = line.partition(":")
                if name in ("VmRSS", "RssAnon", "RssFile"):
                    values[name] = int(rest.split()[0]) * 1024
    except OSError:
        pass
    return values


def measure(command: list[str], environment: dict[str, str], interval: float = 0.2) -> dict:
    child = subprocess.Popen(command, env=environment, stderr=subprocess.PIPE, text=True)
    peaks = {"VmRSS": 0, "RssAnon": 0, "RssFile": 0}
    timeline: list[tuple[float, int]] = []
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(child.stderr), daemon=True)
    reader.start()
    started = time.monotonic()
    while True:
        waited, status, usage = os.wait4(child.pid, os.WNOHANG)
        if waited:
            break
        current = _status(child.pid)
        for name, value in current.items():
            peaks[name] = max(peaks[name], value)
        if current.get("VmRSS"):
            timeline.append((round(time.monotonic() - started, 1), current["VmRSS"]))
        time.sleep(interval)
    reader.join(timeout=5)
    child.returncode = os.waitstatus_to_exitcode(status)
    return {"returncode": child.returncode, "seconds": round(time.monotonic() - started, 1),
            "peak_rss_gib": round(usage.ru_maxrss * 1024 / GIB, 3),
            "sampled_peak_gib": {name: round(value / GIB, 3) for name, value in peaks.items()},
            "timeline_gib": [(second, round(value / GIB, 2)) for second, value in timeline[::25]],
            "stderr_tail": "".join(lines)[-3000:]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dit", type=Path, required=True)
    parser.add_argument("--text-encoder", type=Path, required=True)
    parser.add_argument("--tokenizer", type=Path, required=True)
    parser.add_argument("--resolution", type=int, default=128)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--json", type=Path, help="also write the result here")
    args = parser.parse_args(argv)
    out = Path(tempfile.mkdtemp(prefix="zerase-rss-")) / "erasure.safetensors"
    command = [sys.executable, "-m", "zerase_core", "erase", "--concept", "Van Gogh", "--prompt",
               "a painting by Van Gogh", "--dit", str(args.dit), "--text-encoder", str(args.text_encoder),
               "--tokenizer", str(args.tokenizer), "--resolution", str(args.resolution), "--steps", str(args.steps),
               "--pool-prompts", "1", "--sample-steps", "1", "--batch-size", "1", "--shuffle-bank", "2",
               "--out", str(out)]
    environment = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    result = measure(command, environment)
    sizes = {"dit_gib": args.dit.stat().st_size / GIB, "text_encoder_gib": args.text_encoder.stat().st_size / GIB}
    target = max(sizes.values()) + 2 * 10 ** 9 / GIB
    result.update({name: round(value, 3) for name, value in sizes.items()})
    result.update(target_gib=round(target, 3), within_target=result["peak_rss_gib"] <= target,
                  command=" ".join(command), resolution=args.resolution, steps=args.steps, threads=1)
    text = json.dumps(result, indent=1)
    print(text)
    if args.json is not None:
        temporary = args.json.with_name(f".{args.json.name}.tmp")
        temporary.write_text(text + "\n")
        os.replace(temporary, args.json)
    return 0 if result["returncode"] == 0 and result["within_target"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
