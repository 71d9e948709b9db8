"""Graph operations in the ComfyUI page, as the frontend itself does them (over a `ComfyPage`).

Nothing here guesses the frontend's widget rules: graphs are built with `app.loadApiJson`, serialised with
`app.graph.serialize()`, loaded with `app.loadGraphData` and turned into prompts with `app.graphToPrompt`; node
boxes are the frontend's computed `getBounding()` (title bar included).
"""
from __future__ import annotations

import asyncio
import json

GAP = 60                     # between columns and between nodes of a column, in graph units
NOTE_WIDTH = 440
# Nodes that grow when they show their images after a run: the room kept free below them (graph units).
ROOM_AFTER_RUN = {"ErasureCompare": 760, "PreviewImage": 300, "SaveImage": 300, "LossGraphNode": 340}


def js(value) -> str:
    return json.dumps(value)


async def close_dialogs(page) -> None:
    """Escape closes the first-run Templates dialog (and any other dialog the page opened on its own)."""
    for _ in range(2):
        for kind in ("keyDown", "keyUp"):
            await page.cdp.send("Input.dispatchKeyEvent", type=kind, key="Escape", code="Escape",
                                windowsVirtualKeyCode=27)
        await asyncio.sleep(0.2)


async def tidy_for_screenshot(page) -> None:
    """No minimap, no error toast (a missing model file's toast would hide the nodes on the right), and text drawn
    at any zoom (the frontend draws nodes without text below a font-size threshold)."""
    await page.evaluate(
        "(async () => { const settings = window.app.extensionManager.setting;"
        " await settings.set('Comfy.Minimap.Visible', false);"
        " await settings.set('LiteGraph.Canvas.MinFontSizeForLOD', 1);"
        " for (const details of [...document.querySelectorAll('button')].filter((b) => b.innerText.trim() === 'View details'))"
        " details.parentElement.parentElement.querySelector('button[aria-label=Close]')?.click(); return 1; })()")


async def load_api(page, prompt: dict, name: str) -> None:
    await page.evaluate(f"(async () => {{ await window.app.loadApiJson({js(prompt)}, {js(name)}); return 1; }})()")


async def load_ui(page, workflow: dict, name: str) -> None:
    await page.evaluate(f"(async () => {{ await window.app.loadGraphData({js(workflow)}, true, true, {js(name)});"
                        " return 1; })()")


async def graph_to_prompt(page) -> dict:
    """What the Run button queues: `app.graphToPrompt(app.graph).output`."""
    return await page.evaluate("(async () => (await window.app.graphToPrompt(window.app.graph)).output)()")


async def serialize(page) -> dict:
    return await page.evaluate("window.app.graph.serialize()")


async def boxes(page) -> list[dict]:
    """Each node's id, type, title, pos and computed bounding box [x, y, w, h] (title bar included)."""
    return await page.evaluate(
        "window.app.graph.nodes.map((n) => ({id: String(n.id), type: n.type, title: n.title, pos: [...n.pos],"
        " size: [...n.size], box: [...n.getBounding()]}))")


async def set_widget(page, node_id: str, name: str, value) -> None:
    """A widget value as a user sets it (value, then the widget's callback)."""
    await page.evaluate(
        f"(() => {{ const node = window.app.graph.getNodeById({js(node_id)}) ||"
        f" window.app.graph.getNodeById(Number({js(node_id)}));"
        f" const widget = node.widgets.find((w) => w.name === {js(name)});"
        f" if (!widget) throw new Error('no widget ' + {js(name)} + ' on node ' + {js(node_id)});"
        f" widget.value = {js(value)}; widget.callback?.(widget.value); return 1; }})()")


async def fix_seeds(page) -> int:
    """Every frontend-added 'control after generate' widget set to 'fixed' (templates reproduce their images)."""
    return await page.evaluate(
        "(() => { let count = 0; for (const node of window.app.graph.nodes) for (const w of node.widgets || [])"
        " if (w.name === 'control_after_generate') { w.value = 'fixed'; count += 1; } return count; })()")


def columns(prompt: dict) -> dict[str, int]:
    """Dependency depth of every node of an API prompt (sources in column 0)."""
    depth: dict[str, int] = {}

    def level(node_id: str) -> int:
        if node_id not in depth:
            sources = [value[0] for value in prompt[node_id]["inputs"].values() if isinstance(value, list)]
            depth[node_id] = 1 + max((level(source) for source in sources), default=-1)
        return depth[node_id]

    for node_id in prompt:
        level(node_id)
    return depth


def arrange(prompt: dict, measured: list[dict], note_height: float) -> tuple[dict[str, list[float]], list[float]]:
    """Positions for every node (left to right by depth, stacked by measured height), and the note's box.

    The note heads column 0, above the loaders it explains. Returns ({node id: pos}, [x, y, w, h] of the note).
    """
    depth = columns(prompt)
    by_id = {item["id"]: item for item in measured}
    count = max(depth.values()) + 1
    widths = [max([by_id[i]["box"][2] for i in prompt if depth[i] == c] + ([NOTE_WIDTH] if c == 0 else []))
              for c in range(count)]
    positions, x = {}, 0.0
    note = [0.0, 0.0, NOTE_WIDTH, note_height]
    for column in range(count):
        y = note_height + GAP if column == 0 else 0.0
        for node_id in sorted((i for i in prompt if depth[i] == column), key=int):
            item = by_id[node_id]
            title = item["pos"][1] - item["box"][1]          # the title bar above `pos`
            positions[node_id] = [x, y + title]
            y += item["box"][3] + ROOM_AFTER_RUN.get(item["type"], 0) + GAP
        x += widths[column] + GAP
    return positions, note


async def place(page, positions: dict[str, list[float]]) -> None:
    await page.evaluate(
        f"(() => {{ const at = {js(positions)}; for (const node of window.app.graph.nodes) {{"
        " const p = at[String(node.id)]; if (p) { node.pos[0] = p[0]; node.pos[1] = p[1]; } }"
        " window.app.canvas.setDirty(true, true); return 1; })()")


async def add_note(page, title: str, text: str, box: list[float]) -> str:
    """A MarkdownNote (the frontend's own node type) with `text`, its title bar's top-left at box[0], box[1]."""
    node_id = await page.evaluate(
        f"(() => {{ const node = window.LiteGraph.createNode('MarkdownNote'); node.title = {js(title)};"
        " window.app.graph.add(node);"
        f" node.size = [{box[2]}, {box[3]}];"
        f" node.pos = [{box[0]}, {box[1]} + (node.pos[1] - node.getBounding()[1])];"
        " window.app.canvas.setDirty(true, true); return String(node.id); })()")
    await set_widget(page, node_id, "text", text)
    return node_id


async def note_text(page) -> str | None:
    """The text of the graph's MarkdownNote, as the page holds it."""
    return await page.evaluate(
        "(() => { const node = window.app.graph.nodes.find((n) => n.type === 'MarkdownNote');"
        " return node ? node.widgets[0].value : null; })()")


async def fit_view(page, node_id: str | None = None) -> dict:
    """The frontend's own "Zoom to fit" (every node, or only `node_id`, in view), kept in the graph (`extra.ds`)."""
    select = (f" window.app.canvas.selectNode(window.app.graph.getNodeById({js(node_id)}) ||"
              f" window.app.graph.getNodeById(Number({js(node_id)})));" if node_id else "")
    await page.evaluate("(async () => { window.app.canvas.deselectAll?.();" + select +
                        " await window.app.extensionManager.command.execute('Comfy.Canvas.FitView');"
                        " window.app.canvas.deselectAll?.(); return 1; })()")
    await asyncio.sleep(1.0)                  # the zoom is animated
    return await page.evaluate(
        "(() => { const ds = window.app.canvas.ds; const view = {scale: ds.scale, offset: [...ds.offset]};"
        " window.app.graph.extra = window.app.graph.extra || {}; window.app.graph.extra.ds = view; return view; })()")


def overlaps(measured: list[dict]) -> list[tuple[str, str]]:
    """Pairs of nodes whose computed boxes intersect."""
    found = []
    for index, first in enumerate(measured):
        for second in measured[index + 1:]:
            a, b = first["box"], second["box"]
            if a[0] < b[0] + b[2] and b[0] < a[0] + a[2] and a[1] < b[1] + b[3] and b[1] < a[1] + a[3]:
                found.append((f"{first['id']} {first['type']}", f"{second['id']} {second['type']}"))
    return found


def prompt_differences(queued: dict, expected: dict) -> list[str]:
    """Node by node, input by input: what `graphToPrompt` queues against the API copy (empty when equal)."""
    problems = []
    for node_id in sorted(set(queued) | set(expected), key=str):
        if node_id not in queued or node_id not in expected:
            problems.append(f"node {node_id}: only in {'the API copy' if node_id in expected else 'the page'}")
            continue
        got, want = queued[node_id], expected[node_id]
        if got["class_type"] != want["class_type"]:
            problems.append(f"node {node_id}: class {got['class_type']} in the page, {want['class_type']} expected")
            continue
        for name in sorted(set(got["inputs"]) | set(want["inputs"])):
            mine, theirs = got["inputs"].get(name, "<missing>"), want["inputs"].get(name, "<missing>")
            if mine != theirs:
                problems.append(f"node {node_id} {got['class_type']}.{name}: page queues {mine!r}, "
                                f"API copy has {theirs!r}")
    return problems


# Every `progress` and `zerase.train` event the page's api client receives, in window.__zeraseEvents (reset).
RECORD_EVENTS = (
    "(() => { const api = window.app.api || window.comfyAPI.api.api; window.__zeraseEvents = [];"
    " if (!window.__zeraseRecording) { window.__zeraseRecording = true;"
    " for (const type of ['progress', 'zerase.train']) api.addEventListener(type, (event) =>"
    " window.__zeraseEvents.push({type, node: String(event.detail?.node), t: performance.now()})); }"
    " return 1; })()")


async def output_images(page, node_id: str) -> int:
    """How many images of a node's last execution the page holds (what it shows under the node)."""
    return await page.evaluate(
        f"(() => {{ const outputs = window.app.nodeOutputs?.[{js(node_id)}];"
        f" const node = window.app.graph.getNodeById({js(node_id)}) ||"
        f" window.app.graph.getNodeById(Number({js(node_id)}));"
        " return Math.max(outputs?.images?.length || 0, node?.imgs?.length || 0); })()")


async def templates_dialog(page, module: str) -> list[str]:
    """Open the Templates dialog (the frontend's own command), pick the pack's category; the dialog's text."""
    await page.evaluate("(async () => { await window.app.extensionManager.command.execute('Comfy.BrowseTemplates');"
                        " return 1; })()")
    await page.cdp.wait_for(
        f"(() => [...document.querySelectorAll('[role=dialog] *')].some((e) => e.textContent.trim() === {js(module)}))()",
        60, "the pack in the Templates dialog")
    await page.evaluate(
        f"(() => {{ const item = [...document.querySelectorAll('[role=dialog] *')].filter((e) =>"
        f" e.textContent.trim() === {js(module)}).at(-1); item.click(); return 1; }})()")
    await asyncio.sleep(1.5)
    text = await page.evaluate("[...document.querySelectorAll('[role=dialog]')].map((e) => e.innerText).join('\\n')")
    await close_dialogs(page)
    return text.splitlines()


async def run_queued(page, timeout: float = 600) -> dict:
    """Press Run as the page does (`app.queuePrompt(0, 1)`); the prompt's finished /history entry."""
    await page.evaluate(RECORD_EVENTS)
    _, before = await page.get_json("/history")
    await page.evaluate("(async () => { await window.app.queuePrompt(0, 1); return 1; })()")
    deadline = asyncio.get_running_loop().time() + timeout
    while asyncio.get_running_loop().time() < deadline:
        _, history = await page.get_json("/history")
        new = [entry for key, entry in history.items() if key not in before]
        if new and new[0].get("status", {}).get("status_str") in ("success", "error"):
            await asyncio.sleep(1.5)          # the last websocket events reach the page
            return new[0]
        await asyncio.sleep(0.5)
    raise TimeoutError("the queued prompt did not finish in time")
