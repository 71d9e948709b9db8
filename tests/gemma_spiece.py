"""A tiny Gemma SentencePiece tokenizer trained in the fixture (no download) with Gemma's own trainer settings (BPE,
byte fallback, identity normalization, no dummy prefix, ids 0-4 = <pad> <eos> <bos> <unk> <mask>, <start_of_turn> and
<end_of_turn> as user-defined pieces), and a tiny Gemma-2 text-encoder file carrying it as ComfyUI stores it: the
uint8 tensor `spiece_model` of the serialized model proto next to the `model.`-prefixed weights."""
from __future__ import annotations

import io
from pathlib import Path

import torch
from safetensors.torch import save_file

from zerase_core.real.gemma import SYSTEM_PROMPT

TEXTS = (SYSTEM_PROMPT + " <Prompt Start>", "a picture of a photo of a painting of cat dog star red circle puppy",
         "a painting by Van Gogh, oil painting of a starry night over a harbour", "digits 0123456789 and CAPS")


def train_spiece(extra: tuple[str, ...] = (), vocab_size: int = 360) -> bytes:
    """The serialized SentencePiece model proto of a tiny Gemma-like tokenizer over TEXTS and `extra`."""
    import sentencepiece
    model = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(list(TEXTS + tuple(extra)) * 20), model_writer=model, vocab_size=vocab_size,
        hard_vocab_limit=False, model_type="bpe", byte_fallback=True, normalization_rule_name="identity",
        add_dummy_prefix=False, remove_extra_whitespaces=False, split_digits=True, allow_whitespace_only_pieces=True,
        pad_id=0, eos_id=1, bos_id=2, unk_id=3, pad_piece="<pad>", eos_piece="<eos>", bos_piece="<bos>",
        unk_piece="<unk>", user_defined_symbols=["<mask>", "<start_of_turn>", "<end_of_turn>"], minloglevel=2)
    return model.getvalue()


def piece_count(proto: bytes) -> int:
    import sentencepiece
    processor = sentencepiece.SentencePieceProcessor()
    processor.LoadFromSerializedProto(proto)
    return processor.get_piece_size()


def save_gemma_file(path: Path, encoder: torch.nn.Module, proto: bytes | None) -> Path:
    """A ComfyUI-style Gemma text-encoder file: `model.` + the Gemma2Model's names, and `spiece_model` if given."""
    tensors = {f"model.{key}": value.contiguous() for key, value in encoder.state_dict().items()}
    if proto is not None:
        tensors["spiece_model"] = torch.frombuffer(bytearray(proto), dtype=torch.uint8)
    save_file(tensors, str(path))
    return path


def transformers_tokenizer(proto: bytes, folder: Path):
    """transformers' GemmaTokenizer converted from the same .model file (as Gemma's tokenizer_config: BOS added),
    saved and reloaded as a diffusers tokenizer/ folder."""
    import transformers
    source = folder / "from-model"
    source.mkdir(parents=True, exist_ok=True)
    (source / "tokenizer.model").write_bytes(proto)
    tokenizer = transformers.GemmaTokenizer.from_pretrained(str(source), add_bos_token=True, add_eos_token=False)
    tokenizer.save_pretrained(str(folder / "tokenizer"))
    return tokenizer, folder / "tokenizer"
