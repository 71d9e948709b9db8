"""Lumina-Image-2.0's prompt conditioning outside ComfyUI: Gemma-2-2B (transformers) as diffusers' Lumina2Pipeline
encodes prompts.

Facts the parity test checks against diffusers 0.42: a prompt becomes "{system prompt} <Prompt Start> {prompt}"
(the negative prompt, "" by default, gets no system prompt), is tokenized with BOS, at most 256 tokens, and the
features are the second-to-last hidden state (hidden_states[-2]) of the attended tokens. The pipeline pads to 256 on
the right with an attention mask; Gemma is causal, so one prompt at a time without padding gives the same rows.
ComfyUI's CLIPTextEncodeLumina2 builds the same text (its "superior" system prompt is the pipeline's default).

Weights load memory-mapped into a meta-device model (`assign=True`): no second copy in RAM. A ComfyUI single file
(gemma_2_2b_fp16.safetensors) stores its SentencePiece tokenizer as the tensor `spiece_model`: with such a file no
tokenizer/ folder is needed (`gemma_tokenizer.py`, needs sentencepiece); a diffusers folder brings its own.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from ..model.checkpoint_keys import CheckpointError
from .gemma_tokenizer import SpieceGemmaTokenizer, has_embedded_tokenizer
from .text_encoder import (
    QwenConditioner,
    _transformers,
    build_encoder,
    check_decoder,
    check_loaded,
    decoder_widths,
    encoder_tensors,
)

SYSTEM_PROMPT = (
    "You are an assistant designed to generate superior images with the superior degree of image-text"
    " alignment based on textual prompts or user prompts."
)
LUMINA_TEMPLATE = SYSTEM_PROMPT + " <Prompt Start> {}"  # ComfyUI's CLIPTextEncodeLumina2 ("superior")
MAX_TOKENS = 256


def gemma2_config_from_shapes(tensors: dict[str, torch.Tensor], extra: dict | None = None):
    """A Gemma2Config for a Gemma-2 state dict: widths from the shapes, everything else Gemma-2-2B's (transformers'
    Gemma2Config defaults) unless `extra` (a config.json) says otherwise."""
    transformers = _transformers()
    check_decoder(tensors, "Gemma-2", "layers.0.pre_feedforward_layernorm.weight")
    settings = {
        key: value
        for key, value in (extra or {}).items()
        if key not in ("architectures", "model_type", "transformers_version", "torch_dtype", "dtype")
    }
    head_dim = int(settings.get("head_dim", 256))  # a single file has no config: Gemma-2-2B's head dim
    rows = tensors["layers.0.self_attn.q_proj.weight"].shape[0]
    if rows % head_dim or tensors["layers.0.self_attn.k_proj.weight"].shape[0] % head_dim:
        raise CheckpointError(
            f"q_proj has {rows} rows, not a multiple of the head dim {head_dim}: not Gemma-2-2B's"
            f" layout; give the diffusers text_encoder/ folder (its config.json)"
        )
    settings.update(decoder_widths(tensors, head_dim))
    return transformers.Gemma2Config(**settings)


def load_gemma2(path: str | Path, dtype: torch.dtype | None = None):
    """A frozen transformers Gemma2Model from a ComfyUI single file or a diffusers text_encoder/ folder, its
    weights views of the memory-mapped file(s) when `dtype` is the file's (fp8 files: bf16)."""
    transformers = _transformers()
    path = Path(path)
    tensors = encoder_tensors(path)
    extra = (
        json.loads((path / "config.json").read_text()) if path.is_dir() and (path / "config.json").is_file() else None
    )
    config = gemma2_config_from_shapes(tensors, extra)
    model = build_encoder(transformers.Gemma2Model, config, tensors, dtype, path, "Gemma-2")
    embedding = model.embed_tokens  # Gemma scales embeddings by sqrt(hidden)
    embedding.embed_scale = torch.tensor(float(getattr(embedding, "scalar_embed_scale", config.hidden_size**0.5)))
    return check_loaded(model, path)


NO_TOKENIZER = (
    "Lumina-2 needs Gemma's tokenizer: give --tokenizer (the tokenizer/ folder of the diffusers download"
    " Alpha-VLLM/Lumina-Image-2.0), or a --text-encoder file that carries it (ComfyUI's"
    " gemma_2_2b_fp16.safetensors stores it as the tensor `spiece_model`"
)


def load_gemma_tokenizer(path: str | Path | None):
    """Gemma's tokenizer from a diffusers tokenizer/ folder (transformers) or from a text-encoder .safetensors file
    that carries its SentencePiece model (ComfyUI's `spiece_model`)."""
    if path is None:
        raise ValueError(NO_TOKENIZER + ")")
    path = Path(path)
    if path.is_file():
        if not has_embedded_tokenizer(path):
            raise ValueError(f"{NO_TOKENIZER}; {path} has none)")
        return SpieceGemmaTokenizer.from_file(path)
    if not path.is_dir():
        raise FileNotFoundError(f"Gemma tokenizer {path} does not exist; {NO_TOKENIZER})")
    tokenizer = _transformers().AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    tokenizer.padding_side = "right"  # what Lumina2Pipeline's masks assume (real tokens first)
    return tokenizer


def gemma_tokenizer_path(tokenizer: Path | None, text_encoder: Path | None) -> Path | None:
    """The tokenizer to use: the one given, else the text-encoder file when it carries one, else None."""
    if tokenizer is None and text_encoder is not None and has_embedded_tokenizer(text_encoder):
        return Path(text_encoder)
    return tokenizer


class GemmaConditioner(QwenConditioner):
    """A `TextConditioner` over Gemma-2: Lumina2Pipeline's features (B, L, 2304) and lengths, keyword rows from the
    tokenizer's character offsets inside the user prompt."""

    def __init__(self, tokenizer, model, system_prompt: str = SYSTEM_PROMPT, max_tokens: int = MAX_TOKENS):
        super().__init__(tokenizer, model, template=None, max_tokens=max_tokens)
        self.system_prompt = system_prompt

    def text(self, prompt: str) -> str:
        return f"{self.system_prompt} <Prompt Start> {prompt}" if prompt else ""  # = LUMINA_TEMPLATE


def gemma_conditioner(source, dtype: torch.dtype | None = None) -> GemmaConditioner:
    """The Gemma-2 text encoder of a Lumina-2 `ModelSource` (loaded now) with its tokenizer."""
    if source.text_encoder is None:
        raise ValueError(f"{source.dit} needs --text-encoder (e.g. gemma_2_2b_fp16.safetensors)")
    path = gemma_tokenizer_path(source.tokenizer, source.text_encoder)
    if path is None:
        raise ValueError(f"{NO_TOKENIZER}; {source.text_encoder} has none)")
    tokenizer = load_gemma_tokenizer(path)
    return GemmaConditioner(tokenizer, load_gemma2(source.text_encoder, dtype))


__all__ = [
    "SYSTEM_PROMPT",
    "LUMINA_TEMPLATE",
    "GemmaConditioner",
    "gemma_conditioner",
    "gemma2_config_from_shapes",
    "gemma_tokenizer_path",
    "load_gemma2",
    "load_gemma_tokenizer",
]
