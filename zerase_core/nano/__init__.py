"""Nano world: a tiny synthetic text-to-image world (captioned 64×64 coloured shapes) for CPU experiments.

`vocab` (words and tokenizer), `render` (captioned images), `codec` (Z-Image-shaped latent codec) and
`evaluator` (the judge) are imported explicitly; this package imports nothing heavy.
"""
