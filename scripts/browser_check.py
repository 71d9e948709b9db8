"""The ComfyUI page (comfyui-frontend-package) with the pack, in headless Chromium: console errors, js/ loaded, chart.

Starts ComfyUI (`main.py --cpu --listen 127.0.0.1 --port <free>`) with this checkout symlinked into the custom_nodes
of a throw-away `--base-directory`, starts headless Chromium with `--remote-debugging-port`, and drives the page over
the Chrome DevTools Protocol (aiohttp's websocket client, which ComfyUI already needs; nothing else to install):

1. page load: every `Runtime.consoleAPICalled`, `Runtime.exceptionThrown` and `Log.entryAdded`, and every network
   response for `/extensions/<pack folder>/...` (the files of js/) is recorded; the page must have registered the
   pack's extensions (`ZErase.LiveChart`, `ZErase.CompareSlider` in `app.extensions`);
2. the nano demo workflow (workflows/ZErase nano demo, ...json) is loaded into the graph (`app.loadGraphData`) and its
   API copy (in workflows/api/, ZEraseTrain cut to --steps) is posted to /prompt with the page's
   client id; while it runs, the number of points the live chart holds (`node.zeraseChart.points`, which
   js/live_chart.js fills from the `zerase.train` events) is read from the page every 0.25 s;
3. console messages are split into those that come from the pack's js/ (a URL or stack frame under
   /extensions/<pack folder>/) and the rest (ComfyUI's frontend, the browser); with --compare-without-pack the page
   is first loaded from a ComfyUI without the pack, and the messages seen only with the pack are listed.

Each ComfyUI gets its own `--base-directory` and `--database-url` in a temporary folder (nothing is written into the
ComfyUI tree). The results of a run are in docs/comfyui.md.

Exit status 0 when the pack's js/ produced no error or exception, all its files loaded, and the chart received one point
per training step while the prompt ran.

    COMFYUI_PATH=/path/to/ComfyUI /path/to/comfyui-venv/bin/python scripts/browser_check.py \
        [--steps 20] [--compare-without-pack] [--json out.json]

Needs `chromium` (Debian: apt-get install chromium) or --chromium PATH.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from browser_cdp import messages, normalised  # noqa: E402  (beside this script)
from comfy_page import EXTENSIONS, PACK_MARKER, ComfyPage, find_chromium  # noqa: E402
from page_graph import close_dialogs  # noqa: E402
from workflow_sources import NANO_DEMO  # noqa: E402

TRAIN, COMPARE = "ZEraseTrain", "ErasureCompare"


def parse(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--comfyui", type=Path, default=os.environ.get("COMFYUI_PATH"),
                        help="ComfyUI source tree (default: $COMFYUI_PATH)")
    parser.add_argument("--chromium", help="browser binary (default: chromium on PATH)")
    parser.add_argument("--steps", type=int, default=20, help="ZEraseTrain steps")
    parser.add_argument("--pool-prompts", type=int, help="ZEraseTrain pool_prompts (default: the workflow's)")
    parser.add_argument("--sample-steps", type=int, help="ZEraseTrain sample_steps (default: the workflow's)")
    parser.add_argument("--compare-steps", type=int, help="ErasureCompare steps (default: the workflow's)")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds for the whole check")
    parser.add_argument("--comfy-arg", action="append", default=[], help="extra argument for main.py (repeatable)")
    parser.add_argument("--screenshot", type=Path, help="save a PNG of the page after the run")
    parser.add_argument("--json", type=Path, help="write the report here")
    parser.add_argument("--keep", action="store_true", help="keep the temporary base directory and logs")
    parser.add_argument("--compare-without-pack", action="store_true",
                        help="first load the page from a ComfyUI without the pack, to tell ComfyUI's own messages "
                             "from the ones the pack adds (starts ComfyUI twice)")
    return parser.parse_args(argv)


# ---------------------------------------------------------------- the check


def demo_prompt(args) -> dict:
    prompt = json.loads(NANO_DEMO.api_path.read_text())
    for node in prompt.values():
        inputs = node["inputs"]
        if node["class_type"] == TRAIN:
            inputs["steps"] = args.steps
            inputs["preview_every"] = min(inputs.get("preview_every") or 0, args.steps)
            if args.pool_prompts:
                inputs["pool_prompts"] = args.pool_prompts
            if args.sample_steps:
                inputs["sample_steps"] = args.sample_steps
        if node["class_type"] == COMPARE and args.compare_steps:
            inputs["steps"] = args.compare_steps
    return prompt


async def check(args, workdir: Path) -> dict:
    async with ComfyPage(args.comfyui, args.chromium, workdir, timeout=args.timeout, comfy_args=args.comfy_arg,
                         without_pack_first=args.compare_without_pack) as page:
        cdp, url, session, report = page.cdp, page.url, page.http, page.report
        async with session.get(f"{url}/object_info/{TRAIN}") as response:
            if TRAIN not in await response.json(content_type=None):
                raise RuntimeError(f"ComfyUI does not list {TRAIN}; the pack did not load")
        if "without_pack" in report:
            bare = [normalised(message) for message in report["without_pack"]["load_messages"]]
            only = []
            for message in report["load_messages"]:
                key = normalised(message)
                if key in bare:
                    bare.remove(key)
                else:
                    only.append(message)
            report["load_messages_only_with_pack"] = only
        marker, deadline = PACK_MARKER, page.deadline

        # the editor workflow in the graph, then its API copy queued from here with the page's client id
        workflow = NANO_DEMO.ui_path.read_text()
        await cdp.evaluate(f"window.app.loadGraphData({workflow})")
        prompt = demo_prompt(args)
        train_id = next(node for node, value in prompt.items() if value["class_type"] == TRAIN)
        compare_id = next(node for node, value in prompt.items() if value["class_type"] == COMPARE)
        chart = f"window.app.graph.getNodeById({int(train_id)})?.zeraseChart"
        if not await cdp.evaluate(f"!!{chart} && Array.isArray({chart}.points)"):
            raise RuntimeError(f"node {train_id} ({TRAIN}) has no zeraseChart after loadGraphData")
        client_id = await cdp.evaluate(
            "window.app.api?.clientId || window.comfyAPI?.api?.api?.clientId || sessionStorage.getItem('clientId')")
        report["client_id"] = client_id
        run_started = time.monotonic()
        async with session.post(f"{url}/prompt", json={"prompt": prompt, "client_id": client_id}) as r:
            body = await r.json(content_type=None)
            if r.status != 200:
                raise RuntimeError(f"POST /prompt: {r.status} {body}")
        prompt_id = body["prompt_id"]
        counts, status = [], None
        while time.monotonic() < deadline:
            count = await cdp.evaluate(f"({chart}?.points || []).length")
            if not counts or counts[-1][1] != count:
                counts.append((round(time.monotonic() - run_started, 2), count))
            async with session.get(f"{url}/history/{prompt_id}") as r:
                history = await r.json(content_type=None)
            if prompt_id in history:
                status = history[prompt_id].get("status", {})
                break
            await asyncio.sleep(0.25)
        else:
            raise TimeoutError("the prompt did not finish in time")
        await asyncio.sleep(1)        # the last websocket events, then the final state of the chart
        final = await cdp.evaluate(
            f"(() => {{ const c = {chart}; const p = c ? c.points : []; return {{count: p.length,"
            f" first: p[0] || null, last: p[p.length - 1] || null,"
            f" slider: !!window.app.graph.getNodeById({int(compare_id)})?.zeraseSlider }}; }})()")
        run_ended = time.monotonic()
        report["prompt_status"] = status.get("status_str")
        report["prompt_messages"] = [m[0] for m in status.get("messages", [])]
        report["run_s"] = round(run_ended - run_started, 1)
        report["chart_counts"] = counts
        report["chart_points"] = final["count"]
        report["chart_first_point"], report["chart_last_point"] = final["first"], final["last"]
        report["points_while_running"] = max((count for _, count in counts), default=0)
        report["compare_slider_built"] = final["slider"]
        report["run_messages"] = messages(cdp.events, run_started, run_ended, marker)
        if args.screenshot:
            # close the first-run templates dialog, bring the chart into view, then capture
            await close_dialogs(page)
            await cdp.evaluate(f"(() => {{ const node = window.app.graph.getNodeById({int(train_id)});"
                               " window.app.canvas.centerOnNode?.(node); window.app.canvas.setDirty(true, true);"
                               " return true; })()")
            await asyncio.sleep(1)
            await page.screenshot(args.screenshot)
            report["screenshot"] = str(args.screenshot)
        return report


def verdict(report: dict, steps: int) -> list[str]:
    problems = []
    ours = [m for m in report["load_messages"] + report["run_messages"]
            if m["origin"] == "pack js/" and m["level"] in ("error", "assert")]
    if ours:
        problems.append(f"{len(ours)} error(s) from the pack's js/")
    if report["js_missing"]:
        problems.append(f"js/ files not loaded: {report['js_missing']}")
    if sorted(report["registered_extensions"]) != sorted(EXTENSIONS):
        problems.append(f"registered extensions {report['registered_extensions']}, expected {list(EXTENSIONS)}")
    if report["prompt_status"] != "success":
        problems.append(f"the prompt ended with {report['prompt_status']}")
    if report["chart_points"] != steps:
        problems.append(f"the chart holds {report['chart_points']} points after {steps} steps")
    if report["points_while_running"] < 1:
        problems.append("the chart received no point while the prompt ran")
    return problems


def print_report(report: dict, problems: list[str]) -> None:
    print(f"browser: {report.get('browser')}; ComfyUI up in {report.get('comfyui_start_s')} s; page load "
          f"{report.get('page_load_s')} s; {report.get('extension_count')} extensions registered, ours: "
          f"{report.get('registered_extensions')}")
    for item in report.get("js_responses", []):
        print(f"  {item['status']} {item['url']}" + (f" ({item['error']})" if item.get("error") else ""))
    if "without_pack" in report:
        bare = report["without_pack"]
        print(f"without the pack: page load {bare['page_load_s']} s, {bare['extension_count']} extensions, "
              f"{len(bare['load_messages'])} load messages; messages only with the pack: "
              f"{len(report['load_messages_only_with_pack'])}")
        for message in report["load_messages_only_with_pack"]:
            print(f"  only with the pack: [{message['origin']}] {message['kind']}/{message['level']}: "
                  f"{message['text']}")
    for phase in ("load_messages", "run_messages"):
        found = report.get(phase, [])
        print(f"{phase.replace('_', ' ')}: {len(found)}")
        for message in found:
            where = message["urls"][0] if message["urls"] else ""
            print(f"  [{message['origin']}] {message['kind']}/{message['level']}: {message['text']}"
                  + (f"  ({where})" if where else ""))
    if "chart_points" in report:
        print(f"prompt: {report['prompt_status']} in {report['run_s']} s; chart points {report['chart_points']} "
              f"(while running, up to {report['points_while_running']}); counts over time {report['chart_counts']}")
        print(f"last point: {report['chart_last_point']}; compare slider built: {report['compare_slider_built']}")
    print("PASS" if not problems else "FAIL: " + "; ".join(problems))


def run(argv=None) -> tuple[dict, list[str]]:
    args = parse(argv)
    if args.comfyui is None or not (Path(args.comfyui) / "main.py").is_file():
        raise SystemExit("point --comfyui or COMFYUI_PATH at a ComfyUI source tree (with main.py)")
    args.comfyui = Path(args.comfyui).resolve()
    args.chromium = find_chromium(args.chromium)
    if args.chromium is None:
        raise SystemExit("no chromium found; apt-get install chromium, or pass --chromium PATH")
    workdir = Path(tempfile.mkdtemp(prefix="zerase-browser-"))
    try:
        report = asyncio.run(check(args, workdir))
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    report["workdir"] = str(workdir) if args.keep else None
    problems = verdict(report, args.steps)
    report["problems"] = problems
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))
    return report, problems


def main(argv=None) -> int:
    report, problems = run(argv)
    print_report(report, problems)
    return 0 if not problems else 1


if __name__ == "__main__":
    sys.exit(main())
