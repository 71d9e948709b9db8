"""erase-many and joint data-parallel erasure: the concept list, the 1/N merged file, and real torchrun launches
with 2 gloo processes on the nano model (few steps): sharding, failures, skip, resume after a killed rank, DDP."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from zerase_fixtures import dit_output, randomized_dit

from zerase_core.adapters.gated import AdapterSet
from zerase_core.concept_list import ConceptListError, assign, parse_concepts
from zerase_core.engine.erase_config import EraseConfig
from zerase_core.formats.erasure_file import (
    ErasureInfo,
    adapter_dict,
    apply_erasures,
    load_erasure,
    read_erasure,
    save_erasure,
)
from zerase_core.formats.merge import merge_files
from zerase_core.model.checkpoint import fingerprint

ROOT = Path(__file__).resolve().parents[1]
FAST = ["--steps", "3", "--pool-prompts", "4", "--sample-steps", "3", "--no-strength-search"]


def test_concept_list_syntax_and_sharding():
    entries = parse_concepts("# list\n\nstar\nred | kind=attribute\ncircle | anchor=a red square | anchor=a blue disc\n"
                             "star + red | name=Both\n".replace("Both", "both"), "list.txt")
    assert [entry.name for entry in entries] == ["star", "red", "circle", "both"]
    assert entries[1].kind == "attribute" and entries[2].anchors == ("a red square", "a blue disc")
    assert entries[3].concepts == ("star", "red") and entries[3].line == 6
    shards = [assign(entries, rank, 3) for rank in range(3)]
    assert [[entry.name for entry in shard] for shard in shards] == [["star", "both"], ["red"], ["circle"]]
    assert sorted(entry.name for shard in shards for entry in shard) == sorted(entry.name for entry in entries)
    for text, message in (("star\nstar\n", "already used on line 1"), ("red | kind=colour", "kind='colour'"),
                          ("red | colour=1", "key=value"), ("red | name=../x", "name='../x'"), ("a + ", "empty concept"),
                          ("# nothing\n", "names no concept")):
        with pytest.raises(ConceptListError, match=message.replace("(", r"\(").replace(".", r"\.")):
            parse_concepts(text, "list.txt")


def _random_erasure(model, path, rank, slices, seed, strength):
    torch.manual_seed(seed)
    config = EraseConfig(rank=rank, slices=slices).adapter_config()
    adapters = AdapterSet(model, config)
    with torch.no_grad():
        for parameter in adapters.parameters():
            parameter.normal_(0, 0.05)
    info = ErasureInfo(method="zerase", concepts=(f"c{seed}",), adapter=adapter_dict(config),
                       base_fingerprint=fingerprint(model), base_config=model.config.to_dict(),
                       recommended_strength=strength, steps_done=1, steps_total=1)
    return save_erasure(path, adapters, info)


@pytest.mark.parametrize("ranks", [(4, 8), (200, 100)])      # stacked ranks; past 256: SVD (exact: rank ≤ dim 256)
def test_merged_file_is_the_one_over_n_merge(tmp_path, ranks):
    model = randomized_dit()
    files = [_random_erasure(model, tmp_path / "a.safetensors", ranks[0], ("q", "k"), 1, 0.7),
             _random_erasure(model, tmp_path / "b.safetensors", ranks[1], ("q", "k", "v"), 2, 1.3)]
    merged = merge_files(files, tmp_path / "ab.safetensors")
    info = read_erasure(merged)[0]
    assert info.concepts == ("c1", "c2") and info.adapter["slices"] == ["q", "k", "v"]
    assert info.adapter["rank"] == min(256, sum(ranks)) and info.summary["svd_truncated"] == (sum(ranks) > 256)
    base = dit_output(model)
    sets = [load_erasure(path, model)[0] for path in files]
    with apply_erasures(model, [(adapters, None) for adapters in sets]):
        expected = dit_output(model)
    adapters, _ = load_erasure(merged, model)
    adapters.attach(model)
    try:
        got = dit_output(model)
    finally:
        adapters.detach()
    assert (expected - base).abs().max() > 1e-3                     # the erasures do change the output
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="partial"):
        partial = tmp_path / "p.safetensors"
        info_a, tensors, _ = read_erasure(files[0])
        save_erasure(partial, tensors, ErasureInfo(**{**info_a.__dict__, "partial": True}))
        merge_files([files[0], partial], tmp_path / "x.safetensors")


def _torchrun(arguments, processes=2, **kwargs):
    environment = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={processes}",
               *arguments]
    return subprocess.Popen(command, cwd=ROOT, env=environment, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True, **kwargs)


def _finish(process, timeout=180):
    output, _ = process.communicate(timeout=timeout)
    return process.returncode, output


def test_torchrun_shards_records_failures_and_merges(tmp_path):
    concepts = tmp_path / "list.txt"
    concepts.write_text("star\nred | kind=attribute\nbogus\ncircle | anchor=a red square\n")
    out = tmp_path / "out"
    code, output = _finish(_torchrun(["-m", "zerase_core", "erase-many", str(concepts), "--out-dir", str(out),
                                      "--merge", "all", *FAST]))
    assert code != 0, output                      # one entry failed: exit status 1 from rank 0
    summary = json.loads((out / "summary.json").read_text())
    records = {record["name"]: record for record in summary["entries"]}
    assert [record["rank"] for record in summary["entries"]] == [0, 1, 0, 1]      # entry i on rank i % 2
    assert records["bogus"]["status"] == "failed" and "bogus" in records["bogus"]["error"]
    assert all(records[name]["status"] == "done" for name in ("star", "red", "circle"))
    assert summary["merged"]["names"] == ["star", "red", "circle"]
    assert read_erasure(out / "all.safetensors")[0].concepts == ("star", "red", "circle")
    assert read_erasure(out / "red.safetensors")[0].training["config"]["concept_kind"] == "attribute"
    assert "bogus" in (out / "summary.txt").read_text() and "[rank 1/2]" in output
    concepts.write_text("star\nred | kind=attribute\ncircle | anchor=a red square\n")
    code, output = _finish(_torchrun(["-m", "zerase_core", "erase-many", str(concepts), "--out-dir", str(out), *FAST]))
    assert code == 0, output
    assert {r["status"] for r in json.loads((out / "summary.json").read_text())["entries"]} == {"skipped"}


# two torchrun launches, about 30 s on 2 cores; in the default run (issue 17: resume after a killed rank in CI)
def test_killed_rank_resumes_from_its_checkpoint(tmp_path):
    concepts = tmp_path / "list.txt"
    concepts.write_text("star\nred\n")
    out = tmp_path / "out"
    arguments = ["-m", "zerase_core", "erase-many", str(concepts), "--out-dir", str(out), "--steps", "40",
                 "--pool-prompts", "4", "--sample-steps", "3", "--no-strength-search", "--checkpoint-every", "2",
                 "--progress-every", "0"]
    process = _torchrun(arguments)
    partial, deadline = out / "red.safetensors", time.monotonic() + 120
    while not partial.exists() and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.05)
    assert partial.exists(), "rank 1 wrote no checkpoint"
    pid = json.loads((out / "erase-many" / "rank-1.json").read_text())["pid"]
    os.kill(pid, signal.SIGKILL)                              # rank 1 dies; torchrun stops rank 0 too
    code, _ = _finish(process)
    assert code != 0
    killed = read_erasure(partial)[0]
    assert killed.partial and 0 < killed.steps_done < 40
    code, output = _finish(_torchrun(arguments))
    assert code == 0, output
    records = {r["name"]: r for r in json.loads((out / "summary.json").read_text())["entries"]}
    assert records["red"]["status"] == "resumed" and records["red"]["rank"] == 1
    assert records["star"]["status"] in ("done", "resumed", "skipped")
    finished = read_erasure(partial)[0]
    assert not finished.partial and finished.steps_done == 40


@pytest.mark.parametrize("staged", ["whole", "staged"])
def test_joint_ddp_equals_one_process(tmp_path, staged):
    # "staged": checkpointed blocks, so the step's terms are released one forward at a time (engine/gradients) inside
    # DDP's forward, without its sync; the trainer averages the gradients itself
    script = tmp_path / "joint.py"
    script.write_text(JOINT_SCRIPT)
    code, output = _finish(_torchrun([str(script), str(tmp_path / "ddp.pt"), staged]))
    assert code == 0, output
    environment = {**os.environ, "PYTHONPATH": str(ROOT)}
    single = subprocess.run([sys.executable, str(script), str(tmp_path / "one.pt"), staged], cwd=ROOT,
                            env=environment, capture_output=True, text=True, timeout=180)
    assert single.returncode == 0, single.stderr
    ddp, one = torch.load(tmp_path / "ddp.pt"), torch.load(tmp_path / "one.pt")
    assert ddp["world"] == 2 and one["world"] == 1
    assert ddp["metrics"].keys() == one["metrics"].keys() and "stationarity" in one["metrics"]
    for name in one["metrics"]:
        assert ddp["metrics"][name] == pytest.approx(one["metrics"][name], rel=1e-5, abs=1e-9), name
    for key, value in one["adapters"].items():
        assert value.dtype == torch.float64
        torch.testing.assert_close(ddp["adapters"][key], value, rtol=0, atol=1e-8)
    assert any(value.abs().max() > 0 for key, value in one["adapters"].items() if ".up." in key)


JOINT_SCRIPT = '''
import sys
import torch
from zerase_core.engine.distributed import DataParallel, launch, shutdown
from zerase_core.engine.erase_config import EraseConfig
from zerase_core.nano.erasure_runs import prompt_set
from zerase_core.nano.prompts import NanoConditioner
from zerase_core.nano.world import NanoWorld
from zerase_core.engine.trainer import EraseTrainer

torch.set_num_threads(1)
# float64 with the default (anchor) target: the pipeline keeps ComfyUI's float32 casts (rope, timestep features,
# teacher velocities), so in float32 the adapters of DDP and one process differed by up to 9.5e-6 after 3 steps
# (Adam's first update lr·g/(|g| + eps) turns rounding in near-zero gradients into differences); in float64 the
# same run differs by 1.1e-9, while a wrong split of the batch or of the mapped trajectories shows at 1e-4 and more
torch.set_default_dtype(torch.float64)
place = launch()
world = NanoWorld.load()
world.dit.double()
world.text_encoder.double()
world.dit.gradient_checkpointing = sys.argv[2] == "staged"
config = EraseConfig(steps=3, batch_size=4, probe_size=2, pool_prompts=4, sample_steps=3, stationarity_every=2, seed=3)
trainer = EraseTrainer(world.dit, NanoConditioner(world.text_encoder), prompt_set(["star", "red"], None, 3), config,
                       in_channels=16, shift=world.dit.config.shift,
                       parallel=DataParallel(place) if place.world > 1 else None)
assert trainer._backward_per_forward() == (sys.argv[2] == "staged")
trainer.run()
if place.is_main:
    torch.save({"world": place.world,
                "adapters": {key: value.detach().clone() for key, value in trainer.adapters.state_dict().items()},
                "metrics": trainer.history[-1].metrics | {"stationarity": trainer.history[1].metrics["stationarity"]}},
               sys.argv[1])
shutdown(place)
'''
