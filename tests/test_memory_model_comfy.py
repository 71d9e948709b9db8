"""The memory model's ComfyUI path (ZEraseTrain on a GPU): comfy_problem, the reserve it asks ComfyUI for, the pool
build batch that fits, and the issue-16 goal rows (docs/performance.md, scripts/comfy_vram_table.py)."""
from __future__ import annotations

import dataclasses

from zerase_core.engine import memory_model
from zerase_core.model.config import DiTConfig

TURBO = DiTConfig.turbo()


def test_the_512_batch_1_goal_rows_with_checkpointing():
    bf16 = memory_model.predict(memory_model.comfy_problem(TURBO, 512, weight_bytes=2))
    fp8 = memory_model.predict(memory_model.comfy_problem(TURBO, 512, weight_bytes=1))
    assert bf16["peak_gb"] <= 15 and fp8["peak_gb"] <= 9
    assert bf16["weights"] > 0.85 * bf16["peak_gb"]              # the weights dominate
    assert fp8["cast_copies"] > 0 == bf16["cast_copies"]          # fp8 weights are cast per op, bf16 are not


def test_without_checkpointing_fp8_keeps_a_cast_copy_of_the_weights_per_live_forward():
    problem = memory_model.comfy_problem(TURBO, 512, weight_bytes=1, checkpointing=False)
    result = memory_model.predict(problem)
    weights_bf16 = memory_model.parameter_count(TURBO) * 2 / memory_model.GB
    # ZEraseTrain's erase, ∅ and anchor forwards run apart, each freed by its backward (engine/gradients): one lives
    assert problem.staged
    assert abs(result["cast_copies"] - weights_bf16) < 1e-6
    together = memory_model.predict(dataclasses.replace(problem, separate_forwards=False))
    assert abs(together["cast_copies"] - 3 * weights_bf16) < 1e-6   # one backward: all three forwards' copies
    assert result["peak_gb"] > 2.5 * memory_model.predict(dataclasses.replace(problem, checkpointing=True))["peak_gb"]


def test_reserve_is_what_training_needs_beside_the_weights():
    problem = memory_model.comfy_problem(TURBO, 1024, weight_bytes=2, build_batch=4)
    result = memory_model.predict(problem)
    reserve = memory_model.training_reserve_bytes(problem) / memory_model.GB
    assert abs(reserve - (result["peak_gb"] - result["weights"])) < 1e-6


def test_build_batch_fits_its_budget_and_stays_between_1_and_the_largest():
    length = memory_model.tokens(TURBO, 512, 64)["caption"]
    per_forward = length * (3 * 2 * TURBO.ffn_hidden + 55 * TURBO.dim)
    assert memory_model.build_batch_within(TURBO, 512, 64, 4.5 * per_forward, 32) == 4
    assert memory_model.build_batch_within(TURBO, 512, 64, 0.0, 32) == 1
    assert memory_model.build_batch_within(TURBO, 512, 64, 1e15, 32) == 32
    assert memory_model.build_batch_within(TURBO, 1024, 64, 4.5 * per_forward, 32) < 4


def test_table_has_every_size_dtype_checkpointing_and_batch():
    rows = memory_model.comfy_table()
    assert len(rows) == 16
    assert {(row["size"], row["dtype"]) for row in rows} == {(512, "bf16"), (512, "fp8"), (1024, "bf16"),
                                                             (1024, "fp8")}
