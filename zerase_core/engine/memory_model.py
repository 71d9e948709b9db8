"""Peak memory of an erasure step from the architecture and measured per-block numbers (docs/performance.md).

    peak_step  = R0 + R1 + W + A + C + S + Σ_f H_f + X      peak_build = R0 + R1 + W + C + S + b·L·ν

R0   the process before the model: on the CPU python + torch RSS (measured at start); on a GPU 0 (the CUDA context,
     ~0.5 GiB, is outside the allocator's count)
R1   CPU only: oneDNN/allocator working set after the first large forward, 0.11 GiB measured at width 3840
W    weights: parameters × bytes of the weight dtype (6.155e9 × 2 B = 11.46 GiB for Z-Image-Turbo in bf16)
A    adapters: trainable parameters × 4 B × 5 (fp32 value, gradient, AdamW m and v, the trainer's last-finite copy)
C    x_t pool (erase and anchor trajectories) + teacher cache, P·K·(2 + 3·cache)·C·h·w·4 B, in CPU memory (on a GPU
     the engine keeps them on the CPU)
S    CPU, core model, cache on: the kept refiner outputs, (P·K·(2 or 3)·image span + (2P + 1)·text span)·d·a
H_f  activations of student forward f kept until the backward (zerase: the erase forward with attention capture, ∅
     and the anchor; plain LoRA / esd: one forward; max_f instead of Σ_f when staged), per joint layer and sample:
       no checkpointing   σ(L) (the erase forward's keyword capture reruns in the backward: keyword_attention)
       checkpointing      L·d·a, the block input (+ the kept keyword maps, 4·H·N·K)
X    backward transient, with checkpointing: ξ·B·(σ(L) + κ(L)) for the longest forward (autograd's σ): the recomputed
     block, its gradients, temporaries and allocator slack; ξ = 3.5 on the CPU, 2 assumed on CUDA (gpu_check.sh).
     Without checkpointing: the hidden-state gradients, 2·B·L·d·4.
σ(L) = L·(α·d + β·f) + γ·d  bytes one joint block keeps for the backward per sample (α, β, γ fitted to measurements)
κ(L) = 4·(2·N + L)·d with bf16 activations (the keyword attention's fp32 queries, keys, output), 4·N·d with fp32:
     what autograd alone would keep of the capture, now only in X (its rerun in the backward)
ν    = 3·a·f + 55·d  bytes per token of a no-grad forward's temporaries (measured at width 3840: 0.26 MB/token)
b    forwards per batch while building the pool and the teacher cache (EraseTrainer.sample_batch / cache_batch)

L = text + image span (each rounded up to the pad multiple), N image tokens, d dim, f FFN width, H heads,
a activation bytes (2 bf16, 4 fp32), K keyword tokens. σ (+ κ) measured: block_bytes.py."""

from __future__ import annotations

import functools
from dataclasses import dataclass, replace

from ..model.config import DiTConfig

GB = 2**30
# Saved bytes per joint block and sample without checkpointing, σ(L) = L·(α·d + β·f) + γ·d, on the CPU. "autograd":
# all that autograd alone keeps, a least-squares fit to measured totals (d 384/512, f 1024/1536, L 64/96, B 1/2; max
# error 0.9 %; 0.3 % at Turbo width, L = 320). "kept": the core model and ZEraseTrain's NextDiT (recomputed_ops)
# recompute their bf16 norms (layers.Recomputed: α refit 25.47 on d 384/512, L 96–192, B 1/2, ±1 %) and silu(w1·x)
# (layers.GatedSiLU: β lower by a). ξ was fitted to the autograd σ, so X keeps it.
SAVED_COEFFICIENTS = {
    "autograd": {2: (41.57, 5.56, 104.0), 4: (45.57, 11.56, 112.0)},
    "kept": {2: (25.47, 3.56, 104.0), 4: (45.57, 7.56, 112.0)},
}
RECOMPUTE_FACTOR = {"cpu": 3.5, "cuda": 2.0}  # ξ
CPU_LIBRARY_GB = 0.11  # R1


@dataclass(frozen=True)
class Problem:
    config: DiTConfig
    image_size: int  # pixels (latent = size/8, 2×2 patches)
    caption_tokens: int  # tokens of an erase/anchor caption; the empty prompt has 1
    batch: int = 1
    rank: int = 8
    slices: int = 2  # q and k
    weight_bytes: int = 2  # 1 for fp8-stored weights (ComfyUI's fp8_e4m3fn): activations stay bf16
    activation_bytes: int | None = None  # None: max(weight_bytes, 2)
    checkpointing: bool = True
    # how many joint blocks are checkpointed when `checkpointing` (the first ones); None: all of them
    checkpointed_layers: int | None = None
    method: str = "zerase"  # "zerase" (3 student forwards) or "plain" (1)
    keywords: int = 1
    pool: tuple[int, int] = (2, 9)  # (trajectories, steps)
    cache: bool = True
    build_batch: int = 2
    device: str = "cuda"
    runtime_gb: float = 0.0
    # ComfyUI's NextDiT (ZEraseTrain): each caption length runs as its own forward (no stacked padding), and fp8 or
    # partially loaded (lowvram) weights are cast per op to the activation dtype; autograd keeps those copies
    separate_forwards: bool = False
    cast_weights: bool = False
    # on a GPU: the x_t pool, teacher cache and kept refiner outputs on the device too (engine/pool.py: when they fit)
    store_on_device: bool = False

    @property
    def blocks(self) -> int:
        """Checkpointed joint blocks."""
        if not self.checkpointing:
            return 0
        layers = self.config.n_layers
        return layers if self.checkpointed_layers is None else max(0, min(layers, self.checkpointed_layers))

    @property
    def staged(self) -> bool:
        """L's backward one forward at a time (engine/gradients), as the trainer does when its forwards run apart."""
        return self.checkpointing or self.separate_forwards


def _round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


@functools.lru_cache(maxsize=32)
def parameter_count(config: DiTConfig) -> int:
    from ..model.dit import ZImageDiT

    return sum(p.numel() for p in ZImageDiT(config, device="meta").parameters())


def tokens(config: DiTConfig, image_size: int, caption_tokens: int) -> dict[str, int]:
    side = _round_up(image_size // 8, config.patch_size) // config.patch_size
    image = side * side
    span = _round_up(image, config.pad_tokens_multiple)
    return {
        "image": image,
        "caption": _round_up(caption_tokens, config.pad_tokens_multiple) + span,
        "empty": _round_up(1, config.pad_tokens_multiple) + span,
    }


def block_saved_bytes(
    config: DiTConfig, length: int, image: int, activation_bytes: int, capture: bool, autograd: bool = False
) -> float:
    """σ(L): bytes one joint block keeps for the backward, per sample, without checkpointing (`autograd`: all that
    autograd alone would keep, without the recomputed norms, gate and keyword capture; κ only then)."""
    alpha, beta, gamma = SAVED_COEFFICIENTS["autograd" if autograd else "kept"][activation_bytes]
    saved = length * (alpha * config.dim + beta * config.ffn_hidden) + gamma * config.dim
    if capture and autograd:
        saved += 4 * (2 * image + length) * config.dim if activation_bytes < 4 else 4 * image * config.dim
    return saved


def predict(problem: Problem) -> dict[str, float]:
    """Components and totals in GiB."""
    config, batch = problem.config, problem.batch
    a = problem.activation_bytes or max(problem.weight_bytes, 2)
    counts = tokens(config, problem.image_size, problem.caption_tokens)
    image = counts["image"]
    blocks = problem.blocks
    # without checkpointing the trainer stacks the three student forwards: ∅ rows pad to the caption's text span
    empty = counts["empty"] if problem.staged else counts["caption"]
    forwards = (
        [(counts["caption"], True), (empty, False), (counts["caption"], False)]
        if problem.method == "zerase"
        else [(counts["caption"], False)]
    )
    # a checkpointed block keeps its input (and the keyword maps), the others all they save for the backward
    kept = [
        blocks * batch * (length * config.dim * a + (4 * config.n_heads * image * problem.keywords if capture else 0))
        + (config.n_layers - blocks) * batch * block_saved_bytes(config, length, image, a, capture)
        for length, capture in forwards
    ]
    held = max(kept) if problem.staged else sum(kept)
    longest = max(length for length, _ in forwards)
    if blocks:
        factor = RECOMPUTE_FACTOR["cpu" if problem.device == "cpu" else "cuda"]
        capture = problem.method == "zerase"
        transient = factor * batch * block_saved_bytes(config, longest, image, a, capture, autograd=True)
    else:
        transient = 2 * batch * longest * config.dim * 4
    adapters = config.n_layers * problem.slices * problem.rank * 2 * config.dim * 4 * 5
    latent = config.in_channels * (problem.image_size // 8) ** 2 * 4
    trajectories, steps = problem.pool
    on_cpu = problem.device == "cpu" or problem.store_on_device
    # x_t of the erase and the anchor trajectories, three teacher velocities per state
    cache = trajectories * steps * (2 + 3 * problem.cache) * latent if on_cpu else 0.0
    segments = _segment_bytes(config, counts, trajectories, steps, a) if on_cpu and problem.cache else 0.0
    weights = parameter_count(config) * problem.weight_bytes
    build = problem.build_batch * counts["caption"] * (3 * a * config.ffn_hidden + 55 * config.dim)
    runtime = (problem.runtime_gb + (CPU_LIBRARY_GB if problem.device == "cpu" else 0.0)) * GB
    parts = {
        "runtime": runtime,
        "weights": weights,
        "adapters": adapters,
        "cache": cache,
        "segments": segments,
        "activations": held,
        "backward_transient": transient,
        "cast_copies": _cast_copy_bytes(problem, a, 1 if problem.staged else len(forwards))
        if problem.cast_weights
        else 0.0,
    }
    result = {name: value / GB for name, value in parts.items()}
    result["step_peak_gb"] = sum(parts.values()) / GB
    cast_build = _cast_copy_bytes(replace(problem, checkpointing=True), a, 1) if problem.cast_weights else 0.0
    result["build_peak_gb"] = (runtime + weights + cache + segments + build + cast_build) / GB
    result["peak_gb"] = max(result["step_peak_gb"], result["build_peak_gb"])
    result["tokens"] = counts["caption"]
    return result


@functools.lru_cache(maxsize=32)
def block_parameter_count(config: DiTConfig) -> int:
    """Parameters of one joint block."""
    from ..model.dit import ZImageDiT

    model = ZImageDiT(config, device="meta")
    return sum(p.numel() for p in model.layers[0].parameters())


def _cast_copy_bytes(problem: Problem, activation_bytes: int, forwards: int) -> float:
    """ComfyUI's per-op cast of fp8 / offloaded weights: without checkpointing autograd keeps every block's copy
    once per forward; with checkpointing one block's copies live while it is recomputed (plus the op in flight)."""
    config = problem.config
    block = block_parameter_count(config) * activation_bytes
    blocks = problem.blocks
    if blocks == config.n_layers:
        return 2 * block
    if blocks == 0:
        return forwards * (parameter_count(config) * activation_bytes)
    return forwards * (config.n_layers - blocks) * block + 2 * block


def comfy_problem(
    config: DiTConfig,
    image_size: int,
    weight_bytes: int = 2,
    checkpointing: bool = True,
    batch: int = 1,
    rank: int = 8,
    caption_tokens: int = 64,
    build_batch: int = 4,
    offloaded: bool = False,
    checkpointed_layers: int | None = None,
) -> Problem:
    """ZEraseTrain on a GPU: ComfyUI's NextDiT, the pool and teacher cache in CPU memory (`NextDiTDenoiser` returns
    CPU velocities), weights cast per op when stored in fp8 or partially loaded."""
    return Problem(
        config=config,
        image_size=image_size,
        caption_tokens=caption_tokens,
        batch=batch,
        rank=rank,
        weight_bytes=weight_bytes,
        checkpointing=checkpointing,
        checkpointed_layers=checkpointed_layers,
        build_batch=build_batch,
        device="cuda",
        separate_forwards=True,
        cast_weights=weight_bytes < 2 or offloaded,
    )


def training_reserve_bytes(problem: Problem) -> int:
    """What training needs on the device beside the weights: the larger of the step's and the build's extra."""
    result = predict(problem)
    weights = result["weights"]
    return int(max(result["step_peak_gb"] - weights, result["build_peak_gb"] - weights) * GB)


def build_batch_within(
    config: DiTConfig,
    image_size: int,
    caption_tokens: int,
    budget_bytes: float,
    largest: int,
    activation_bytes: int = 2,
) -> int:
    """The most forwards per pool / teacher-cache batch whose temporaries (b·L·ν) fit `budget_bytes`, 1..largest."""
    length = tokens(config, image_size, caption_tokens)["caption"]
    per_forward = length * (3 * activation_bytes * config.ffn_hidden + 55 * config.dim)
    return max(1, min(largest, int(budget_bytes // per_forward)))


def comfy_table(config: DiTConfig | None = None) -> list[dict]:
    """Predicted peak device memory of ZEraseTrain for Z-Image-Turbo: 512² and 1024², bf16 and fp8 weights, with
    and without per-block checkpointing, batch 1 and 4 (allocated bytes; add ~0.5 GiB CUDA context)."""
    config = config or DiTConfig()
    rows = []
    for size in (512, 1024):
        for weight_bytes, dtype in ((2, "bf16"), (1, "fp8")):
            for checkpointing in (True, False):
                for batch in (1, 4):
                    result = predict(comfy_problem(config, size, weight_bytes, checkpointing, batch))
                    rows.append(
                        {
                            "size": size,
                            "dtype": dtype,
                            "checkpointing": checkpointing,
                            "batch": batch,
                            **{key: round(value, 2) for key, value in result.items() if key != "tokens"},
                        }
                    )
    return rows


def _segment_bytes(config: DiTConfig, counts: dict, trajectories: int, steps: int, activation_bytes: int) -> float:
    """S: the kept refiner outputs (segments.py) — per pool state an image segment for each padded caption length
    it is used with (∅ and the caption on the erase trajectories, the anchor on its own), and per prompt
    (P erase, P anchor, ∅) a text segment."""
    image_span = _round_up(counts["image"], config.pad_tokens_multiple)
    text = counts["caption"] - image_span
    images = 2 if counts["empty"] == counts["caption"] else 3
    return (trajectories * steps * images * image_span + (2 * trajectories + 1) * text) * config.dim * activation_bytes
