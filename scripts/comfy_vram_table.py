"""Predicted peak VRAM of ZEraseTrain (the ComfyUI path) for Z-Image-Turbo, from zerase_core/engine/memory_model.py.

    python scripts/comfy_vram_table.py [--json FILE]

512² and 1024², bf16 and fp8-stored weights, with and without per-block checkpointing, batch 1 and 4, rank 8, a
64-token caption, pool build batch 4. Allocated bytes (torch.cuda.max_memory_allocated); add the CUDA context
(~0.5 GiB) for what nvidia-smi shows. Goal of issue 16: ≤ 15 GiB bf16 and ≤ 9 GiB fp8 at 512², batch 1.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from zerase_core.engine.memory_model import comfy_table

COLUMNS = ("weights", "adapters", "activations", "backward_transient", "cast_copies", "step_peak_gb",
           "build_peak_gb", "peak_gb")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, help="also write the rows here")
    args = parser.parse_args(argv)
    rows = comfy_table()
    print("| size | weights | ckpt | batch | W | A | H | X | cast | step | build | **peak GiB** |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for row in rows:
        values = " | ".join(f"{row[key]:.2f}" for key in COLUMNS[:-1])
        print(f"| {row['size']}² | {row['dtype']} | {'yes' if row['checkpointing'] else 'no'} | {row['batch']} | "
              f"{values} | **{row['peak_gb']:.2f}** |")
    if args.json:
        temporary = args.json.with_suffix(args.json.suffix + ".tmp")
        temporary.write_text(json.dumps(rows, indent=1) + "\n")
        temporary.replace(args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
