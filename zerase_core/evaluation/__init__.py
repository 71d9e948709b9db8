"""Evaluation of erasures: metrics (Acc_e, Acc_ir, H, collapse), robustness probes, the `evaluate` and `bench`
commands. `zerase_core.nano.verdicts` keeps the nano evaluator's verdict/accuracy helpers."""
