"""Where the shipped nano-world weights live (inside the package, so `pip install` carries them)."""

from pathlib import Path

WEIGHTS = Path(__file__).resolve().parent / "weights"
DIT = WEIGHTS / "dit.safetensors"
TEXT_ENCODER = WEIGHTS / "text_encoder.safetensors"
CODEC = WEIGHTS / "codec.safetensors"
EVALUATOR = WEIGHTS / "evaluator.safetensors"
