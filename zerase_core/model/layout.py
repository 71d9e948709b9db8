"""Token layout: which rows of each block family's input are text, image and padding.

The one implementation of the layout, used by the core model, the gated adapters and the ComfyUI bridge.
It is computed from shapes (caption lengths, latent H×W, patch size, pad multiple), never guessed from a sequence
length: text and image can pad to the same length.

Per sample i, with n_i real caption tokens and m = pad multiple:
    text segment   = n_i caption tokens, then cap_pad_token up to T_i = ceil(n_i/m)·m        (kinds TEXT, TEXT_PAD)
    batch padding  = masked filler from T_i to T = max_i T_i  (only in batches of mixed caption lengths; BATCH_PAD)
    image segment  = N = ceil(H/p)·ceil(W/p) patch tokens, then x_pad_token up to ceil(N/m)·m (IMAGE, IMAGE_PAD)

Block families: `context_refiner` sees [text segment | batch padding] (length T), `noise_refiner` sees the image
segment, `layers` (joint) see [text segment | batch padding | image segment]. With equal caption lengths this is
exactly ComfyUI's `[text padded | image | image pad]`.
"""

from __future__ import annotations

import contextvars
import functools
from contextlib import contextmanager
from dataclasses import dataclass

import torch

TEXT, TEXT_PAD, BATCH_PAD, IMAGE, IMAGE_PAD = 0, 1, 2, 3, 4
FAMILIES = ("context_refiner", "noise_refiner", "layers")


def _round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


@dataclass(frozen=True)
class TokenLayout:
    text_lengths: tuple[int, ...]  # real caption tokens per sample
    grid: tuple[int, int]  # image tokens per column and row: (ceil(H/p), ceil(W/p))
    pad_multiple: int

    def __post_init__(self) -> None:
        if not self.text_lengths:
            raise ValueError("TokenLayout needs at least one sample")
        if any(n < 1 for n in self.text_lengths):
            raise ValueError(f"every caption needs ≥ 1 token, got lengths {self.text_lengths}")
        if self.grid[0] < 1 or self.grid[1] < 1:
            raise ValueError(f"image token grid must be ≥ 1×1, got {self.grid}")
        if self.pad_multiple < 1:
            raise ValueError(f"pad multiple must be ≥ 1, got {self.pad_multiple}")

    @classmethod
    def from_shapes(cls, text_lengths, latent_hw: tuple[int, int], patch_size: int, pad_multiple: int) -> TokenLayout:
        if patch_size < 1:
            raise ValueError(f"patch size must be ≥ 1, got {patch_size}")
        height, width = int(latent_hw[0]), int(latent_hw[1])
        grid = (-(-height // patch_size), -(-width // patch_size))
        return cls(tuple(int(n) for n in text_lengths), grid, int(pad_multiple))

    @property
    def batch_size(self) -> int:
        return len(self.text_lengths)

    @property
    def text_padded(self) -> tuple[int, ...]:
        return tuple(_round_up(n, self.pad_multiple) for n in self.text_lengths)

    @property
    def text_span(self) -> int:
        """Length of the text part of every sequence (where the image segment starts in the joint sequence)."""
        return max(self.text_padded)

    @property
    def image_tokens(self) -> int:
        return self.grid[0] * self.grid[1]

    @property
    def image_span(self) -> int:
        return _round_up(self.image_tokens, self.pad_multiple)

    @property
    def has_batch_padding(self) -> bool:
        return len(set(self.text_padded)) > 1

    def sequence_length(self, family: str) -> int:
        self._check_family(family)
        if family == "context_refiner":
            return self.text_span
        if family == "noise_refiner":
            return self.image_span
        return self.text_span + self.image_span

    def kinds(self, family: str, device=None) -> torch.Tensor:
        """(B, L) int8 tensor of TEXT/TEXT_PAD/BATCH_PAD/IMAGE/IMAGE_PAD per row of the family's input."""
        self._check_family(family)
        return _kinds(self, family, torch.device(device) if device is not None else torch.device("cpu"))

    def _build_kinds(self, family: str, device: torch.device) -> torch.Tensor:
        rows = []
        image = [IMAGE] * self.image_tokens + [IMAGE_PAD] * (self.image_span - self.image_tokens)
        for length, padded in zip(self.text_lengths, self.text_padded, strict=True):
            text = [TEXT] * length + [TEXT_PAD] * (padded - length) + [BATCH_PAD] * (self.text_span - padded)
            if family == "context_refiner":
                rows.append(text)
            elif family == "noise_refiner":
                rows.append(image)
            else:
                rows.append(text + image)
        return torch.tensor(rows, dtype=torch.int8, device=device)

    def text_mask(self, family: str, device=None) -> torch.Tensor:
        """(B, L) bool: rows of the text stream (real caption tokens and cap pad tokens)."""
        self._check_family(family)
        return _stream_mask(self, family, torch.device(device) if device is not None else torch.device("cpu"), "text")

    def image_mask(self, family: str, device=None) -> torch.Tensor:
        """(B, L) bool: rows of the image stream (patch tokens and x pad tokens)."""
        self._check_family(family)
        return _stream_mask(self, family, torch.device(device) if device is not None else torch.device("cpu"), "image")

    def key_mask(self, family: str, device=None) -> torch.Tensor | None:
        """(B, L) bool of attendable keys, or None when nothing is masked (the ComfyUI case)."""
        if not self.has_batch_padding or family == "noise_refiner":
            return None
        return self.kinds(family, device) != BATCH_PAD

    def _check_family(self, family: str) -> None:
        if family not in FAMILIES:
            raise ValueError(f"unknown block family '{family}'; expected one of {FAMILIES}")

    def text_positions(self, device=None) -> torch.Tensor:
        """(B, text_span, 3) RoPE position ids of the text segment: (row + 1, 0, 0); batch padding (0, 0, 0)."""
        span = self.text_span
        positions = torch.zeros(self.batch_size, span, 3, device=device)
        positions[..., 0] = torch.arange(span, dtype=torch.float32, device=device) + 1.0
        return positions.masked_fill((self.kinds("context_refiner", device) == BATCH_PAD).unsqueeze(-1), 0.0)

    def image_positions(self, device=None) -> torch.Tensor:
        """(B, image_span, 3) RoPE position ids of the image segment: (T_i + 1, row, column) for patch tokens, after
        each caption's padded text; image pad tokens keep (0, 0, 0)."""
        rows, columns = self.grid
        positions = torch.zeros(self.batch_size, self.image_span, 3, device=device)
        # built on the host, copied without a wait on the device's queue (a forward builds these tables every time)
        starts = torch.tensor(self.text_padded, dtype=torch.float32).to(device, non_blocking=True) + 1.0
        positions[:, : self.image_tokens, 0] = starts[:, None]
        positions[:, : self.image_tokens, 1] = torch.arange(rows, device=device).repeat_interleave(columns).float()
        positions[:, : self.image_tokens, 2] = torch.arange(columns, device=device).repeat(rows).float()
        return positions

    def select(self, index: int) -> TokenLayout:
        """Layout of one sample of the batch, as if it had been run alone."""
        return TokenLayout((self.text_lengths[index],), self.grid, self.pad_multiple)


@functools.lru_cache(maxsize=256)
def _kinds(layout: TokenLayout, family: str, device: torch.device) -> torch.Tensor:
    # Adapters ask for the same masks in every block of every forward: build each once. Never as inference tensors
    # (ComfyUI samples under inference mode): a later training forward with the same layout saves the gate for
    # its backward, which autograd refuses for an inference tensor.
    with torch.inference_mode(False):
        return layout._build_kinds(family, device)


@functools.lru_cache(maxsize=256)
def _stream_mask(layout: TokenLayout, family: str, device: torch.device, stream: str) -> torch.Tensor:
    with torch.inference_mode(False):
        kinds = _kinds(layout, family, device)
        return (kinds == TEXT) | (kinds == TEXT_PAD) if stream == "text" else (kinds == IMAGE) | (kinds == IMAGE_PAD)


_ACTIVE_LAYOUT: contextvars.ContextVar[TokenLayout | None] = contextvars.ContextVar("zerase_layout", default=None)


@contextmanager
def active_layout(layout: TokenLayout):
    """Make `layout` visible to gated adapters for the duration of one model forward."""
    token = _ACTIVE_LAYOUT.set(layout)
    try:
        yield layout
    finally:
        _ACTIVE_LAYOUT.reset(token)


def current_layout() -> TokenLayout | None:
    return _ACTIVE_LAYOUT.get()
