#!/usr/bin/env bash
# GPU check (issues 6 and 16): a Z-Erase step on Z-Image-Turbo's real config (30 layers, dim 3840, 6.155B
# parameters, random bf16 weights created on the GPU) through the core engine, then ZEraseTrain inside a real ComfyUI
# on random full-size Z-Image-Turbo + Qwen3-4B files; on a CUDA machine with no network and only its preinstalled
# torch (plus numpy; ComfyUI's own requirements for part 2). About 6–7 min on an H100 (estimate, not yet run);
# nothing is installed, and nothing outside OUT_DIR is written except the two random model files (20 GB, in
# ZERASE_GPU_CHECK_MODELS, default a temporary folder deleted at the end).
#
#   scripts/gpu_check.sh [OUT_DIR]            (default: $OUT, else ./gpu-check)
#
# 1. CLI / core engine, in a fresh process, per-block checkpointing, rank 8, 512²: `python -m zerase_core.bench.perf`,
#    batch 1, zerase and the teacher forward -> OUT/turbo512_b1.json. ZERASE_GPU_CHECK_FULL=1 adds every variant
#    (uncached loop, esd, naive-esd, plain LoRA), batch 4 and batch 1 without checkpointing (+3 min). Then
#    scripts/block_saved_tensors.py: the bytes one Turbo joint block keeps for the backward, per op -> OUT/block_saved.txt.
# 2. ComfyUI (COMFYUI_PATH, default ../shared/comfyui; its python: COMFY_PYTHON, default PYTHON) with the pack:
#    scripts/gpu_comfy_check.py writes the two files (random weights made on the GPU), then runs ZEraseTrain for 4
#    steps at 512², batch 1, each in a fresh process: bf16 and fp8 (UNETLoader weight_dtype fp8_e4m3fn), each on the
#    whole card and with ComfyUI told it has 16 GB (--reserve-vram; torch is capped at 16 GiB too, so a larger peak
#    fails) -> OUT/comfy_{bf16,fp8}{,_16gb}.json: s/step, no-grad forward time, peak VRAM, the node's memory report.
#    Compare with docs/performance.md (memory model; scripts/comfy_vram_table.py).
# ZERASE_GPU_CHECK_COMFYUI=0 skips part 2. The tables go to stdout and OUT/gpu_check.log.
#
# CPU test of the same code paths (tiny sizes, a few minutes; part 2 on a width-256 DiT and a tiny Qwen3 built
# in-process, bf16 runs only):
#   ZERASE_GPU_CHECK_DEVICE=cpu ZERASE_GPU_CHECK_TINY=1 COMFYUI_PATH=... COMFY_PYTHON=... \
#       scripts/gpu_check.sh /tmp/gpu-check-test
set -euo pipefail

cd "$(dirname "$0")/.."
OUT_DIR=${1:-${OUT:-gpu-check}}
DEVICE=${ZERASE_GPU_CHECK_DEVICE:-cuda}
PYTHON=${PYTHON:-$(command -v python3 || command -v python || true)}
if [ -z "$PYTHON" ]; then
    echo "error: no python3 or python on PATH (set PYTHON=/path/to/python)" >&2
    exit 2
fi
mkdir -p "$OUT_DIR"
LOG="$OUT_DIR/gpu_check.log"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"   # the checkout itself; nothing is installed

# 1. environment: torch with CUDA and numpy are the only requirements of the measured code path
"$PYTHON" - "$DEVICE" <<'EOF' 2>&1 | tee "$LOG"
import sys
device = sys.argv[1]
try:
    import torch
except ImportError:
    sys.exit("error: torch is not installed in this python")
try:
    import numpy
except ImportError:
    sys.exit("error: numpy is not installed (the trainer needs it); install it from a local wheel")
print(f"python {sys.version.split()[0]}, torch {torch.__version__} (CUDA {torch.version.cuda}), numpy {numpy.__version__}")
if device.startswith("cuda"):
    if not torch.cuda.is_available():
        sys.exit(f"error: torch.cuda.is_available() is False (torch built with CUDA {torch.version.cuda}); "
                 "no GPU visible or a CPU-only torch")
    for index in range(torch.cuda.device_count()):
        properties = torch.cuda.get_device_properties(index)
        print(f"cuda:{index} {properties.name}, {properties.total_memory / 2**30:.1f} GiB")
EOF
[ "${PIPESTATUS[0]}" -eq 0 ] || exit 2

if [ -n "${ZERASE_GPU_CHECK_TINY:-}" ]; then
    SIZE=(--dim 256 --layers 1 --refiners 0 --size 64 --pool-prompts 1 --sample-steps 2 --steps 1 --warmup 0)
    BLOCK=(--dim 256 --heads 2 --tokens 64)
else
    SIZE=(--steps 5 --warmup 2)
    BLOCK=(--dim 3840 --heads 30 --tokens 1088)   # a Turbo joint block at 512² with a 64-token caption
fi
run() {
    local name=$1
    shift
    echo "== $name: $*" | tee -a "$LOG"
    "$PYTHON" -m zerase_core.bench.perf --preset turbo --device "$DEVICE" "${SIZE[@]}" "$@" --json "$OUT_DIR/$name.json" \
        2>&1 | tee -a "$LOG"
    return "${PIPESTATUS[0]}"
}

status=0
if [ -n "${ZERASE_GPU_CHECK_FULL:-}" ]; then
    run turbo512_b1 --batch 1 || status=1
    run turbo512_b4 --batch 4 --only zerase,plain_lora,teacher_forward || status=1
    run turbo512_b1_nockpt --batch 1 --no-checkpointing --only zerase,plain_lora || status=1
else
    run turbo512_b1 --batch 1 --only zerase,teacher_forward || status=1
fi

# What one joint block keeps for the backward on this device, per op (the memory model's σ is fitted on a CPU,
# whose RMSNorm keeps float32 copies that CUDA's fused kernel may not) -> OUT/block_saved.txt
echo "== block_saved_tensors: ${BLOCK[*]}" | tee -a "$LOG"
"$PYTHON" scripts/block_saved_tensors.py --device "$DEVICE" "${BLOCK[@]}" 2>&1 | tee "$OUT_DIR/block_saved.txt" \
    | tee -a "$LOG"
[ "${PIPESTATUS[0]}" -eq 0 ] || status=1

# 2. ZEraseTrain in a real ComfyUI
if [ "${ZERASE_GPU_CHECK_COMFYUI:-1}" = 0 ]; then
    echo "results in $OUT_DIR (status $status; ComfyUI part skipped: ZERASE_GPU_CHECK_COMFYUI=0)" | tee -a "$LOG"
    exit $status
fi
COMFYUI_PATH=${COMFYUI_PATH:-../shared/comfyui}
COMFY_PYTHON=${COMFY_PYTHON:-$PYTHON}
if [ ! -f "$COMFYUI_PATH/comfy/model_management.py" ]; then
    echo "== comfyui: not run, no ComfyUI at COMFYUI_PATH=$COMFYUI_PATH (set it to a ComfyUI folder)" | tee -a "$LOG"
    echo "results in $OUT_DIR (status 1: part 2 not run)" | tee -a "$LOG"
    exit 1
fi
COMFYUI_PATH=$(cd "$COMFYUI_PATH" && pwd)
MODELS=${ZERASE_GPU_CHECK_MODELS:-}
if [ -z "$MODELS" ]; then
    MODELS=$(mktemp -d "${TMPDIR:-/tmp}/zerase-gpu-models.XXXXXX")
    trap 'rm -rf "$MODELS"' EXIT
fi
if [ -n "${ZERASE_GPU_CHECK_TINY:-}" ]; then
    MODEL_ARGS=(--tiny)
    COMFY_ARGS=(--tiny --resolution 64 --steps 3 --sample-steps 2 --shuffle-bank 8)   # a GPU's auto on a CPU
else
    MODEL_ARGS=()
    COMFY_ARGS=(--resolution 512 --steps 4 --sample-steps 4)
fi
if [ "$DEVICE" = cpu ]; then COMFY_ARGS+=(--cpu); fi
echo "== comfyui: random models -> $MODELS" | tee -a "$LOG"
"$COMFY_PYTHON" scripts/gpu_comfy_check.py make-models "$MODELS" --comfyui "$COMFYUI_PATH" "${MODEL_ARGS[@]}" \
    2>&1 | tee -a "$LOG"
if [ "${PIPESTATUS[0]}" -ne 0 ]; then
    echo "error: could not write the random models" | tee -a "$LOG"
    exit 1
fi
comfy() {
    local name=$1
    shift
    echo "== comfyui $name: $*" | tee -a "$LOG"
    "$COMFY_PYTHON" scripts/gpu_comfy_check.py run --comfyui "$COMFYUI_PATH" --models "$MODELS" "${COMFY_ARGS[@]}" \
        "$@" --json "$OUT_DIR/comfy_$name.json" 2>&1 | tee -a "$LOG"
    return "${PIPESTATUS[0]}"
}
comfy bf16 || status=1
comfy bf16_16gb --vram-gb 16 || status=1
if [ -z "${ZERASE_GPU_CHECK_TINY:-}" ]; then       # the tiny DiT is read by LoadSingleStreamDiT: no weight_dtype
    comfy fp8 --weight-dtype fp8_e4m3fn || status=1
    comfy fp8_16gb --weight-dtype fp8_e4m3fn --vram-gb 16 || status=1
fi
"$PYTHON" scripts/gpu_comfy_check.py table "$OUT_DIR" 2>&1 | tee -a "$LOG"
echo "results in $OUT_DIR (status $status)" | tee -a "$LOG"
exit $status
