"""The example workflows as a user meets them: the real ComfyUI page (comfyui-frontend-package) in headless Chromium.

One ComfyUI (with the pack, a throw-away base directory) and one Chromium serve the whole module. Each
workflows/*.json is loaded with `app.loadGraphData` and must queue exactly its API copy (`app.graphToPrompt`); its
nodes must not overlap at the frontend's computed sizes; the templates are listed where the Templates dialog looks;
the nano workflows are queued from the page as the Run button does (`app.queuePrompt`) and finish with success;
the Turbo and Lumina-2 workflows are refused by /prompt only for their absent model files.

Slow (ComfyUI start-up, CPU sampling). Needs COMFYUI_PATH, ComfyUI's python and chromium:

    COMFYUI_PATH=../shared/comfyui "$(bash .ci/comfyui_env.sh)" -m pytest tests/comfyui/test_frontend_workflows.py -m slow
"""
from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path

import pytest
from comfy_support import HOW_TO_RUN, REPO_ROOT, SKIP_PREFIX, skip_without_comfy

try:
    import aiohttp  # noqa: F401  (a ComfyUI dependency: the page is driven over its websocket client)
except ImportError:
    pytest.skip(f"{SKIP_PREFIX}: aiohttp is not installed (run with ComfyUI's python); {HOW_TO_RUN}",
                allow_module_level=True)

sys.path.insert(0, str(REPO_ROOT / "scripts"))
import page_graph  # noqa: E402
from comfy_page import PACK_FOLDER, ComfyPage, find_chromium  # noqa: E402
from workflow_sources import FOLDER, SLUGS, WORKFLOWS  # noqa: E402

pytestmark = pytest.mark.slow
FILES = sorted(FOLDER.glob("*.json"))
STEPS = 3                                   # ZEraseTrain steps when run from the page


class Page:
    """The page on an event loop of its own, so that plain (sync) tests can drive it."""

    def __init__(self, loop: asyncio.AbstractEventLoop, page: ComfyPage):
        self.loop, self.page = loop, page

    def __call__(self, coroutine):
        return self.loop.run_until_complete(coroutine)

    def evaluate(self, expression: str):
        return self(self.page.evaluate(expression))


@pytest.fixture(scope="module")
def page(comfy, tmp_path_factory):
    root = os.environ.get("COMFYUI_PATH", "")
    if not (Path(root) / "main.py").is_file():
        skip_without_comfy(f"COMFYUI_PATH={root!r} is not a ComfyUI source tree with main.py")
    chromium = find_chromium()
    if chromium is None:
        skip_without_comfy("no chromium on PATH (Debian: apt-get install chromium)")
    loop = asyncio.new_event_loop()
    comfy_page = ComfyPage(Path(root), chromium, tmp_path_factory.mktemp("frontend"), timeout=1500)
    loop.run_until_complete(comfy_page.__aenter__())
    driver = Page(loop, comfy_page)
    driver(page_graph.close_dialogs(comfy_page))
    yield driver
    loop.run_until_complete(comfy_page.__aexit__(None, None, None))
    loop.close()


def load(page: Page, path: Path) -> None:
    page(page_graph.load_ui(page.page, json.loads(path.read_text()), path.stem))


def test_the_pack_js_loads_without_errors(page):
    report = page.page.load
    ours = [m for m in report["load_messages"] if m["origin"] == "pack js/" and m["level"] in ("error", "assert")]
    assert not ours, ours
    assert not report["js_missing"], report["js_responses"]
    assert sorted(report["registered_extensions"]) == ["ZErase.CompareSlider", "ZErase.LiveChart"]


def test_every_workflow_file_is_built_from_its_source():
    assert sorted(FILES) == sorted(workflow.ui_path for workflow in WORKFLOWS)
    for workflow in WORKFLOWS:
        assert workflow.api_path.is_file() and workflow.thumbnail_path.is_file(), workflow.name


@pytest.mark.parametrize("path", FILES, ids=lambda path: path.stem)
def test_the_page_queues_the_api_copy(page, path):
    load(page, path)
    queued = page(page_graph.graph_to_prompt(page.page))
    api_copy = json.loads((FOLDER / "api" / path.name).read_text())
    assert page_graph.prompt_differences(queued, api_copy) == []
    source = next(workflow.prompt for workflow in WORKFLOWS if workflow.ui_path == path)
    assert page_graph.prompt_differences(api_copy, source) == [], "the API copy is not what the source asks for"


@pytest.mark.parametrize("path", FILES, ids=lambda path: path.stem)
def test_no_nodes_overlap_and_the_note_heads_the_loaders(page, path):
    load(page, path)
    measured = page(page_graph.boxes(page.page))
    assert page_graph.overlaps(measured) == []
    note = next(item for item in measured if item["type"] == "MarkdownNote")
    source = next(workflow.prompt for workflow in WORKFLOWS if workflow.ui_path == path)
    first_column = [item for item in measured if item["id"] in source and page_graph.columns(source)[item["id"]] == 0]
    below = min(item["box"][1] - (note["box"][1] + note["box"][3]) for item in first_column)
    assert 0 < below <= 2 * page_graph.GAP, f"the note is {below} units above the first loader"
    assert all(abs(item["box"][0] - note["box"][0]) < 1 for item in first_column)
    assert page(page_graph.note_text(page.page)) == next(w.note for w in WORKFLOWS if w.ui_path == path)


def test_the_templates_are_listed_under_the_pack(page):
    status, listed = page(page.page.get_json("/api/workflow_templates"))
    assert status == 200 and sorted(listed.get(PACK_FOLDER, [])) == sorted(w.name for w in WORKFLOWS), listed
    for workflow in WORKFLOWS:
        status, served = page(page.page.get_json(f"/api/workflow_templates/{PACK_FOLDER}/{workflow.name}.json"))
        assert status == 200 and served == json.loads(workflow.ui_path.read_text())
    titles = page(page_graph.templates_dialog(page.page, PACK_FOLDER))
    for workflow in WORKFLOWS:
        assert any(workflow.name in title for title in titles), (workflow.name, titles)


def run_from_page(page: Page, slug: str, widgets: dict[str, dict[str, object]]) -> dict:
    """Load the template, set widgets as a user would, press Run (`app.queuePrompt`); the finished history entry."""
    workflow = SLUGS[slug]
    load(page, workflow.ui_path)
    for node_id, values in widgets.items():
        for name, value in values.items():
            page(page_graph.set_widget(page.page, node_id, name, value))
    return page(page_graph.run_queued(page.page))


def test_the_nano_workflows_run_from_the_page(page):
    demo = run_from_page(page, "nano-demo", {"2": {"steps": STEPS, "preview_every": STEPS, "pool_prompts": 1,
                                                   "sample_steps": 2}, "3": {"steps": 2}})
    assert demo["status"]["status_str"] == "success", demo["status"]
    chart = page.evaluate("(() => { const c = window.app.graph.getNodeById(2).zeraseChart;"
                          " return {points: c.points.length, last: c.points.at(-1)}; })()")
    assert chart["points"] == STEPS and chart["last"]["step"] == STEPS and chart["last"]["total"] == STEPS
    events = page.evaluate("window.__zeraseEvents")
    first_step = min(event["t"] for event in events if event["type"] == "zerase.train")
    assert any(event["type"] == "progress" and event["node"] == "2" and event["t"] < first_step for event in events), \
        "the page saw no progress from ZEraseTrain before its first training step"
    assert page.evaluate("!!window.app.graph.getNodeById(3).zeraseSlider")
    assert page(page_graph.output_images(page.page, "3")) > 0

    for slug, node_id, widgets in (("nano-apply", "8", {"6": {"steps": 2}}), ("nano-compare", "3", {"3": {"steps": 2}})):
        entry = run_from_page(page, slug, widgets)
        assert entry["status"]["status_str"] == "success", (slug, entry["status"])
        assert page(page_graph.output_images(page.page, node_id)) > 0, f"{slug}: no image came back to the page"
    assert page.evaluate("!!window.app.graph.getNodeById(3).zeraseSlider")


@pytest.mark.parametrize("slug", ["turbo-erase", "lumina-erase"])
def test_the_gpu_workflows_validate_except_for_their_model_files(page, slug):
    load(page, SLUGS[slug].ui_path)
    queued = page(page_graph.graph_to_prompt(page.page))
    status, reply = page(page.page.post_json("/prompt", {"prompt": queued}))
    assert status == 400
    errors = reply["node_errors"]
    assert sorted(errors) == ["1", "2", "3"], reply
    expected = {"1": "unet_name", "2": "clip_name", "3": "vae_name"}
    for node_id, field in expected.items():
        kinds = {(error["type"], error["extra_info"]["input_name"]) for error in errors[node_id]["errors"]}
        assert kinds == {("value_not_in_list", field)}, errors[node_id]
