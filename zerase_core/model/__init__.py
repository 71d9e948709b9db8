"""The single-stream DiT (Z-Image / NextDiT): config, layers, token layout, checkpoints and keys, sampler.

The model knows nothing about erasing; adapters and the engine build on it.
"""
