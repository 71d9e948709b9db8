"""Image→keyword attention, the quantity Z-Erase's L_attn suppresses: `AttentionCapture` asks a forward of the DiT
for it, `keyword_attention` computes it per joint block without storing the image × text probabilities."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from .layers import Recomputed


@dataclass
class AttentionCapture:
    """Collects image-query → keyword-key softmax attention of every joint block.

    `columns` (B, K) are positions in the text segment; `column_mask` (B, K) marks which are real (samples may
    have different keyword counts). After a forward, `maps` holds one (B, H, N_image, K) tensor per joint layer.
    Only the keyword columns are kept; the image × text probabilities are never stored (see `keyword_attention`).
    `rows` = only the first `rows` samples of the batch capture (a stacked batch whose other samples need no maps;
    `columns` may still cover the whole batch); the maps then hold those samples only.
    """

    columns: torch.Tensor
    column_mask: torch.Tensor | None = None
    maps: list[torch.Tensor] = field(default_factory=list)
    rows: int | None = None

    def probe(
        self, image_start: int, image_tokens: int, key_mask: torch.Tensor | None, checkpointed: bool = False
    ) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
        """`attention_maps(query, key)` of one joint block: the keyword attention of the capturing rows, columns
        that are not real zeroed. In a `checkpointed` block (recomputed whole in the backward) the capture keeps what
        it needs for the moment of that block's backward instead of rerunning itself once more."""
        rows = self.rows if self.rows is not None else self.columns.shape[0]
        mask = None if key_mask is None else key_mask[:rows]

        def attention_maps(query: torch.Tensor, key: torch.Tensor) -> torch.Tensor:
            self._move_to(key.device)
            maps = keyword_attention(
                query[:rows], key[:rows], mask, image_start, image_tokens, self.columns[:rows], not checkpointed
            )
            if self.column_mask is not None:
                maps = maps * self.column_mask[:rows, None, None, :].to(maps.dtype)
            return maps

        return attention_maps

    def _move_to(self, device: torch.device) -> None:
        """Columns and mask onto the model's device once per capture, not once per joint block; built on the host
        from token positions, they go without waiting for the device's queue (non_blocking)."""
        if self.columns.device != device:
            self.columns = self.columns.to(device, non_blocking=True)
        if self.column_mask is not None and self.column_mask.device != device:
            self.column_mask = self.column_mask.to(device, non_blocking=True)


def keyword_attention(
    query, key, key_mask, image_start: int, image_tokens: int, columns, recompute: bool = True
) -> torch.Tensor:
    """Softmax attention of image queries to the keyword columns: (B, H, N_image, K), in float32.

    Computed as attention with one-hot values (value j = 1 at column j), so the fused attention kernel normalises
    over all keys without materialising the (N_image × L) probabilities; its backward recomputes them blockwise.
    When gradients flow to the queries or keys it keeps only them (the block's attention keeps them anyway) and
    reruns itself in the backward (`layers.Recomputed`: the same gradients bit for bit), instead of keeping its
    float32 queries, keys, values and output: 4·(2·N_image + L)·d bytes per block and sample, about a third of what
    a bf16 block keeps. The rerun costs ≈ 4 % of a block's forward FLOPs at 512² (≈ 14 % at 1024²), once per block
    of the erase forward; `recompute=False` in a checkpointed block, which reruns it with the block anyway.
    """

    def compute(query, key):
        return _keyword_attention(query, key, key_mask, image_start, image_tokens, columns)

    if recompute and torch.is_grad_enabled() and (query.requires_grad or key.requires_grad):
        return Recomputed.apply(compute, query, key)
    return compute(query, key)


def _keyword_attention(query, key, key_mask, image_start: int, image_tokens: int, columns) -> torch.Tensor:
    batch, heads, length, head_dim = key.shape
    image_query = query[:, :, image_start : image_start + image_tokens].float()
    mask = None if key_mask is None else key_mask[:, None, None, :]
    found = []
    for start in range(0, columns.shape[1], head_dim):  # one-hot values fill at most head_dim channels
        chunk = columns[:, start : start + head_dim].to(key.device)
        values = F.one_hot(chunk, length).to(torch.float32).transpose(1, 2)  # (B, L, k)
        values = F.pad(values, (0, head_dim - chunk.shape[1]))[:, None].expand(batch, heads, length, head_dim)
        attended = F.scaled_dot_product_attention(image_query, key.float(), values, attn_mask=mask)
        found.append(attended[..., : chunk.shape[1]])
    return found[0] if len(found) == 1 else torch.cat(found, dim=-1)
