"""One erase-many entry: skip a finished file, resume a partial one, or erase; the record of what happened."""

from __future__ import annotations

import time
import traceback
from pathlib import Path

from ...concept_list import ConceptEntry
from ...engine.distributed import Launch, broadcast_object
from .status import Progress


def _entry_config(config, entry: ConceptEntry):
    if config is None or entry.kind is None:
        return config
    return config.with_kind(entry.kind)


def _existing(out: Path, concepts) -> tuple[str, object]:
    """("new" | "finished" | "partial", info) for the file at `out`."""
    from ...formats.erasure_file import ErasureFileError, read_erasure

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
    from ...formats.erasure_file import read_erasure
    from ...nano.erasure_runs import erase, erase_uce

    out = out_dir / f"{entry.name}.safetensors"
    started = time.monotonic()
    try:
        state, info = "", None  # found on the main rank (or every rank without `parallel`), broadcast to the others
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
        from ...real.run import ModelSource, erase_real_entry

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

                def on_step(step: int, total: int, metrics: dict) -> None:
                    progress.step(entry.name, step, total, metrics)

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
