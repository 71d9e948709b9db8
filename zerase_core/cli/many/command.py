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
import time
from pathlib import Path

from ...concept_list import ConceptEntry, assign, read_concepts
from ...engine.distributed import DataParallel, Launch, gather_objects, launch, shutdown
from .entry import run_entry
from .status import Progress, status_folder, write_status
from .summary import merge, write_summary

# erase options that erase-many replaces by the list (concepts, anchors) and the folder (out, resume)
_LIST_OPTIONS = {"help", "concept", "anchor", "out", "resume", "prompt"}


def add_erase_many_command(commands, erase_parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Register `erase-many` with every option of `erase` except those the list and the folder replace."""
    from ... import concept_list

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


def _check_names(args, entries: list[ConceptEntry]) -> None:
    from ...concept_list import ConceptListError, parse_line

    for option in ("merge", "joint"):
        value = getattr(args, option)
        if value is None:
            continue
        checked = parse_line(f"x | name={value}", 0, f"--{option}")  # checks the name; None only for blank lines
        if checked is not None and checked.name in {entry.name for entry in entries} and option == "merge":
            raise ConceptListError(f"--merge {value} is also the name of a list entry; choose another name")
    if args.merge and args.joint:
        raise ConceptListError("--merge and --joint exclude each other (a joint erasure is already one file)")
    if args.checkpoint_every < 0:
        raise ConceptListError(f"--checkpoint-every {args.checkpoint_every} must be ≥ 0")


def command_erase_many(args) -> None:
    from ..erase import erase_config_from_args
    from ..shared import UsageError, load_world

    entries = read_concepts(args.concepts)
    _check_names(args, entries)
    out_dir = args.out_dir
    if out_dir.exists() and not out_dir.is_dir():
        raise UsageError(f"--out-dir {out_dir} exists and is not a folder")
    status_folder(out_dir).mkdir(parents=True, exist_ok=True)
    config = erase_config_from_args(args)
    place = launch()
    started = time.monotonic()
    try:
        from ...real.run import real_source

        world = real_source(args) or load_world(args)
        if args.joint:
            records = _run_joint(world, entries, config, args, out_dir, place)
        else:
            records = _run_each(world, entries, config, args, out_dir, place)
        if place.is_main:
            merged = merge(out_dir, args.merge, records) if args.merge else None
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
        write_status(out_dir, record)
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
        write_status(out_dir, record)
        progress.finish(record)
    gathered = gather_objects(place, record)
    if not place.is_main:
        return []
    failed = [part for part in gathered if part["status"] == "failed"]
    return [failed[0] if failed else record]
