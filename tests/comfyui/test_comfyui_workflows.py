"""Every nano example workflow (its API copy) run through ComfyUI's own executor (validation + PromptExecutor) on
CPU, including an interrupt that leaves a resumable partial file. That the editor files queue exactly these API
copies is checked in the real page: test_frontend_workflows.py.

Training steps are cut to a few (random nano weights; the full-length runs are the acceptance runs against a server).
"""
from __future__ import annotations

import asyncio
import copy
import json
import sys
from pathlib import Path

import pytest
import torch
from comfy_support import REPO_ROOT

from zerase_core.formats.erasure_file import read_erasure

sys.path.insert(0, str(REPO_ROOT / "scripts"))
from workflow_sources import NANO_DEMO, WORKFLOWS  # noqa: E402

FAST = {"ZEraseTrain": {"steps": 4}, "ErasureCompare": {"steps": 4}, "KSampler": {"steps": 4}}


class RecordingServer:
    """What PromptExecutor and our nodes need of ComfyUI's server: events are recorded, `on_event` may react."""

    def __init__(self):
        self.client_id, self.last_node_id, self.last_prompt_id = None, None, None
        self.events: list[tuple[str, dict]] = []
        self.on_event = None

    def send_sync(self, event, data, sid=None):
        self.events.append((event, data))
        if self.on_event is not None:
            self.on_event(event, data)

    def __getattr__(self, name):
        return lambda *args, **kwargs: None


@pytest.fixture(scope="module")
def server(pack, nano_weights):
    import server as comfy_server
    recording = RecordingServer()
    saved = getattr(comfy_server.PromptServer, "instance", None)
    comfy_server.PromptServer.instance = recording
    yield recording
    comfy_server.PromptServer.instance = saved


def run(prompt: dict, server: RecordingServer):
    import execution
    valid, error, outputs, node_errors = asyncio.run(execution.validate_prompt("zerase-test", prompt, None))
    assert valid, f"{error} {node_errors}"
    executor = execution.PromptExecutor(server, cache_type=execution.CacheType.CLASSIC,
                                        cache_args={"lru": 0, "ram": 0, "ram_inactive": 0})
    executor.execute(prompt, "zerase-test", {}, outputs)
    return executor


def fast(prompt: dict, **extra) -> dict:
    prompt = copy.deepcopy(prompt)
    for node in prompt.values():
        node["inputs"].update(FAST.get(node["class_type"], {}))
        node["inputs"].update(extra.get(node["class_type"], {}))
    return prompt


def api(workflow) -> dict:
    return json.loads(workflow.api_path.read_text())


def test_every_nano_workflow_runs_through_the_executor(server):
    # the demo first: it writes nano-star.safetensors, which the others apply
    nano = [NANO_DEMO] + [workflow for workflow in WORKFLOWS if workflow.runs_on_cpu and workflow is not NANO_DEMO]
    for workflow in nano:
        server.events.clear()
        executor = run(fast(api(workflow)), server)
        assert executor.success, f"{workflow.name}: {executor.status_messages[-1]}"
    info, _, _ = read_erasure(Path(_erasure_folder()) / "nano-star.safetensors")
    assert not info.partial and info.steps_done == 4


def test_interrupt_stops_within_a_step_and_the_partial_file_resumes(server):
    import comfy.model_management
    prompt = fast(api(NANO_DEMO), ZEraseTrain={"save_name": "interrupted", "steps": 6})
    del prompt["3"], prompt["4"]                             # training only

    def interrupt_at_two(event, data):
        if event == "zerase.train" and data["step"] == 2:
            comfy.model_management.interrupt_current_processing(True)

    server.on_event = interrupt_at_two
    try:
        executor = run(prompt, server)
    finally:
        server.on_event = None
    assert not executor.success
    assert any(event == "execution_interrupted" for event, _ in executor.status_messages)
    steps_seen = [data["step"] for event, data in server.events if event == "zerase.train"]
    assert max(steps_seen) == 2, f"training went on after the interrupt: steps {steps_seen}"
    partial = Path(_erasure_folder()) / "interrupted.safetensors"
    info, _, state = read_erasure(partial)
    assert info.partial and info.steps_done == 2 and state

    resumed = copy.deepcopy(prompt)
    resumed["2"]["inputs"].update(resume_from="interrupted.safetensors", save_name="interrupted")
    assert run(resumed, server).success
    straight = copy.deepcopy(prompt)
    straight["2"]["inputs"].update(save_name="straight")
    assert run(straight, server).success
    _, resumed_tensors, _ = read_erasure(partial)
    final_info, straight_tensors, _ = read_erasure(Path(_erasure_folder()) / "straight.safetensors")
    assert final_info.steps_done == 6
    for key, value in straight_tensors.items():
        torch.testing.assert_close(resumed_tensors[key], value, rtol=1e-4, atol=1e-6)


def _erasure_folder() -> str:
    import folder_paths
    return folder_paths.get_folder_paths("zerase")[0]
