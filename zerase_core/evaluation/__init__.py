"""Evaluation of erasures: metrics (Acc_e, Acc_ir, H, collapse), judges, prompt sets, robustness probes, the protocol
and benchmark tables; the `evaluate` and `bench` commands on top of them are in `cli/`."""
