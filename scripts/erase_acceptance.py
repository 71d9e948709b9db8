"""Measure the engine's acceptance numbers on the nano world (issue: erasure engine).

For each concept word: `erase` wall time (via the CLI, as a user runs it), then Acc_e / Acc_ir on the evaluation
sets at the recommended strength and at strength 1.0, against the base model. Optionally a naive-esd run with the
same budget, and two erasures combined. Prints markdown tables and writes JSON.

    python scripts/erase_acceptance.py --words star red --repeats 3 --naive --combine star,red --json runs/acceptance.json
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

from zerase_core.files import atomic_write_json
from zerase_core.nano.erasure_runs import attach_file
from zerase_core.nano.prompts import attribute_of, evaluation_sets
from zerase_core.nano.scoring import EVALUATION_SEED, _score, score
from zerase_core.nano.world import NanoWorld
from zerase_core.nano.vocab import SHAPES, COLOURS


def run_erase(word: str, out: Path, method: str, seed: int) -> float:
    started = time.monotonic()
    subprocess.run([sys.executable, "-m", "zerase_core", "erase", "--concept", word, "--method", method,
                    "--seed", str(seed), "--out", str(out)], check=True, stdout=subprocess.DEVNULL)
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
    args = parser.parse_args()
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
                times = [run_erase(word, path, method, seed=0) for _ in range(args.repeats)]
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
        key = f"combined:{first}+{second}"
        if key not in results:
            edits = []
            for word in (first, second):
                path = args.folder / f"zerase-{word}.safetensors"
                edit, info = attach_file(world, path)
                edit.set_strength(info.recommended_strength / 2)
                edits.append(edit)
            def unrelated(word, other):
                # keep prompts of `word` that do not contain the other erased value either
                erase_items, keep_items = evaluation_sets(word)
                attribute, value = attribute_of(other)
                return erase_items, [item for item in keep_items if item[1][attribute] != value]
            pairs = {first: unrelated(first, second), second: unrelated(second, first)}
            try:
                combined = {w: _score(world, w, *pairs[w], EVALUATION_SEED).__dict__ for w in pairs}
            finally:
                for edit in reversed(edits):
                    edit.detach()
            results[key] = {"combined": combined,
                            "base": {w: _score(world, w, *pairs[w], EVALUATION_SEED).__dict__ for w in pairs}}
            atomic_write_json(results, args.json)
        row = results[key]
        print(f"\ncombined {first}+{second} (1/N of each recommended strength):")
        for word in (first, second):
            print(f"- {word}: Acc_e {row['combined'][word]['acc_e']:.2f} (base {row['base'][word]['acc_e']:.2f}), "
                  f"Acc_ir/base {row['combined'][word]['acc_ir'] / row['base'][word]['acc_ir']:.3f}")


if __name__ == "__main__":
    main()
