"""Z-Image's prompt conditioning outside ComfyUI: Qwen3 (transformers) over the Qwen tokenizer, as diffusers'
`ZImagePipeline` encodes prompts.

Facts the parity test checks against diffusers 0.42: the prompt goes through the tokenizer's chat template as one
user message (add_generation_prompt, enable_thinking=True; Qwen3's template then gives ComfyUI's
"<|im_start|>user\\n{prompt}<|im_end|>\\n<|im_start|>assistant\\n"), at most 512 tokens; the features are the
second-to-last hidden state (hidden_states[-2]) of the attended tokens. The pipeline pads to 512 tokens on the
right; a causal model's real tokens do not see right padding, so one prompt at a time without padding is the same.

The weights load memory-mapped (`mapped.py`) into a meta-device model (`assign=True`): no second copy in RAM.
"""

from __future__ import annotations

import gc
import json
import re
from pathlib import Path

import torch

from ..model.checkpoint_keys import CheckpointError
from .mapped import mapped_folder, mapped_safetensors

COMFY_TEMPLATE = "<|im_start|>user\n{}<|im_end|>\n<|im_start|>assistant\n"
MAX_TOKENS = 512
QWEN3_4B = {"rope_theta": 1_000_000.0, "rms_norm_eps": 1e-6, "max_position_embeddings": 40960}
_LAYER = re.compile(r"^layers\.(\d+)\.")


def _transformers():
    try:
        import transformers
    except ImportError:
        raise ImportError(
            'real text encoders run through transformers, which is not installed: pip install -e ".[real]"'
        ) from None
    return transformers


def _base_names(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Base-model names (Qwen3Model, Gemma2Model): `model.` prefix dropped; the LM head (unused for features) and
    the tokenizer blob ComfyUI stores in Gemma files (`spiece_model`) left out."""
    names = {}
    for key, value in tensors.items():
        if key.startswith("lm_head.") or key == "spiece_model":
            continue
        names[key[len("model.") :] if key.startswith("model.") else key] = value
    return names


def check_decoder(tensors: dict[str, torch.Tensor], family: str, own: str) -> None:
    """Refuse a state dict that lacks a tensor a decoder-only text encoder's shapes are read from (`own`: the one
    that tells this family apart)."""
    needed = ("embed_tokens.weight", "layers.0.self_attn.q_proj.weight", "layers.0.self_attn.k_proj.weight", own)
    missing = [name for name in (*needed, "layers.0.mlp.gate_proj.weight") if name not in tensors]
    if missing:
        raise CheckpointError(
            f"not a {family} text encoder: {', '.join(missing)} missing (found e.g. {', '.join(list(tensors)[:4])})"
        )


def decoder_widths(tensors: dict[str, torch.Tensor], head_dim: int) -> dict[str, int]:
    """The transformers config fields that a decoder-only text encoder's shapes give, for a known head dim."""
    vocab, hidden = tensors["embed_tokens.weight"].shape
    return dict(
        vocab_size=int(vocab),
        hidden_size=int(hidden),
        head_dim=int(head_dim),
        num_hidden_layers=1 + max(int(match[1]) for match in map(_LAYER.match, tensors) if match),
        num_attention_heads=int(tensors["layers.0.self_attn.q_proj.weight"].shape[0] // head_dim),
        num_key_value_heads=int(tensors["layers.0.self_attn.k_proj.weight"].shape[0] // head_dim),
        intermediate_size=int(tensors["layers.0.mlp.gate_proj.weight"].shape[0]),
    )


def qwen3_config_from_shapes(tensors: dict[str, torch.Tensor], extra: dict | None = None):
    """A Qwen3Config for a Qwen3 text-encoder state dict (ComfyUI's qwen_3_4b.safetensors has no config): widths
    from the shapes; rope theta, eps and context length are Qwen3-4B's unless `extra` says otherwise."""
    transformers = _transformers()
    check_decoder(tensors, "Qwen3", "layers.0.self_attn.q_norm.weight")
    head_dim = tensors["layers.0.self_attn.q_norm.weight"].shape[0]
    settings = {**QWEN3_4B, **(extra or {})}
    return transformers.Qwen3Config(
        **decoder_widths(tensors, head_dim),
        tie_word_embeddings=True,
        rope_theta=settings["rope_theta"],
        rope_parameters={"rope_type": "default", "rope_theta": settings["rope_theta"]},
        rms_norm_eps=settings["rms_norm_eps"],
        max_position_embeddings=settings["max_position_embeddings"],
    )


def encoder_tensors(path: str | Path) -> dict[str, torch.Tensor]:
    """The memory-mapped tensors of a text encoder (a ComfyUI single file or a diffusers text_encoder/ folder), under
    the base model's names."""
    path = Path(path)
    return _base_names(mapped_folder(path) if path.is_dir() else mapped_safetensors(path)[0])


def build_encoder(model_class, config, tensors: dict[str, torch.Tensor], dtype: torch.dtype | None, path, family: str):
    """A frozen transformers `model_class(config)` whose weights are `tensors` (views of the mapped file when `dtype`
    is the file's; fp8 files: bf16), built on the meta device so no second copy is made."""
    reference = tensors["embed_tokens.weight"].dtype
    target = dtype or (reference if reference in (torch.float32, torch.bfloat16, torch.float16) else torch.bfloat16)
    with torch.device("meta"):
        model = model_class(config)
    expected = set(model.state_dict())
    missing, unexpected = sorted(expected - set(tensors)), sorted(set(tensors) - expected)
    if missing or unexpected:
        raise CheckpointError(
            f"{path}: the tensors do not fit {family} ({len(missing)} missing, e.g. {missing[:3]};"
            f" {len(unexpected)} unexpected, e.g. {unexpected[:3]})"
        )
    model.load_state_dict({key: value.to(target) for key, value in tensors.items()}, strict=True, assign=True)
    # the rotary tables were built on the meta device with the model: rebuilt on the CPU (a small buffer)
    model.rotary_emb = type(model.rotary_emb)(config=config)
    return model


def check_loaded(model, path):
    left = [name for name, buffer in model.named_buffers() if buffer.is_meta]
    if left:
        raise CheckpointError(f"{path}: buffers {left[:3]} have no values after loading")
    return model.eval().requires_grad_(False)


def load_qwen3(path: str | Path, dtype: torch.dtype | None = None):
    """A frozen transformers Qwen3Model from a ComfyUI single file or a diffusers text_encoder/ folder, its
    weights views of the memory-mapped file(s) when `dtype` is the file's (fp8 files: bf16)."""
    transformers = _transformers()
    path = Path(path)
    tensors = encoder_tensors(path)
    if path.is_dir() and (path / "config.json").is_file():
        data = json.loads((path / "config.json").read_text())
        config = qwen3_config_from_shapes(tensors, {key: data[key] for key in QWEN3_4B if key in data})
    else:
        config = qwen3_config_from_shapes(tensors)
    return check_loaded(build_encoder(transformers.Qwen3Model, config, tensors, dtype, path, "Qwen3"), path)


def load_tokenizer(path: str | Path):
    """A Qwen tokenizer from a folder (a diffusers tokenizer/ folder, or ComfyUI's comfy/text_encoders/
    qwen25_tokenizer), offline."""
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(
            f"tokenizer folder {path} does not exist; give the diffusers model's tokenizer/"
            f" folder or ComfyUI's comfy/text_encoders/qwen25_tokenizer"
        )
    return _transformers().AutoTokenizer.from_pretrained(str(path), local_files_only=True)


class QwenConditioner:
    """A `TextConditioner` over a Qwen3 text encoder: features (B, L, hidden) as ZImagePipeline's, keyword rows
    from the tokenizer's character offsets. `template` None = the tokenizer's chat template (a diffusers folder),
    else a format string with one `{}` (ComfyUI's, for single files)."""

    def __init__(self, tokenizer, model, template: str | None = None, max_tokens: int = MAX_TOKENS):
        self.tokenizer, self.model, self.template, self.max_tokens = tokenizer, model, template, max_tokens

    def text(self, prompt: str) -> str:
        if self.template is not None:
            return self.template.format(prompt)
        return self.tokenizer.apply_chat_template(
            [{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True, enable_thinking=True
        )

    def _tokens(self, prompt: str):
        return self.tokenizer(
            self.text(prompt), truncation=True, max_length=self.max_tokens, return_offsets_mapping=True
        )

    @torch.no_grad()
    def encode(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        if self.model is None:
            raise RuntimeError("this conditioner's text encoder was released; encode every prompt before")
        rows = []
        for prompt in prompts:
            ids = torch.tensor([self._tokens(prompt)["input_ids"]])
            hidden = self.model(
                input_ids=ids, attention_mask=torch.ones_like(ids, dtype=torch.bool), output_hidden_states=True
            ).hidden_states[-2]
            rows.append(hidden[0].float())
        features = rows[0].new_zeros(len(rows), max(row.shape[0] for row in rows), rows[0].shape[-1])
        for index, row in enumerate(rows):
            features[index, : row.shape[0]] = row
        return features, torch.tensor([row.shape[0] for row in rows])

    def keyword_positions(self, prompt: str, keyword: str) -> list[int]:
        text = self.text(prompt)
        start = text.rfind(prompt)
        low, high = (start, start + len(prompt)) if start >= 0 else (0, len(text))
        offsets = self._tokens(prompt)["offset_mapping"]
        positions: set[int] = set()
        for match in re.finditer(rf"(?i)(?<!\w){re.escape(keyword.strip())}(?!\w)", text[low:high]):
            begin, end = low + match.start(), low + match.end()
            positions.update(index for index, (first, last) in enumerate(offsets) if first < end and last > begin)
        return sorted(positions)

    def check_keyword(self, keyword: str) -> None:
        if not keyword.strip():
            raise ValueError("a keyword is empty; give the word(s) to erase, e.g. 'Van Gogh'")

    def release(self) -> None:
        """Drop the text encoder (its memory map closes with the last tensor); encode() then refuses."""
        self.model = None
        gc.collect()


__all__ = ["COMFY_TEMPLATE", "QwenConditioner", "load_qwen3", "load_tokenizer", "qwen3_config_from_shapes"]
