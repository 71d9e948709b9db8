"""Gemma's SentencePiece tokenizer as ComfyUI stores it: inside the text-encoder file (gemma_2_2b_fp16.safetensors),
as the uint8 tensor `spiece_model` holding the serialized SentencePiece model proto.

`SpieceGemmaTokenizer` tokenizes as Lumina2Pipeline's Gemma tokenizer does: BOS first, no EOS, at most `max_length`
tokens (right truncation); padding is the conditioner's (right, by lengths). It offers the small part of the
transformers tokenizer interface the conditioners use (`__call__` with character offsets, `decode`, `len`).
Only a safetensors file is read, memory-mapped; the bytes are parsed by sentencepiece, never unpickled.
"""

from __future__ import annotations

from pathlib import Path

from ..model.checkpoint_keys import CheckpointError
from .mapped import mapped_safetensors, read_header

SPIECE_KEY = "spiece_model"


def _sentencepiece():
    try:
        import sentencepiece
    except ImportError:
        raise ImportError(
            "reading the Gemma tokenizer inside a text-encoder file needs sentencepiece, which is not"
            ' installed: pip install sentencepiece (or pip install -e ".[real]"), or give --tokenizer'
            " (the tokenizer/ folder of a diffusers Lumina-Image-2.0 download)"
        ) from None
    return sentencepiece


def has_embedded_tokenizer(path: str | Path | None) -> bool:
    """Whether `path` is a safetensors file carrying a `spiece_model` byte tensor (header only, nothing read)."""
    if path is None or not Path(path).is_file() or Path(path).suffix != ".safetensors":
        return False
    try:
        entry = read_header(Path(path))[0].get(SPIECE_KEY)
    except CheckpointError:
        return False
    return isinstance(entry, dict) and entry.get("dtype") == "U8" and len(entry.get("shape", ())) == 1


def read_spiece_model(path: str | Path) -> bytes:
    """The serialized SentencePiece model stored in a ComfyUI text-encoder file (memory-mapped)."""
    path = Path(path)
    if not has_embedded_tokenizer(path):
        raise CheckpointError(
            f"{path} carries no Gemma tokenizer (no uint8 tensor {SPIECE_KEY!r}); give --tokenizer"
            f" (the tokenizer/ folder of a diffusers Lumina-Image-2.0 download)"
        )
    tensors, _ = mapped_safetensors(path)
    return tensors[SPIECE_KEY].numpy().tobytes()


class SpieceGemmaTokenizer:
    """Gemma's tokenizer from a serialized SentencePiece model: BOS + SentencePiece ids, character offsets."""

    padding_side = "right"

    def __init__(self, model_proto: bytes, source: str = "the SentencePiece model"):
        self.processor = _sentencepiece().SentencePieceProcessor()
        try:
            self.processor.LoadFromSerializedProto(model_proto)
        except (RuntimeError, OSError) as error:
            raise CheckpointError(f"{source}: {SPIECE_KEY} is not a SentencePiece model ({error})") from None
        self.bos_token_id = self.processor.bos_id()
        if self.bos_token_id < 0:
            raise CheckpointError(f"{source}: the SentencePiece model defines no BOS token; Gemma's has <bos>")
        self.pad_token_id = max(self.processor.pad_id(), 0)

    @classmethod
    def from_file(cls, path: str | Path) -> SpieceGemmaTokenizer:
        return cls(read_spiece_model(path), str(path))

    def __len__(self) -> int:
        return self.processor.get_piece_size()

    def __call__(
        self,
        text: str,
        truncation: bool = False,
        max_length: int | None = None,
        return_offsets_mapping: bool = False,
        **_ignored,
    ) -> dict:
        encoded = self.processor.encode(text, return_type="offset_mapping")
        ids = [self.bos_token_id, *encoded["ids"]]
        offsets = [(0, 0), *self._byte_spans(encoded["ids"], [tuple(pair) for pair in encoded["offsets"]])]
        if truncation and max_length is not None:
            ids, offsets = ids[:max_length], offsets[:max_length]
        out = {"input_ids": ids, "attention_mask": [1] * len(ids)}
        if return_offsets_mapping:
            out["offset_mapping"] = offsets
        return out

    def _byte_spans(self, ids: list[int], offsets: list[tuple[int, int]]) -> list[tuple[int, int]]:
        """A character split into byte-fallback pieces: SentencePiece gives its span to the last byte only; every
        byte piece of it gets the character's span (as transformers' tokenizer reports them)."""
        following: tuple[int, int] | None = None
        for index in range(len(ids) - 1, -1, -1):
            if not self.processor.is_byte(ids[index]):
                following = None
                continue
            begin, end = offsets[index]
            if begin == end and following is not None and following[0] == begin:
                offsets[index] = following
            following = offsets[index]
        return offsets

    def decode(self, ids, skip_special_tokens: bool = False) -> str:
        ids = [int(token) for token in ids]
        if not skip_special_tokens:
            return self.processor.decode(ids)
        return self.processor.decode([token for token in ids if not self.processor.is_control(token)])


__all__ = ["SPIECE_KEY", "SpieceGemmaTokenizer", "has_embedded_tokenizer", "read_spiece_model"]
