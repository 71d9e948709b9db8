"""Edits of a frozen model: text-gated LoRA adapters and the closed-form uce-text weight delta.

They attach to a model from `model/`; the engine trains them, `formats/` stores them.
"""
