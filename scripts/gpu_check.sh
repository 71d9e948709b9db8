#!/usr/bin/env bash
# GPU check for issue 6: time a Z-Erase step and report peak CUDA memory at 512² on Z-Image-Turbo's real config
# (30 layers, dim 3840, 6.155B parameters, random bf16 weights created on the GPU), on a CUDA machine with no network
# and only its preinstalled torch (plus numpy). About 3–4 min on an H100; no file outside OUT_DIR is written.
#
#   scripts/gpu_check.sh [OUT_DIR]            (default: $OUT, else ./gpu-check)
#
# Runs, each in a fresh process (its own CUDA peak), all with per-block gradient checkpointing and rank 8:
#   1. batch 1: every variant of `python -m zerase_core.bench.perf` (zerase, uncached loop, esd, naive-esd, plain LoRA,
#      teacher forward) -> OUT/turbo512_b1.json
#   2. batch 4: zerase, plain LoRA, teacher forward -> OUT/turbo512_b4.json
#   3. batch 1 without checkpointing: zerase and plain LoRA (checks the per-block activation numbers) ->
#      OUT/turbo512_b1_nockpt.json
# The tables go to stdout and OUT/gpu_check.log; compare with docs/performance.md (memory model).
#
# CPU test of the same code paths (tiny sizes, seconds):
#   ZERASE_GPU_CHECK_DEVICE=cpu ZERASE_GPU_CHECK_TINY=1 scripts/gpu_check.sh /tmp/gpu-check-test
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
else
    SIZE=(--steps 5 --warmup 2)
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
run turbo512_b1 --batch 1 || status=1
run turbo512_b4 --batch 4 --only zerase,plain_lora,teacher_forward || status=1
run turbo512_b1_nockpt --batch 1 --no-checkpointing --only zerase,plain_lora || status=1
echo "results in $OUT_DIR (status $status)" | tee -a "$LOG"
exit $status
