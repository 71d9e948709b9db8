"""Nano text encoder: word tokens -> a small transformer -> caption features (the nano world's Qwen3 stand-in).

Like Z-Image's pipeline, the DiT receives only the real tokens of each caption (variable length); the empty
prompt is the single token `<empty>`, never zero-length. Every word, synonyms included, has its own embedding.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

from .vocab import VOCABULARY

METADATA_KEY = "zerase.text_encoder_config"
PAD_ID = 0


@dataclass(frozen=True)
class TextEncoderConfig:
    vocab_size: int = len(VOCABULARY)
    max_length: int = 16
    width: int = 128  # = the DiT's cap_feat_dim
    heads: int = 4
    ffn_width: int = 256
    n_layers: int = 1


class NanoTextEncoder(nn.Module):
    def __init__(self, config: TextEncoderConfig = TextEncoderConfig()):
        super().__init__()
        self.config = config
        self.token_embedding = nn.Embedding(config.vocab_size, config.width)
        self.position_embedding = nn.Embedding(config.max_length, config.width)
        layer = nn.TransformerEncoderLayer(
            config.width, config.heads, config.ffn_width, dropout=0.0, batch_first=True, norm_first=True
        )
        self.transformer = nn.TransformerEncoder(layer, config.n_layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(config.width)
        nn.init.normal_(self.token_embedding.weight, std=0.5)
        nn.init.normal_(self.position_embedding.weight, std=0.1)

    def tokenize(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """-> ids (B, L) padded with 0, lengths (B,). Unknown words raise `UnknownWordError`."""
        encoded = [VOCABULARY.encode(prompt) for prompt in prompts]
        for prompt, tokens in zip(prompts, encoded, strict=True):
            if len(tokens) > self.config.max_length:
                raise ValueError(
                    f"prompt '{prompt}' has {len(tokens)} tokens; the nano text encoder takes at most "
                    f"{self.config.max_length}"
                )
        length = max(len(tokens) for tokens in encoded)
        ids = torch.zeros(len(encoded), length, dtype=torch.long)
        for row, tokens in enumerate(encoded):
            ids[row, : len(tokens)] = torch.tensor(tokens)
        return ids, torch.tensor([len(tokens) for tokens in encoded])

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        """ids (B, L) -> features (B, L, width); padding rows are zeroed (the DiT never reads them)."""
        device = self.token_embedding.weight.device
        ids = ids.to(device)
        positions = torch.arange(ids.shape[1], device=device)
        hidden = self.token_embedding(ids) + self.position_embedding(positions)[None]
        padding = ids == PAD_ID
        hidden = self.norm(self.transformer(hidden, src_key_padding_mask=padding))
        return hidden.masked_fill(padding.unsqueeze(-1), 0.0)

    def encode(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Prompts -> (features (B, L, width), lengths (B,)), ready for
        `ZImageDiT(context=..., context_lengths=...)`."""
        ids, lengths = self.tokenize(prompts)
        return self(ids), lengths

    def save(self, path: str | Path) -> None:
        from ..common.files import atomic_save_safetensors

        state = {name: tensor.detach().contiguous() for name, tensor in self.state_dict().items()}
        atomic_save_safetensors(state, path, {METADATA_KEY: json.dumps(asdict(self.config))})

    @classmethod
    def load(cls, path: str | Path) -> NanoTextEncoder:
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
            # safe_open is not a mapping: keys() is the only way to list its tensors
            state = {name: handle.get_tensor(name) for name in handle.keys()}  # noqa: SIM118
        if METADATA_KEY not in metadata:
            raise ValueError(f"{path} is not a nano text encoder file (no '{METADATA_KEY}' metadata)")
        encoder = cls(TextEncoderConfig(**json.loads(metadata[METADATA_KEY])))
        encoder.load_state_dict({name: tensor.float() for name, tensor in state.items()})
        return encoder.eval().requires_grad_(False)
