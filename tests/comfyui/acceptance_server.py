"""Acceptance run against a live ComfyUI server with the pack in custom_nodes (issue 5's acceptance list).

    # a ComfyUI on CPU with the pack, in a throw-away base directory
    mkdir -p /tmp/zbase/custom_nodes && ln -s /path/to/this/repo /tmp/zbase/custom_nodes/ComfyUI-ZErase
    (cd /path/to/ComfyUI && nice -n 19 python main.py --cpu --port 8188 --base-directory /tmp/zbase > /tmp/zbase.log 2>&1 &)
    python tests/comfyui/acceptance_server.py --url http://127.0.0.1:8188 --models /tmp/zbase/models/zerase

It checks /object_info, posts the nano demo (API format) and times it, prints the ErasureCompare report, interrupts a
training run through /interrupt when a chosen step's `zerase.train` event arrives, checks the partial file and
resumes it, and (with --cli-file) compares a 20-step node run with a CLI `erase` file.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
import uuid
from pathlib import Path

import aiohttp

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "scripts"))
from workflow_sources import SLUGS  # noqa: E402

OUR_NODES = ("LoadSingleStreamDiT", "ZEraseTrain", "ApplyErasedWeights", "ErasureCompare")


def workflow(slug: str) -> dict:
    return json.loads(SLUGS[slug].api_path.read_text())


def training_only(**inputs) -> dict:
    prompt = workflow("nano-demo")
    del prompt["3"], prompt["4"]
    prompt["2"]["inputs"].update(inputs)
    return prompt


class Client:
    def __init__(self, url: str):
        self.url, self.client_id = url.rstrip("/"), uuid.uuid4().hex

    async def __aenter__(self):
        self.session = aiohttp.ClientSession()
        self.socket = await self.session.ws_connect(f"{self.url}/ws?clientId={self.client_id}")
        return self

    async def __aexit__(self, *exc):
        await self.socket.close()
        await self.session.close()

    async def get(self, path: str):
        async with self.session.get(self.url + path) as response:
            response.raise_for_status()
            return await response.json()

    async def post(self, path: str, payload: dict | None = None):
        async with self.session.post(self.url + path, json=payload or {}) as response:
            text = await response.text()
            if response.status != 200:
                raise RuntimeError(f"POST {path}: {response.status} {text[:2000]}")
            return json.loads(text) if text else None

    async def run(self, prompt: dict, on_event=None) -> tuple[str, str, float]:
        """(prompt_id, 'success' | 'interrupted' | 'error: ...', seconds) once the prompt has finished."""
        started = time.monotonic()
        prompt_id = (await self.post("/prompt", {"prompt": prompt, "client_id": self.client_id}))["prompt_id"]
        async for message in self.socket:
            if message.type != aiohttp.WSMsgType.TEXT:
                continue
            event = json.loads(message.data)
            kind, data = event.get("type"), event.get("data") or {}
            if on_event is not None:
                await on_event(kind, data)
            if data.get("prompt_id") not in (None, prompt_id):
                continue
            if kind == "execution_success":
                return prompt_id, "success", time.monotonic() - started
            if kind == "execution_interrupted":
                return prompt_id, "interrupted", time.monotonic() - started
            if kind == "execution_error":
                return prompt_id, f"error: {data.get('exception_message')}", time.monotonic() - started
        raise RuntimeError("the websocket closed before the prompt finished")


async def main(args) -> None:
    from zerase_core.formats.erasure_file import read_erasure
    models = Path(args.models)
    async with Client(args.url) as client:
        info = await client.get("/object_info")
        print(f"/object_info: {len(info)} node types; ours: {[name for name in OUR_NODES if name in info]}")
        missing_tooltips = [f"{node}.{name}" for node in OUR_NODES
                            for section in ("required", "optional")
                            for name, spec in info[node]["input"].get(section, {}).items()
                            if not (len(spec) > 1 and spec[1].get("tooltip"))]
        print(f"inputs without tooltip: {missing_tooltips or 'none'}")

        demo = workflow("nano-demo")
        if args.steps:
            demo["2"]["inputs"]["steps"] = args.steps
        points = []

        async def count(kind, data):
            if kind == "zerase.train":
                points.append(data)

        prompt_id, status, seconds = await client.run(demo, count)
        print(f"nano demo ({demo['2']['inputs']['steps']} steps): {status} in {seconds:.1f} s; "
              f"{len(points)} zerase.train events (chart points)")
        history = (await client.get(f"/history/{prompt_id}"))[prompt_id]
        report = history["outputs"].get("3", {}).get("text", ["(no report)"])[0]
        print("ErasureCompare report:\n" + report)
        print("grid image:", history["outputs"].get("3", {}).get("images"))

        interrupt_at, after = args.interrupt_at, []

        async def interrupt(kind, data):
            if kind == "zerase.train":
                after.append(data["step"])
                if data["step"] == interrupt_at:
                    await client.post("/interrupt")

        _, status, seconds = await client.run(training_only(save_name="interrupt-test", steps=200), interrupt)
        partial, _, state = read_erasure(models / "interrupt-test.safetensors")
        print(f"interrupt sent at step {interrupt_at}: {status} after {seconds:.1f} s; last step event {max(after)}; "
              f"partial file: partial={partial.partial}, steps_done={partial.steps_done}/{partial.steps_total}, "
              f"{len(state)} resume tensors")
        resumed = training_only(save_name="interrupt-test", resume_from="interrupt-test.safetensors")
        _, status, seconds = await client.run(resumed)
        final, _, _ = read_erasure(models / "interrupt-test.safetensors")
        print(f"resume: {status} in {seconds:.1f} s; steps_done={final.steps_done}/{final.steps_total}, "
              f"partial={final.partial}")

        if args.cli_file:
            import torch
            _, status, seconds = await client.run(training_only(save_name="agree-20", steps=20))
            node_info, node_tensors, _ = read_erasure(models / "agree-20.safetensors")
            cli_info, cli_tensors, _ = read_erasure(args.cli_file)
            worst = max(float((node_tensors[key] - value).norm() / value.norm().clamp_min(1e-12))
                        for key, value in cli_tensors.items())
            print(f"20-step node run: {status} in {seconds:.1f} s; adapter tensors: max relative L2 difference "
                  f"{worst:.2e} over {len(cli_tensors)} tensors")
            worst_metric = {}
            for (_, ours), (_, theirs) in zip(node_info.training["state"]["history"],
                                              cli_info.training["state"]["history"]):
                for name in ("loss_erase", "loss_attention", "loss_preserve", "lambda"):
                    if name in theirs:
                        difference = abs(ours[name] - theirs[name]) / max(abs(theirs[name]), 1e-12)
                        worst_metric[name] = max(worst_metric.get(name, 0.0), difference)
            print("per-step metrics, max relative difference:", {k: f"{v:.1e}" for k, v in worst_metric.items()})
            print("final (node, CLI):", {name: (node_info.summary.get(name), cli_info.summary.get(name))
                                         for name in ("loss_erase", "loss_attention", "loss_preserve", "lambda")})
            del torch


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:8188")
    parser.add_argument("--models", required=True, help="the server's models/zerase folder")
    parser.add_argument("--steps", type=int, default=0, help="override the demo's training steps (0 = as shipped)")
    parser.add_argument("--interrupt-at", type=int, default=5)
    parser.add_argument("--cli-file", help="a `python -m zerase_core erase --concept star --steps 20` output file")
    asyncio.run(main(parser.parse_args()))
