"""The Chrome DevTools Protocol side of scripts/browser_check.py: a minimal session on one page target, and the
console messages and network responses it recorded, each classified as the pack's js/ or the rest."""
from __future__ import annotations

import asyncio
import contextlib
import json
import re
import time

import aiohttp


class CDP:
    """A minimal CDP session on one page target: commands, and every event kept in order."""

    def __init__(self, socket_):
        self.socket, self.next_id, self.pending, self.events = socket_, 0, {}, []
        self.reader = asyncio.ensure_future(self._read())

    async def _read(self):
        async for message in self.socket:
            if message.type != aiohttp.WSMsgType.TEXT:
                continue
            data = json.loads(message.data)
            if "id" in data and data["id"] in self.pending:
                self.pending.pop(data["id"]).set_result(data)
            elif "method" in data:
                data["time"] = time.monotonic()
                self.events.append(data)

    async def send(self, method: str, timeout: float = 60, **params):
        self.next_id += 1
        future = asyncio.get_running_loop().create_future()
        self.pending[self.next_id] = future
        await self.socket.send_json({"id": self.next_id, "method": method, "params": params})
        reply = await asyncio.wait_for(future, timeout)
        if "error" in reply:
            raise RuntimeError(f"{method}: {reply['error']}")
        return reply.get("result", {})

    async def evaluate(self, expression: str, timeout: float = 60):
        result = await self.send("Runtime.evaluate", timeout=timeout, expression=expression, awaitPromise=True,
                                 returnByValue=True)
        if "exceptionDetails" in result:
            details = result["exceptionDetails"]
            raise RuntimeError(f"page evaluation failed: {details.get('exception', {}).get('description') or details}")
        return result["result"].get("value")

    async def wait_for(self, expression: str, timeout: float, what: str):
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            with contextlib.suppress(RuntimeError):
                last = await self.evaluate(expression)
                if last:
                    return last
            await asyncio.sleep(0.25)
        raise TimeoutError(f"timed out waiting for {what} ({expression!r} gave {last!r})")


def _remote_text(value: dict) -> str:
    if "value" in value:
        return value["value"] if isinstance(value["value"], str) else json.dumps(value["value"])
    return value.get("description") or value.get("unserializableValue") or value.get("type", "")


def _frames(frames: list[dict], count: int = 6) -> list[str]:
    return [f"{frame.get('functionName') or '(anonymous)'} {frame.get('url')}:{frame.get('lineNumber', 0) + 1}"
            for frame in frames[:count]]


def messages(events: list[dict], since: float, until: float, pack_marker: str) -> list[dict]:
    """Console calls, exceptions and log entries between two times, each with its level, text, URL and origin."""
    found = []
    for event in events:
        if not since <= event["time"] < until:
            continue
        method, params = event["method"], event.get("params", {})
        if method == "Runtime.consoleAPICalled":
            frames = (params.get("stackTrace") or {}).get("callFrames") or []
            urls = [frame.get("url", "") for frame in frames]
            record = {"kind": "console", "level": params.get("type"),
                      "text": " ".join(_remote_text(arg) for arg in params.get("args", [])), "urls": urls,
                      "stack": _frames(frames)}
        elif method == "Runtime.exceptionThrown":
            details = params.get("exceptionDetails", {})
            frames = (details.get("stackTrace") or {}).get("callFrames") or []
            urls = [details.get("url", "")] + [frame.get("url", "") for frame in frames]
            text = (details.get("exception") or {}).get("description") or details.get("text", "")
            record = {"kind": "exception", "level": "error", "text": text, "urls": urls, "stack": _frames(frames)}
        elif method == "Log.entryAdded":
            entry = params.get("entry", {})
            record = {"kind": f"log.{entry.get('source')}", "level": entry.get("level"), "text": entry.get("text"),
                      "urls": [entry.get("url", "")]}
        else:
            continue
        record["urls"] = [url for url in record["urls"] if url]
        record["origin"] = "pack js/" if any(pack_marker in url for url in record["urls"]) or \
            pack_marker in (record["text"] or "") else "ComfyUI frontend / browser"
        found.append(record)
    return found


def network(events: list[dict], marker: str) -> list[dict]:
    requests, results = {}, []
    for event in events:
        params = event.get("params", {})
        if event["method"] == "Network.requestWillBeSent":
            requests[params["requestId"]] = params["request"]["url"]
        elif event["method"] == "Network.responseReceived" and marker in params["response"]["url"]:
            results.append({"url": params["response"]["url"], "status": params["response"]["status"]})
        elif event["method"] == "Network.loadingFailed" and marker in requests.get(params["requestId"], ""):
            results.append({"url": requests[params["requestId"]], "status": None, "error": params.get("errorText")})
    return results


def normalised(message: dict) -> tuple:
    """A message without the port of the server that produced it (to compare page loads of two servers)."""
    text = re.sub(r"127\.0\.0\.1:\d+", "127.0.0.1:PORT", message["text"] or "")
    return message["kind"], message["level"], text
