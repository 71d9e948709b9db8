"""`export-lora`: a stock-loadable LoRA of a stream-pure erasure file."""

from __future__ import annotations

from pathlib import Path

from ..common.files import check_output


def add_export_lora_command(commands) -> None:
    from ..real.run import add_model_arguments

    export = commands.add_parser("export-lora", help="write a stock-loadable LoRA for stream-pure erasures only")
    export.add_argument("file", type=Path)
    export.add_argument("--out", type=Path)
    add_model_arguments(export)
    export.set_defaults(run=command_export_lora)


def command_export_lora(args) -> None:
    from ..formats.erasure_file import export_stock_lora
    from ..formats.stock_export import stock_path

    out = check_output(stock_path(args.file, args.out), "--out")
    from ..real.run import check_base

    check_base(args)  # --model/--dit given: the file must be made for it
    print(f"wrote {export_stock_lora(args.file, out)}")
