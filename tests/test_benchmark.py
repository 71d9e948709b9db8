"""The benchmark runner on a small random nano world: cells, per-cell resume, plan checks, tables, sweep plot."""
import json

import pytest
import torch
from evaluation_worlds import one_thread, tiny_nano_world  # noqa: F401 (autouse fixture)
from PIL import Image
from zerase_fixtures import randomized_dit

from zerase_core.cli import build_parser
from zerase_core.cli.bench import plan_from_arguments, sweep_plot, tables
from zerase_core.evaluation.benchmark import BenchPlan, Cell, run_benchmark
from zerase_core.evaluation.concept_sets import SetSizes
from zerase_core.evaluation.plot import Panel, line_chart
from zerase_core.evaluation.protocol import EvaluationSettings
from zerase_core.evaluation.rendering import SamplingSettings
from zerase_core.formats.erasure_file import read_erasure
from zerase_core.nano.erasure_runs import erase

TINY_TRAINING = {"pool_prompts": 2, "sample_steps": 2, "sample_cfg": 1.0, "batch_size": 1}
TINY_EVALUATION = EvaluationSettings(sampling=SamplingSettings(steps=2, cfg=1.0), sizes=SetSizes(erase=4, keep=6, probe=4),
                                     attack_strengths=(1.0,))


def _plan(**changes) -> BenchPlan:
    values = dict(methods=("esd", "token-zeroing"), concepts=("circle",), seeds=(0,), steps=2, strength_search=False,
                  erase_overrides=TINY_TRAINING, evaluation=TINY_EVALUATION)
    return BenchPlan(**{**values, **changes})


@pytest.fixture(scope="module")
def world():
    return tiny_nano_world(randomized_dit(seed=2))


def test_benchmark_runs_every_cell_then_resumes_without_redoing_any(world, tmp_path):
    state_path, events = tmp_path / "bench.json", []
    state = run_benchmark(world, _plan(), state_path, on_event=events.append)
    assert sorted(state["rows"]) == ["esd-circle-seed0", "token-zeroing-circle-seed0"]
    row = state["rows"]["esd-circle-seed0"]
    for key in ("acc_e", "acc_ir", "h", "collapse", "attack_success", "train_seconds"):
        assert isinstance(row[key], float), key
    assert row["base"]["acc_e"] == state["base"]["circle"]["acc_e"]
    assert json.loads(state_path.read_text()) == json.loads(json.dumps(state))
    trained = tmp_path / "bench-files" / "esd-circle-seed0.safetensors"
    written = trained.stat().st_mtime_ns
    events.clear()
    again = run_benchmark(world, _plan(), state_path, on_event=events.append)
    assert events == [] and again["rows"] == state["rows"] and trained.stat().st_mtime_ns == written
    table = tables(again, _plan())
    assert "| esd | circle | 1 |" in table and "| token-zeroing | 1 |" in table and "| base | circle |" in table


def test_an_interrupted_cell_resumes_its_partial_erasure_file(world, tmp_path):
    plan = _plan(methods=("esd",), steps=3)
    cell = Cell("esd", "circle", 0)
    path = tmp_path / "bench-files" / f"{cell.name}.safetensors"
    path.parent.mkdir()

    def stop_after_one(step, total, metrics):
        if step == 1:
            raise RuntimeError("interrupted")

    with pytest.raises(RuntimeError, match="interrupted"):
        erase(world, ["circle"], plan.config(cell), path, on_step=stop_after_one, choose_strength=False)
    assert read_erasure(path)[0].partial
    events = []
    state = run_benchmark(world, plan, tmp_path / "bench.json", on_event=events.append)
    assert any("resuming" in event and "1/3" in event for event in events)
    info = read_erasure(path)[0]
    assert not info.partial and info.steps_done == 3 and state["rows"][cell.name]["acc_e"] is not None


def test_a_state_file_from_other_settings_is_refused_with_the_fix(world, tmp_path):
    state_path = tmp_path / "bench.json"
    run_benchmark(world, _plan(methods=("token-zeroing",)), state_path)
    with pytest.raises(ValueError, match=r"other settings \(\['steps'\]\).*another\s+--json"):
        run_benchmark(world, _plan(methods=("token-zeroing",), steps=5), state_path)


def test_unknown_methods_and_concepts_are_rejected_before_any_work():
    with pytest.raises(ValueError, match="unknown benchmark method"):
        _plan(methods=("zerase", "magic"))
    with pytest.raises(ValueError, match="not in the nano vocabulary"):
        _plan(concepts=("unicorn",))


def test_quick_and_sweep_plans_from_the_command_line():
    parser = build_parser()
    quick = plan_from_arguments(parser.parse_args(["bench", "--quick"]))
    assert quick.methods == ("zerase", "esd", "naive-esd") and quick.concepts == ("circle",) and quick.seeds == (0,)
    assert not quick.strength_search and len(quick.cells()) == 3
    full = plan_from_arguments(parser.parse_args(["bench"]))
    assert {"zerase-fixed0", "zerase-fixed", "token-zeroing", "uce-text"} <= set(full.methods)
    assert len(full.concepts) >= 3 and len(full.seeds) >= 2
    sweep = plan_from_arguments(parser.parse_args(["bench", "--sweep", "both", "--seeds", "0"]))
    assert {cell.overrides[0][0] for cell in sweep.cells()} == {"epsilon", "beta"}
    assert not sweep.evaluation.probes
    assert sweep.config(sweep.cells()[0]).epsilon == 0.0


def test_sweep_runs_zerase_per_value_and_draws_a_plot(world, tmp_path):
    plan = _plan(methods=(), sweep=(("beta", (0.1, 1.0)),), steps=2)
    state = run_benchmark(world, plan, tmp_path / "sweep.json")
    assert sorted(row["beta"] for row in state["rows"].values()) == [0.1, 1.0]
    assert "| 0.1 | 1 |" in tables(state, plan)
    path = sweep_plot(state, plan, tmp_path / "sweep.png")
    assert Image.open(path).size == (420, 300)


def test_line_chart_puts_each_point_where_its_value_says(tmp_path):
    panel = Panel("t", ("0", "1"), {"Acc_e": [1.0, -0.2], "Acc_ir": [-0.2, 1.0]}, y_range=(-0.2, 1.0))
    picture = Image.open(line_chart([panel, panel], tmp_path / "chart.png"))
    assert picture.size == (840, 300)
    # plot box x 48..404, y 28..260; two categories at 1/4 and 3/4 of the width; the top edge is y = 1.0
    assert picture.getpixel((137, 28)) == (214, 39, 40) and picture.getpixel((315, 28)) == (31, 119, 180)
    assert picture.getpixel((420 + 137, 28)) == (214, 39, 40)
    with pytest.raises(ValueError, match="has 1 values for 2 x labels"):
        Panel("t", ("0", "1"), {"Acc_e": [1.0]})


def test_a_diverging_method_is_recorded_as_diverged_not_retried(tmp_path):
    broken = tiny_nano_world(randomized_dit(seed=2))
    with torch.no_grad():
        broken.dit.final_layer.linear.bias.fill_(float("nan"))     # every velocity is NaN: the first loss is too
    plan, events = _plan(methods=("esd",)), []
    state = run_benchmark(broken, plan, tmp_path / "bench.json", on_event=events.append)
    row = state["rows"]["esd-circle-seed0"]
    assert "non-finite loss" in row["diverged"] and isinstance(row["collapse"], float)
    assert "(diverged in 1)" in tables(state, plan)
    events.clear()
    run_benchmark(broken, plan, tmp_path / "bench.json", on_event=events.append)
    assert events == []
