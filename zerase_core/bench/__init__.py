"""Performance tools: step timing and FLOP counts of the real trainer, and the memory model.

Nothing in the core imports them; `python -m zerase_core.bench.perf` runs the timing bench.
"""
