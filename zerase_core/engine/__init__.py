"""The erase engine: training methods, the λ controller, the trainer and one erase run (prompts → file).

Everything that turns a model, prompts and an EraseConfig into an erasure file; called by the CLI, nodes and bench.
"""
