"""`erase-many CONCEPTS.txt --out-dir DIR [erase's model and training options]`: a list of erasures, one process or
many under torchrun (docs/distributed.md).

Each list entry (concept_list.py) runs on rank `index % WORLD_SIZE` and writes DIR/NAME.safetensors atomically,
with a partial checkpoint every `--checkpoint-every` steps. A rerun skips finished files, resumes partial ones and
retries failed entries; an entry that fails is recorded with its error and the others go on. Rank 0 then writes
DIR/summary.json and DIR/summary.txt (a table) and, with `--merge NAME`, DIR/NAME.safetensors: the paper's 1/N merge
of every finished file (merge.py). With `--joint NAME` the whole list is instead one joint erasure (one adapter set
for every concept), trained data-parallel: each step's batch is split across the ranks and DDP all-reduces the
adapters' gradients. Progress: each rank logs its entry, step and the overall count (from the status files in
DIR/erase-many/), and keeps DIR/erase-many/rank-R.json current.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import traceback
from pathlib import Path

from .common.files import atomic_write, atomic_write_json
from .concept_list import ConceptEntry, assign, read_concepts
from .engine.distributed import DataParallel, Launch, broadcast_object, gather_objects, launch, shutdown

STATUS_FOLDER = "erase-many"
# erase options that erase-many replaces by the list (concepts, anchors) and the folder (out, resume)
_LIST_OPTIONS = {"help", "concept", "anchor", "out", "resume", "prompt"}


def add_erase_many_command(commands, erase_parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Register `erase-many` with every option of `erase` except those the list and the folder replace."""
    from . import concept_list

    many = commands.add_parser(
        "erase-many",
        help="erase every concept of a list (one process, or many under torchrun)",
        description=(__doc__ or "") + "\nConcept list syntax:" + (concept_list.__doc__ or "").split(":", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    many.add_argument("concepts", type=Path, help="the concept list (one concept a line)")
    many.add_argument("--out-dir", type=Path, required=True, help="folder of the erasure files and the summary")
    many.add_argument(
        "--merge", metavar="NAME", help="also write NAME.safetensors: the 1/N merge of the finished files"
    )
    many.add_argument(
        "--joint",
        metavar="NAME",
        help="one joint erasure of every concept in the list, data-parallel across the ranks, "
        "written to NAME.safetensors",
    )
    many.add_argument(
        "--checkpoint-every",
        type=int,
        default=25,
        metavar="STEPS",
        help="save a partial file every STEPS steps, so a killed run resumes from it (0: only on errors)",
    )
    many.add_argument(
        "--progress-every",
        type=float,
        default=10.0,
        metavar="SECONDS",
        help="seconds between progress lines of each rank",
    )
    for action in erase_parser._actions:  # the same Action objects: erase's options, defaults and checks
        if action.dest not in _LIST_OPTIONS:
            many._add_action(action)
    many.set_defaults(run=command_erase_many)
    return many


# ---------------------------------------------------------------- status files


def _status_folder(out_dir: Path) -> Path:
    return out_dir / STATUS_FOLDER


def _write_status(out_dir: Path, record: dict) -> None:
    atomic_write_json(record, _status_folder(out_dir) / f"{record['name']}.json")


def _overall(out_dir: Path, entries: list[ConceptEntry]) -> tuple[int, int]:
    """(finished, failed) over the whole list, from the status files every rank writes."""
    finished = failed = 0
    for entry in entries:
        path = _status_folder(out_dir) / f"{entry.name}.json"
        try:
            status = json.loads(path.read_text())["status"]
        except (OSError, ValueError, KeyError):
            continue
        finished += status in ("done", "resumed", "skipped")
        failed += status == "failed"
    return finished, failed


class Progress:
    """One rank's progress lines (stderr) and its DIR/erase-many/rank-R.json."""

    def __init__(self, place: Launch, out_dir: Path, entries: list[ConceptEntry], mine: list, every: float):
        self.place, self.out_dir, self.entries, self.mine, self.every = place, out_dir, entries, mine, every
        self.last = 0.0
        self.state = {
            "rank": place.rank,
            "pid": os.getpid(),
            "world": place.world,
            "assigned": [entry.name for entry in mine],
            "finished": 0,
            "failed": 0,
            "current": None,
            "step": 0,
            "steps": 0,
        }

    def _write(self) -> None:
        atomic_write_json(
            {**self.state, "time": time.time()}, _status_folder(self.out_dir) / f"rank-{self.place.rank}.json"
        )

    def line(self, text: str) -> None:
        print(f"[{self.place.label()}] {text}", file=sys.stderr, flush=True)

    def start(self, index: int, entry: ConceptEntry) -> None:
        self.state.update(current=entry.name, step=0, steps=0)
        self._write()
        self.line(f"{entry.name} ({index + 1}/{len(self.mine)} on this rank): {' + '.join(entry.concepts)}")

    def step(self, name: str, step: int, total: int, metrics: dict) -> None:
        self.state.update(step=step, steps=total)
        now = time.monotonic()
        if now - self.last >= self.every or step == total:
            self.last = now
            self._write()
            self.line(
                f"{name}: step {step}/{total}  L_er {metrics.get('loss_erase', 0):.4f}  "
                f"L_pr {metrics.get('loss_preserve', 0):.4f}  λ {metrics.get('lambda', 0):.3f}"
            )

    def finish(self, record: dict) -> None:
        key = "failed" if record["status"] == "failed" else "finished"
        self.state[key] += 1
        self.state.update(current=None)
        self._write()
        finished, failed = _overall(self.out_dir, self.entries)
        detail = f": {record['error']}" if record["status"] == "failed" else f" ({record['seconds']:.1f} s)"
        self.line(
            f"{record['name']} {record['status']}{detail}; this rank {self.state['finished'] + self.state['failed']}"
            f"/{len(self.mine)}; overall {finished + failed}/{len(self.entries)} ({failed} failed)"
        )


# ---------------------------------------------------------------- one entry


def _entry_config(config, entry: ConceptEntry):
    if config is None or entry.kind is None:
        return config
    return config.with_kind(entry.kind)


def _existing(out: Path, concepts) -> tuple[str, object]:
    """("new" | "finished" | "partial", info) for the file at `out`."""
    from .formats.erasure_file import ErasureFileError, read_erasure

    if not out.exists():
        return "new", None
    info, _, _ = read_erasure(out)
    if tuple(info.concepts) != tuple(concepts):
        raise ErasureFileError(
            f"{out} holds an erasure of {list(info.concepts)}, not {list(concepts)}; move it away "
            f"or give the entry another `| name=...`"
        )
    return ("partial" if info.partial else "finished"), info


def _record(entry: ConceptEntry, place: Launch, out: Path, status: str, seconds: float, info=None, error=None) -> dict:
    record = {
        "name": entry.name,
        "concepts": list(entry.concepts),
        "status": status,
        "rank": place.rank,
        "file": out.name,
        "seconds": round(seconds, 3),
        "error": error,
    }
    if info is not None:
        summary = info.summary
        record.update(
            method=info.method,
            steps_done=info.steps_done,
            steps_total=info.steps_total,
            recommended_strength=info.recommended_strength,
            loss_erase=summary.get("loss_erase"),
            loss_preserve=summary.get("loss_preserve"),
            **{"lambda": summary.get("lambda")},
        )
    return record


def run_entry(
    world, entry: ConceptEntry, config, args, out_dir: Path, place: Launch, progress: Progress | None, parallel=None
) -> dict:
    """Erase one list entry (or, with `parallel`, the joint entry on every rank); never raises for the entry's own
    errors (they are returned as a failed record); KeyboardInterrupt does raise (its partial file is saved)."""
    from .formats.erasure_file import read_erasure
    from .nano.erasure_runs import erase, erase_uce

    out = out_dir / f"{entry.name}.safetensors"
    started = time.monotonic()
    try:
        state, info = None, None
        if place.is_main or parallel is None:
            try:
                state, info = _existing(out, entry.concepts)
            except (ValueError, OSError) as error:
                state = f"error: {error}"
        if parallel is not None:
            state = broadcast_object(place, state)  # every rank of the joint run resumes or fails alike
        if state.startswith("error: "):
            raise ValueError(state[len("error: ") :])
        if state == "finished":
            return _record(entry, place, out, "skipped", 0.0, info)
        anchors = list(entry.anchors) or None
        from .real.run import ModelSource, erase_real_entry

        if isinstance(world, ModelSource):  # a real model (--model / --dit): where its parts are
            erase_real_entry(
                world,
                entry.concepts,
                anchors,
                _entry_config(config, entry),
                args,
                out,
                state == "partial",
                progress,
                entry.name,
                parallel,
            )
        elif config is None:
            erase_uce(world, list(entry.concepts), out, anchors, args.seed, not args.no_strength_search)
        else:
            on_step = None
            if progress is not None:
                on_step = lambda step, total, metrics: progress.step(entry.name, step, total, metrics)  # noqa: E731
            erase(
                world,
                list(entry.concepts),
                _entry_config(config, entry),
                out,
                anchors,
                out if state == "partial" else None,
                on_step,
                choose_strength=not args.no_strength_search,
                parallel=parallel,
                checkpoint_every=args.checkpoint_every,
            )
        info = read_erasure(out)[0] if place.is_main or parallel is None else None
        return _record(entry, place, out, "resumed" if state == "partial" else "done", time.monotonic() - started, info)
    except KeyboardInterrupt:
        raise
    except Exception as error:  # the entry fails; the list goes on
        detail = f"{type(error).__name__}: {error}"
        if not isinstance(error, ValueError):
            detail += " | " + traceback.format_exc(limit=3).strip().splitlines()[-2].strip()
        return _record(entry, place, out, "failed", time.monotonic() - started, error=detail)


# ---------------------------------------------------------------- summary


_COLUMNS = (
    ("name", "name"),
    ("concepts", "concepts"),
    ("status", "status"),
    ("rank", "rank"),
    ("steps", "steps"),
    ("strength", "recommended_strength"),
    ("L_er", "loss_erase"),
    ("λ", "lambda"),
    ("s", "seconds"),
    ("error", "error"),
)


def _cell(record: dict, key: str) -> str:
    if key == "concepts":
        return " + ".join(record["concepts"])
    if key == "steps":
        return f"{record['steps_done']}/{record['steps_total']}" if "steps_done" in record else "-"
    value = record.get(key)
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    text = str(value)
    return text if len(text) <= 60 else text[:57] + "..."  # the whole error is in summary.json


def summary_table(records: list[dict]) -> str:
    rows = [[title for title, _ in _COLUMNS]] + [[_cell(record, key) for _, key in _COLUMNS] for record in records]
    widths = [max(len(row[column]) for row in rows) for column in range(len(_COLUMNS))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(lines) + "\n"


def write_summary(out_dir: Path, records: list[dict], world: int, seconds: float, merged: dict | None) -> dict:
    counts = {
        status: sum(record["status"] == status for record in records)
        for status in ("done", "resumed", "skipped", "failed")
    }
    trained = [record for record in records if record["status"] in ("done", "resumed")]
    summary = {
        "world_size": world,
        "seconds": round(seconds, 3),
        "counts": counts,
        "entries": records,
        "merged": merged,
        "concepts_per_hour": round(len(trained) * 3600 / seconds, 3) if trained and seconds > 0 else None,
    }
    atomic_write_json(summary, out_dir / "summary.json")
    text = summary_table(records)
    text += (
        f"\n{len(records)} entries on {world} process(es): {counts['done']} done, {counts['resumed']} resumed, "
        f"{counts['skipped']} skipped (already finished), {counts['failed']} failed; {seconds:.1f} s"
    )
    if merged is not None:
        text += f"\nmerged: {merged.get('file') or '-'} ({merged.get('error') or ', '.join(merged.get('names', []))})"

    def write(temporary):
        Path(temporary).write_text(text + "\n", encoding="utf-8")

    atomic_write(out_dir / "summary.txt", write)
    return summary


def _merge(out_dir: Path, name: str, records: list[dict]) -> dict:
    from .formats.merge import merge_files

    finished = [record for record in records if record["status"] in ("done", "resumed", "skipped")]
    names = [record["name"] for record in finished]
    try:
        path = merge_files([out_dir / record["file"] for record in finished], out_dir / f"{name}.safetensors")
        return {"file": path.name, "names": names, "error": None}
    except (ValueError, OSError) as error:
        return {"file": None, "names": names, "error": str(error)}


# ---------------------------------------------------------------- the command


def _check_names(args, entries: list[ConceptEntry]) -> None:
    from .concept_list import ConceptListError, parse_line

    for option in ("merge", "joint"):
        value = getattr(args, option)
        if value is None:
            continue
        checked = parse_line(f"x | name={value}", 0, f"--{option}")
        if checked.name in {entry.name for entry in entries} and option == "merge":
            raise ConceptListError(f"--merge {value} is also the name of a list entry; choose another name")
    if args.merge and args.joint:
        raise ConceptListError("--merge and --joint exclude each other (a joint erasure is already one file)")
    if args.checkpoint_every < 0:
        raise ConceptListError(f"--checkpoint-every {args.checkpoint_every} must be ≥ 0")


def command_erase_many(args) -> None:
    from .cli import UsageError, _load_world, erase_config_from_args

    entries = read_concepts(args.concepts)
    _check_names(args, entries)
    out_dir = args.out_dir
    if out_dir.exists() and not out_dir.is_dir():
        raise UsageError(f"--out-dir {out_dir} exists and is not a folder")
    _status_folder(out_dir).mkdir(parents=True, exist_ok=True)
    config = erase_config_from_args(args)
    place = launch()
    started = time.monotonic()
    try:
        from .real.run import real_source

        world = real_source(args) or _load_world(args)
        if args.joint:
            records = _run_joint(world, entries, config, args, out_dir, place)
        else:
            records = _run_each(world, entries, config, args, out_dir, place)
        if place.is_main:
            merged = _merge(out_dir, args.merge, records) if args.merge else None
            summary = write_summary(out_dir, records, place.world, time.monotonic() - started, merged)
            print((out_dir / "summary.txt").read_text(), end="")
            print(f"wrote {out_dir / 'summary.json'}")
            if summary["counts"]["failed"]:
                raise SystemExit(1)
    finally:
        shutdown(place)


def _run_each(world, entries, config, args, out_dir: Path, place: Launch) -> list[dict]:
    mine = assign(entries, place.rank, place.world)
    progress = Progress(place, out_dir, entries, mine, args.progress_every)
    records = []
    for index, entry in enumerate(mine):
        progress.start(index, entry)
        record = run_entry(world, entry, config, args, out_dir, place, progress)
        _write_status(out_dir, record)
        progress.finish(record)
        records.append(record)
    gathered = gather_objects(place, records)
    if not place.is_main:
        return []
    by_name = {record["name"]: record for part in gathered for record in part}
    return [by_name[entry.name] for entry in entries]


def _run_joint(world, entries, config, args, out_dir: Path, place: Launch) -> list[dict]:
    if config is None:
        raise ValueError(
            "--joint trains one adapter set; uce-text is a closed-form edit (use erase-many without "
            "--joint, or erase --method uce-text with several --concept)"
        )
    concepts = tuple(concept for entry in entries for concept in entry.concepts)
    if len(set(concepts)) != len(concepts):
        raise ValueError(f"--joint: the list names a concept twice ({list(concepts)})")
    anchors = tuple(anchor for entry in entries for anchor in entry.anchors)
    kinds = {entry.kind for entry in entries if entry.kind is not None}
    if len(kinds) > 1:
        raise ValueError(f"--joint: one joint erasure has one kind; the list gives {sorted(kinds)}")
    joint = ConceptEntry(concepts, args.joint, anchors, kinds.pop() if kinds else None, 0)
    progress = Progress(place, out_dir, [joint], [joint], args.progress_every)
    progress.start(0, joint)
    parallel = DataParallel(place) if place.world > 1 else None
    record = run_entry(world, joint, config, args, out_dir, place, progress if place.is_main else None, parallel)
    if place.is_main:
        _write_status(out_dir, record)
        progress.finish(record)
    gathered = gather_objects(place, record)
    if not place.is_main:
        return []
    failed = [part for part in gathered if part["status"] == "failed"]
    return [failed[0] if failed else record]
