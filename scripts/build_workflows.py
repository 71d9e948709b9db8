"""Writes workflows/*.json (the editor's format), workflows/api/*.json, the templates' thumbnails and
docs/images/workflow-*.png, all produced by the real frontend from the prompts in workflow_sources.py.

    COMFYUI_PATH=../shared/comfyui "$(bash .ci/comfyui_env.sh)" scripts/build_workflows.py

For each workflow the page builds the graph from the API prompt (`app.loadApiJson`), sets the seeds' "control after
generate" to fixed, lays the nodes out by their computed sizes (left to right by dependency, no overlap), adds the
note, fits the view and serialises the graph (`app.graph.serialize()`). The file is then loaded back
(`app.loadGraphData`) and must queue exactly the source prompt (`app.graphToPrompt`); what it queues is the API copy.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import page_graph  # noqa: E402
from comfy_page import ComfyPage, find_chromium  # noqa: E402
from workflow_sources import NANO_DEMO, REPO, WORKFLOWS, Workflow  # noqa: E402

IMAGES = REPO / "docs" / "images"


def note_height(text: str) -> float:
    """Room for the note's markdown at NOTE_WIDTH (about 75 characters a line, 17 units a line)."""
    lines = sum(max(1, math.ceil(len(line) / 75)) for line in text.splitlines())
    return 70 + 17 * lines


async def build(page: ComfyPage, workflow: Workflow) -> tuple[dict, dict]:
    """(the editor file, the API copy) of one workflow, built in the page."""
    await page_graph.load_api(page, workflow.prompt, workflow.name)
    await page_graph.fix_seeds(page)
    positions, note = page_graph.arrange(workflow.prompt, await page_graph.boxes(page), note_height(workflow.note))
    await page_graph.place(page, positions)
    await page_graph.add_note(page, "ZErase: read me", workflow.note, note)
    await page_graph.fit_view(page)
    ui = await page_graph.serialize(page)
    await page_graph.load_ui(page, ui, workflow.name)
    queued = await page_graph.graph_to_prompt(page)
    problems = page_graph.prompt_differences(queued, workflow.prompt)
    if problems:
        raise RuntimeError(f"{workflow.name}: the built file queues other values: {problems}")
    if await page_graph.note_text(page) != workflow.note:
        raise RuntimeError(f"{workflow.name}: the note's text did not survive serialize + load")
    overlapping = page_graph.overlaps(await page_graph.boxes(page))
    if overlapping:
        raise RuntimeError(f"{workflow.name}: nodes overlap: {overlapping}")
    return ui, queued


async def screenshot(page: ComfyPage, workflow: Workflow, path: Path) -> None:
    await page_graph.load_ui(page, json.loads(workflow.ui_path.read_text()), workflow.name)
    await page_graph.close_dialogs(page)
    await asyncio.sleep(1.5)
    await page_graph.tidy_for_screenshot(page)
    await asyncio.sleep(0.5)
    await page.screenshot(path)


async def result_screenshot(page: ComfyPage, path: Path) -> dict:
    """The nano demo run from the page at its defaults (as a new user presses Run); the page afterwards."""
    await page_graph.load_ui(page, json.loads(NANO_DEMO.ui_path.read_text()), NANO_DEMO.name)
    await page_graph.close_dialogs(page)
    entry = await page_graph.run_queued(page, timeout=page.remaining())
    if entry["status"]["status_str"] != "success":
        raise RuntimeError(f"the nano demo failed from the page: {entry['status']}")
    overlapping = page_graph.overlaps(await page_graph.boxes(page))
    if overlapping:
        raise RuntimeError(f"after the run (images shown), nodes overlap: {overlapping}")
    await page_graph.tidy_for_screenshot(page)
    await page_graph.fit_view(page)
    await asyncio.sleep(1.0)
    await page.screenshot(path)
    return entry


def thumbnail(png: Path, jpg: Path) -> None:
    from PIL import Image
    with Image.open(png) as image:
        image = image.convert("RGB")
        image.thumbnail((640, 400))
        image.save(jpg, "JPEG", quality=85)


def write(path: Path, data: dict) -> None:
    """Atomic: a temporary file beside `path`, then renamed over it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(json.dumps(data, indent=1) + "\n")
    os.replace(temporary, path)


async def main_async(args) -> None:
    workdir = Path(tempfile.mkdtemp(prefix="zerase-build-"))
    try:
        async with ComfyPage(args.comfyui, args.chromium, workdir, timeout=args.timeout) as page:
            await page_graph.close_dialogs(page)
            for workflow in WORKFLOWS:
                ui, queued = await build(page, workflow)
                write(workflow.ui_path, ui)
                write(workflow.api_path, queued)
                print("wrote", workflow.ui_path.relative_to(REPO), "and its API copy")
            if args.screenshots:
                for workflow in WORKFLOWS:
                    png = IMAGES / f"workflow-{workflow.slug}.png"
                    await screenshot(page, workflow, png)
                    thumbnail(png, workflow.thumbnail_path)
                    print("wrote", png.relative_to(REPO), "and", workflow.thumbnail_path.relative_to(REPO))
            if args.result:
                png = IMAGES / "comfyui-demo-result.png"
                entry = await result_screenshot(page, png)
                print("wrote", png.relative_to(REPO), "after the nano demo ran from the page:",
                      entry["status"]["status_str"])
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--comfyui", type=Path, default=os.environ.get("COMFYUI_PATH"),
                        help="ComfyUI source tree (default: $COMFYUI_PATH)")
    parser.add_argument("--chromium", default=None, help="browser binary (default: chromium on PATH)")
    parser.add_argument("--no-screenshots", dest="screenshots", action="store_false",
                        help="skip docs/images/workflow-*.png and the thumbnails")
    parser.add_argument("--result", action="store_true",
                        help="also run the nano demo from the page at its defaults and capture "
                             "docs/images/comfyui-demo-result.png (minutes on a CPU)")
    parser.add_argument("--timeout", type=float, default=1800)
    args = parser.parse_args(argv)
    if args.comfyui is None or not (Path(args.comfyui) / "main.py").is_file():
        raise SystemExit("point --comfyui or COMFYUI_PATH at a ComfyUI source tree (with main.py)")
    args.chromium = find_chromium(args.chromium)
    if args.chromium is None:
        raise SystemExit("no chromium found; apt-get install chromium, or pass --chromium PATH")
    asyncio.run(main_async(args))


if __name__ == "__main__":
    main()
