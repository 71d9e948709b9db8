"""Measure the engine's acceptance numbers on the nano world (issue: erasure engine).

For each concept word: `erase` wall time (via the CLI, as a user runs it), then Acc_e / Acc_ir on the evaluation
sets at the recommended strength and at strength 1.0, against the base model. Optionally a naive-esd run with the
same budget, and two erasures combined. Prints markdown tables and writes JSON.

    python scripts/erase_acceptance.py --words star red --repeats 3 --naive --combine star,red --json runs/acceptance.json
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

from zerase_core.common.files import atomic_write_json
from zerase_core.nano.erasure_runs import attach_file
from zerase_core.nano.prompts import attribute_of, evaluation_sets
from zerase_core.nano.scoring import EVALUATION_SEED, _score, score
from zerase_core.nano.vocab import COLOURS, SHAPES
from zerase_core.nano.world import NanoWorld


def run_erase(words: list[str], out: Path, method: str, seed: int, threads: int, extra: tuple[str, ...] = ()) -> float:
    started = time.monotonic()
    concepts = [argument for word in words for argument in ("--concept", word)]
    subprocess.run([sys.executable, "-m", "zerase_core", "erase", *concepts, "--method", method,
                    "--seed", str(seed), "--out", str(out), *extra], check=True, stdout=subprocess.DEVNULL,
                   env={**os.environ, "OMP_NUM_THREADS": str(threads)})
    return time.monotonic() - started


def scored(world, concept, path=None, strength=None, concepts_for_keep=None):
    if path is None:
        return score(world, concept)
    edit, info = attach_file(world, path, strength)
    try:
        return score(world, concept), info
    finally:
        edit.detach()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--words", nargs="*", default=[*SHAPES, *COLOURS])
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--naive", action="store_true")
    parser.add_argument("--combine", help="two words, comma-separated")
    parser.add_argument("--folder", type=Path, default=Path("runs/acceptance"))
    parser.add_argument("--json", type=Path, default=Path("runs/acceptance.json"))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--shuffle-bank", type=int, help="passed to `erase` (word orders encoded before training)")
    args = parser.parse_args()
    extra = ("--shuffle-bank", str(args.shuffle_bank)) if args.shuffle_bank is not None else ()
    torch.set_num_threads(args.threads)
    args.folder.mkdir(parents=True, exist_ok=True)
    world = NanoWorld.load()
    results = json.loads(args.json.read_text()) if args.json.exists() else {}
    methods = ["zerase"] + (["naive-esd"] if args.naive else [])
    print("| method | word | erase s (median) | base Acc_e | Acc_e @rec | rec strength | Acc_ir/base @rec | Acc_e @1.0 | Acc_ir/base @1.0 |")
    print("|---|---|---|---|---|---|---|---|---|")
    for method in methods:
        for word in args.words:
            key = f"{method}:{word}"
            if key not in results:
                path = args.folder / f"{method}-{word}.safetensors"
                repeats = args.repeats if method == "zerase" else 1      # naive-esd: the damage, not its timing
                times = [run_erase([word], path, method, 0, args.threads, extra) for _ in range(repeats)]
                base = score(world, word)
                at_rec, info = scored(world, word, path)
                at_one = at_rec if info.recommended_strength == 1.0 else scored(world, word, path, 1.0)[0]
                results[key] = {"seconds": times, "base": base.__dict__, "recommended": at_rec.__dict__,
                                "strength": info.recommended_strength, "strength_1": at_one.__dict__}
                atomic_write_json(results, args.json)
            row = results[key]
            print(f"| {method} | {word} | {statistics.median(row['seconds']):.0f} | {row['base']['acc_e']:.2f} | "
                  f"{row['recommended']['acc_e']:.2f} | {row['strength']:.2f} | "
                  f"{row['recommended']['acc_ir'] / row['base']['acc_ir']:.3f} | {row['strength_1']['acc_e']:.2f} | "
                  f"{row['strength_1']['acc_ir'] / row['base']['acc_ir']:.3f} |", flush=True)
    if args.combine:
        first, second = args.combine.split(",")

        def unrelated(word, other):
            # keep prompts of `word` that do not contain the other erased value either
            erase_items, keep_items = evaluation_sets(word)
            attribute, value = attribute_of(other)
            return erase_items, [item for item in keep_items if item[1][attribute] != value]
        pairs = {first: unrelated(first, second), second: unrelated(second, first)}
        base_key = f"combined-base:{first}+{second}"
        if base_key not in results:
            results[base_key] = {w: _score(world, w, *pairs[w], EVALUATION_SEED).__dict__ for w in pairs}
            atomic_write_json(results, args.json)
        joint_path = args.folder / f"zerase-{first}+{second}.safetensors"
        if not joint_path.exists():
            results[f"joint-seconds:{first}+{second}"] = run_erase([first, second], joint_path, "zerase", 0, args.threads, extra)
        # joint: one file trained on both; stacked 1/N: the paper's merge of two files; stacked 1: each file at its
        # own recommended strength
        for variant in ("joint", "stacked 1/N", "stacked 1"):
            key = f"combined {variant}:{first}+{second}"
            if key not in results:
                edits = []
                paths = [joint_path] if variant == "joint" else [args.folder / f"zerase-{w}.safetensors" for w in (first, second)]
                for path in paths:
                    edit, info = attach_file(world, path)
                    if variant == "stacked 1/N":
                        edit.set_strength(info.recommended_strength / len(paths))
                    edits.append(edit)
                try:
                    results[key] = {w: _score(world, w, *pairs[w], EVALUATION_SEED).__dict__ for w in pairs}
                finally:
                    for edit in reversed(edits):
                        edit.detach()
                atomic_write_json(results, args.json)
            row, base = results[key], results[base_key]
            print(f"\ncombined {first}+{second}, {variant}:")
            for word in (first, second):
                print(f"- {word}: Acc_e {row[word]['acc_e']:.2f} (base {base[word]['acc_e']:.2f}), "
                      f"Acc_ir/base {row[word]['acc_ir'] / base[word]['acc_ir']:.3f}")

if __name__ == "__main__":
    main()
