"""erase-many's summary (DIR/summary.json and the table in DIR/summary.txt) and the optional 1/N merge."""

from __future__ import annotations

from pathlib import Path

from ...common.files import atomic_write, atomic_write_json

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


def merge(out_dir: Path, name: str, records: list[dict]) -> dict:
    from ...formats.merge import merge_files

    finished = [record for record in records if record["status"] in ("done", "resumed", "skipped")]
    names = [record["name"] for record in finished]
    try:
        path = merge_files([out_dir / record["file"] for record in finished], out_dir / f"{name}.safetensors")
        return {"file": path.name, "names": names, "error": None}
    except (ValueError, OSError) as error:
        return {"file": None, "names": names, "error": str(error)}
