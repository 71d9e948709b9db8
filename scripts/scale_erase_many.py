"""Concepts per hour of `erase-many` against the number of processes on this machine, measured, with the ideal.

Runs the same concept list once per N in --processes (N = 1 as a plain process, N > 1 under `torchrun
--nproc-per-node N`), each process with --threads torch threads, into a fresh folder each time, and prints a table:
wall seconds, concepts per hour, speed-up over N = 1 and the ideal (N × the N = 1 rate). Every run must finish every
concept (the summary's counts are checked), so a failed rank cannot pass for a fast one.

    python scripts/scale_erase_many.py --concepts star red dotted square --processes 1 2 --steps 40

Extra arguments after `--` go to erase-many (e.g. `-- --no-strength-search`). Give the machine to it alone: other
jobs on the same cores make every number meaningless.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def run_once(processes: int, threads: int, concepts: list[str], steps: int, extra: list[str], work: Path) -> dict:
    out_dir = work / f"n{processes}"
    shutil.rmtree(out_dir, ignore_errors=True)
    concept_list = work / "concepts.txt"
    concept_list.write_text("\n".join(concepts) + "\n")
    erase_many = ["-m", "zerase_core", "erase-many", str(concept_list), "--out-dir", str(out_dir),
                  "--steps", str(steps), "--progress-every", "60", *extra]
    if processes == 1:
        command = [sys.executable, *erase_many]
    else:
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={processes}",
                   *erase_many]
    environment = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    started = time.monotonic()
    completed = subprocess.run(command, env=environment, capture_output=True, text=True)
    seconds = time.monotonic() - started
    if completed.returncode != 0:
        raise SystemExit(f"N={processes} failed (exit {completed.returncode}):\n{completed.stdout[-3000:]}\n"
                         f"{completed.stderr[-3000:]}")
    summary = json.loads((out_dir / "summary.json").read_text())
    if summary["counts"]["done"] != len(concepts):   # a fresh folder: every concept trained, none failed or skipped
        raise SystemExit(f"N={processes}: summary counts {summary['counts']} for {len(concepts)} concepts")
    return {"processes": processes, "threads": threads, "seconds": seconds,
            "concepts_per_hour": len(concepts) * 3600.0 / seconds}


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    extra = argv[argv.index("--") + 1:] if "--" in argv else []
    ours = argv[:argv.index("--")] if "--" in argv else argv
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--concepts", nargs="+", default=["star", "red", "dotted", "square"])
    parser.add_argument("--processes", nargs="+", type=int, default=[1, 2])
    parser.add_argument("--threads", type=int, default=1, help="torch threads per process")
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--json", type=Path, help="also write the table as JSON here")
    args = parser.parse_args(ours)
    with tempfile.TemporaryDirectory(prefix="zerase-scale-") as temporary:
        rows = [run_once(n, args.threads, args.concepts, args.steps, extra, Path(temporary)) for n in args.processes]
    base = next((row for row in rows if row["processes"] == 1), None)
    print(f"{len(args.concepts)} concepts ({', '.join(args.concepts)}), {args.steps} steps, "
          f"{args.threads} thread(s) per process, extra: {' '.join(extra) or '-'}")
    print("| processes | wall s | concepts / hour | speed-up | ideal concepts / hour |")
    print("|---|---|---|---|---|")
    for row in rows:
        speedup = row["concepts_per_hour"] / base["concepts_per_hour"] if base else float("nan")
        ideal = base["concepts_per_hour"] * row["processes"] if base else float("nan")
        row.update(speedup=speedup, ideal_concepts_per_hour=ideal)
        print(f"| {row['processes']} | {row['seconds']:.1f} | {row['concepts_per_hour']:.1f} | {speedup:.2f}× | "
              f"{ideal:.1f} |")
    if args.json:
        args.json.write_text(json.dumps({"concepts": args.concepts, "steps": args.steps, "extra": extra,
                                         "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
