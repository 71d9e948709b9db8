"""The erase engine: training methods, the λ controller, the trainer and one erase run (prompts → file).

Everything that turns a model, prompts and an EraseConfig into an erasure file; callers are the CLI, the nodes, the bench.
"""
