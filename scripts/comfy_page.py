"""A real ComfyUI with the pack, and its page in headless Chromium driven over the DevTools protocol.

`ComfyPage` starts ComfyUI (`main.py --cpu`, this checkout symlinked into the custom_nodes of a throw-away
`--base-directory`, its own `--database-url`: nothing is written into the ComfyUI tree) and Chromium
(`--remote-debugging-port`), opens the page and waits for the app and the pack's extensions. It is used by
scripts/browser_check.py, scripts/build_workflows.py and tests/comfyui/test_frontend_workflows.py.

Everything is async (aiohttp, which ComfyUI already needs; nothing else to install). Both processes run in their
own process group under `nice -n 19` and are ended when the context exits.
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent))
from browser_cdp import CDP, messages, network  # noqa: E402  (beside this script)

REPO = Path(__file__).resolve().parent.parent
PACK_FOLDER = "ComfyUI-ZErase"
EXTENSIONS = ("ZErase.LiveChart", "ZErase.CompareSlider")
JS_FILES = tuple(sorted(path.name for path in (REPO / "js").glob("*.js")))
PACK_MARKER = f"/extensions/{PACK_FOLDER}/"
WINDOW = (1600, 1000)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def find_chromium(given: str | None = None) -> str | None:
    if given:
        return given
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        found = shutil.which(name)
        if found:
            return found
    return None


class Processes:
    """Child processes, each in its own process group, ended (that group only) on `stop`."""

    def __init__(self, workdir: Path):
        self.workdir, self.started = workdir, []

    def start(self, name: str, command: list[str], cwd: Path | None = None, env: dict | None = None):
        log = open(self.workdir / f"{name}.log", "w")
        process = subprocess.Popen(["nice", "-n", "19", *command], cwd=cwd, env=env, stdout=log,
                                   stderr=subprocess.STDOUT, start_new_session=True)
        self.started.append((name, process, log))
        return process

    def stop(self, only: str | None = None) -> None:
        for name, process, log in reversed(self.started):
            if only is not None and name != only:
                continue
            if process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGTERM)
                try:
                    process.wait(15)
                except subprocess.TimeoutExpired:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(process.pid, signal.SIGKILL)
                    process.wait(5)
            log.close()

    def log_tail(self, name: str, lines: int = 30) -> str:
        path = self.workdir / f"{name}.log"
        text = path.read_text(errors="replace").splitlines() if path.is_file() else ["(no log)"]
        return "\n".join(text[-lines:])


async def wait_http(session: aiohttp.ClientSession, url: str, process, label: str, deadline: float):
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{label} exited with status {process.returncode}")
        with contextlib.suppress(aiohttp.ClientError, asyncio.TimeoutError):
            async with session.get(url, timeout=aiohttp.ClientTimeout(total=5)) as response:
                if response.status == 200:
                    return await response.json(content_type=None)
        await asyncio.sleep(0.5)
    raise TimeoutError(f"{label} did not answer {url}")


async def start_comfyui(comfyui: Path, processes: Processes, session, name: str, base: Path, deadline: float,
                        extra: tuple[str, ...] = ()) -> tuple[str, str]:
    """ComfyUI on a free port with `base` as its base directory; (its URL, the command line)."""
    port = free_port()
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    command = [sys.executable, "main.py", "--cpu", "--listen", "127.0.0.1", "--port", str(port),
               "--base-directory", str(base), "--database-url", f"sqlite:///{base / 'comfyui.db'}",
               "--disable-auto-launch", *extra]
    process = processes.start(name, command, cwd=comfyui, env=env)
    url = f"http://127.0.0.1:{port}"
    await wait_http(session, f"{url}/system_stats", process, "ComfyUI", deadline)
    return url, " ".join(command)


async def start_chromium(chromium: str, processes: Processes, session, workdir: Path, deadline: float) -> dict:
    """Headless Chromium; its version record (`Browser`, `webSocketDebuggerUrl` of the first page target)."""
    debug_port = free_port()
    browser = processes.start("chromium", [
        chromium, "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
        "--no-default-browser-check", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--disable-quic", "--remote-allow-origins=*", f"--window-size={WINDOW[0]},{WINDOW[1]}",
        f"--user-data-dir={workdir / 'chromium-profile'}", f"--remote-debugging-port={debug_port}", "about:blank"])
    version = await wait_http(session, f"http://127.0.0.1:{debug_port}/json/version", browser, "Chromium", deadline)
    targets = await wait_http(session, f"http://127.0.0.1:{debug_port}/json/list", browser, "Chromium", deadline)
    page = next(target for target in targets if target.get("type") == "page")
    return {"browser": version.get("Browser"), "socket": page["webSocketDebuggerUrl"]}


async def load_page(cdp: CDP, url: str, with_pack: bool, deadline: float) -> dict:
    """Navigate, wait for the app (and the pack's extensions), let late output arrive; what the load produced."""
    started = time.monotonic()
    await cdp.send("Page.navigate", url=url + "/")
    # `app.graph` is a plain getter (`app.rootGraph` would log an error of its own before initialisation)
    await cdp.wait_for("document.readyState === 'complete' && !!(window.app && window.app.graph)",
                       deadline - time.monotonic(), "the ComfyUI app")
    expected = json.dumps(list(EXTENSIONS)) if with_pack else "[]"
    names = await cdp.wait_for(
        "(() => { const names = (window.app.extensions || []).map((e) => e.name);"
        f" return names.length > 0 && {expected}.every((n) => names.includes(n)) && names; }})()",
        deadline - time.monotonic(), "the extensions")
    await asyncio.sleep(3)            # late console output of the page load
    ended = time.monotonic()
    responses = [item for item in network(cdp.events, PACK_MARKER) if item["url"].startswith(url)]
    loaded = {Path(item["url"].split("?")[0]).name for item in responses if item["status"] == 200}
    return {"page_load_s": round(ended - started, 1), "extension_count": len(names),
            "registered_extensions": [name for name in names if name.startswith("ZErase.")],
            "js_responses": responses, "js_missing": [name for name in JS_FILES if name not in loaded],
            "load_messages": messages(cdp.events, started, ended, PACK_MARKER)}


class ComfyPage:
    """`async with ComfyPage(comfyui, chromium, workdir) as page:` a ComfyUI with the pack and its loaded page.

    `page.cdp` is the DevTools session, `page.url` the server, `page.http` an aiohttp session, `page.base` the
    base directory (models/zerase holds the erasure files), `page.load` what `load_page` reported.
    """

    def __init__(self, comfyui: Path, chromium: str, workdir: Path, timeout: float = 600,
                 comfy_args: tuple[str, ...] = (), without_pack_first: bool = False):
        self.comfyui, self.chromium, self.workdir = Path(comfyui), chromium, Path(workdir)
        self.deadline = time.monotonic() + timeout
        self.comfy_args, self.without_pack_first = tuple(comfy_args), without_pack_first
        self.processes = Processes(self.workdir)
        self.base = self.workdir / "base"
        self.report: dict = {"js_files": list(JS_FILES)}

    async def __aenter__(self) -> ComfyPage:
        (self.base / "custom_nodes").mkdir(parents=True, exist_ok=True)
        link = self.base / "custom_nodes" / PACK_FOLDER
        if not link.exists():
            link.symlink_to(REPO, target_is_directory=True)
        self.http = aiohttp.ClientSession()
        try:
            browser = await start_chromium(self.chromium, self.processes, self.http, self.workdir, self.deadline)
            self.report["browser"] = browser["browser"]
            self._socket_context = self.http.ws_connect(browser["socket"], max_msg_size=0)
            self.cdp = CDP(await self._socket_context.__aenter__())
            for domain in ("Runtime", "Log", "Network", "Page"):
                await self.cdp.send(f"{domain}.enable")
            if self.without_pack_first:
                # the same page from a ComfyUI without the pack: which messages are ComfyUI's own
                bare = self.workdir / "base-without-pack"
                (bare / "custom_nodes").mkdir(parents=True)
                url, _ = await start_comfyui(self.comfyui, self.processes, self.http, "comfyui-without-pack", bare,
                                             self.deadline, self.comfy_args)
                self.report["without_pack"] = await load_page(self.cdp, url, False, self.deadline)
                self.processes.stop("comfyui-without-pack")
            started = time.monotonic()
            self.url, self.report["comfyui_command"] = await start_comfyui(
                self.comfyui, self.processes, self.http, "comfyui", self.base, self.deadline, self.comfy_args)
            self.report["comfyui_start_s"] = round(time.monotonic() - started, 1)
            self.load = await load_page(self.cdp, self.url, True, self.deadline)
            self.report.update(self.load)
        except BaseException:
            await self.__aexit__(None, None, None)
            raise
        return self

    async def __aexit__(self, *exc) -> None:
        if exc and exc[0] is not None:
            print(f"--- comfyui log ---\n{self.processes.log_tail('comfyui')}", file=sys.stderr)
        with contextlib.suppress(Exception):
            self.cdp.reader.cancel()
        with contextlib.suppress(Exception):
            await self._socket_context.__aexit__(None, None, None)
        with contextlib.suppress(Exception):
            await self.http.close()
        self.processes.stop()

    def remaining(self) -> float:
        return max(1.0, self.deadline - time.monotonic())

    async def evaluate(self, expression: str, timeout: float | None = None):
        return await self.cdp.evaluate(expression, timeout=timeout or self.remaining())

    async def get_json(self, path: str):
        async with self.http.get(self.url + path) as response:
            return response.status, await response.json(content_type=None)

    async def post_json(self, path: str, body: dict):
        async with self.http.post(self.url + path, json=body) as response:
            return response.status, await response.json(content_type=None)

    async def screenshot(self, path: Path) -> None:
        import base64
        shot = await self.cdp.send("Page.captureScreenshot", format="png")
        path.write_bytes(base64.b64decode(shot["data"]))

    def messages_since(self, since: float) -> list[dict]:
        return messages(self.cdp.events, since, time.monotonic() + 1, PACK_MARKER)
