"""Z-Image's S3-DiT as ComfyUI's `NextDiT` computes it (`z_image_modulation=True`), with ComfyUI's state-dict keys;
with `config.kind == "lumina2"`, Lumina-Image-2.0's NextDiT (GQA, SiLU adaLN, no pad tokens: pad multiple 1, t·1).

Flow: t = 1 − sigma -> t_embed -> cap_embed + cap pad -> context_refiner (text only, unmodulated)
      -> patchify -> x_embed + x pad -> noise_refiner (image only) -> joint layers over [text | image | image pad]
      -> final_layer -> unpatchify -> negate.

Sign and time conventions (ComfyUI's): `timesteps` is sigma (1 = pure noise); x_t = (1 − sigma)·x0 + sigma·noise;
the returned velocity is v = noise − x0, so `denoised = x_t − sigma·v`. The raw network predicts x0 − noise.

Beyond ComfyUI, batches may mix caption lengths (`context_lengths`): each sample keeps its own padded text
segment and position ids, and masked filler keeps the image segment aligned (see `layout.TokenLayout`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

import torch
import torch.nn.functional as F
from torch import nn

from .block_calls import run_block, run_probed_block
from .config import DiTConfig
from .keyword_attention import AttentionCapture, keyword_attention
from .layers import FinalLayer, JointTransformerBlock, TimestepEmbedder, rope_frequencies
from .layout import BATCH_PAD, TEXT_PAD, TokenLayout, active_layout


@dataclass
class JointInput:
    """The input of the joint layers (`ZImageDiT.prefix`): the [text | image] sequence after the refiners, with
    its position tables, timestep embedding, key mask and layout, and the latent size of the output."""

    hidden: torch.Tensor  # (B, text_span + image_span, dim)
    cos: torch.Tensor  # (B, L, 1, D/2)
    sin: torch.Tensor
    adaln: torch.Tensor  # (B, adaln width)
    key_mask: torch.Tensor | None  # (B, L) bool, None when nothing is masked
    layout: TokenLayout
    size: tuple[int, int]  # latent (H, W)


class ZImageDiT(nn.Module):
    def __init__(self, config: DiTConfig, device=None, dtype=None):
        super().__init__()
        self.config = config
        dim = config.dim
        patch_features = config.patch_size * config.patch_size * config.in_channels
        self.x_embedder = nn.Linear(patch_features, dim, device=device, dtype=dtype)
        self.noise_refiner = nn.ModuleList(
            JointTransformerBlock(config, modulation=True, device=device, dtype=dtype)
            for _ in range(config.n_refiner_layers)
        )
        self.context_refiner = nn.ModuleList(
            JointTransformerBlock(config, modulation=False, device=device, dtype=dtype)
            for _ in range(config.n_refiner_layers)
        )
        self.t_embedder = TimestepEmbedder(config.time_width, config.adaln_width, device=device, dtype=dtype)
        self.cap_embedder = nn.Sequential(
            nn.RMSNorm(config.cap_feat_dim, eps=config.norm_eps, device=device, dtype=dtype),
            nn.Linear(config.cap_feat_dim, dim, device=device, dtype=dtype),
        )
        self.layers = nn.ModuleList(
            JointTransformerBlock(config, modulation=True, device=device, dtype=dtype) for _ in range(config.n_layers)
        )
        self.final_layer = FinalLayer(config, device=device, dtype=dtype)
        if config.pad_tokens:
            self.x_pad_token = nn.Parameter(torch.empty((1, dim), device=device, dtype=dtype))
            self.cap_pad_token = nn.Parameter(torch.empty((1, dim), device=device, dtype=dtype))
        self.gradient_checkpointing = False
        # with gradient_checkpointing: how many joint blocks (the first ones) are checkpointed; None = all (the policy
        # that sets it: engine/memory_policy.checkpoint_blocks)
        self.checkpointed_layers: int | None = None
        if device is None or torch.device(device).type != "meta":
            self.initialize_for_training()

    @property
    def dtype(self) -> torch.dtype:
        return self.x_embedder.weight.dtype

    def initialize_for_training(self) -> None:
        """Default Linear init; pad tokens small normal; adaLN and output zero (every block starts as identity)."""
        with torch.no_grad():
            if self.config.pad_tokens:
                nn.init.normal_(self.x_pad_token, std=0.02)
                nn.init.normal_(self.cap_pad_token, std=0.02)
            for block in self.layers + self.noise_refiner:  # modulated blocks only
                _zero(cast(JointTransformerBlock, block).adaLN_modulation[-1])
            _zero(self.final_layer.adaLN_modulation[1], self.final_layer.linear)

    def layout_for(self, x: torch.Tensor, context: torch.Tensor, context_lengths=None) -> TokenLayout:
        return self._layout(context, context_lengths, x.shape[-2:])

    def _layout(self, context: torch.Tensor, context_lengths, latent_hw) -> TokenLayout:
        if context_lengths is None:
            lengths = [context.shape[1]] * context.shape[0]
        else:
            lengths = [int(n) for n in torch.as_tensor(context_lengths).tolist()]
            if len(lengths) != context.shape[0] or max(lengths) > context.shape[1] or min(lengths) < 1:
                raise ValueError(
                    f"context_lengths {lengths} must give 1..{context.shape[1]} tokens for each of "
                    f"{context.shape[0]} samples"
                )
        return TokenLayout.from_shapes(lengths, latent_hw, self.config.patch_size, self.config.pad_tokens_multiple)

    def forward(
        self,
        x,
        timesteps,
        context,
        context_lengths=None,
        capture: AttentionCapture | None = None,
        suppress_keys: torch.Tensor | None = None,
    ):
        """x (B, C, H, W) latents; timesteps (B,) sigma; context (B, L, cap_feat_dim) -> velocity (B, C, H, W).

        `suppress_keys` (B, L_text) bool removes those text tokens from every joint layer's keys (token zeroing,
        the paper's brittle inference-time baseline).
        """
        return self.joint(self.prefix(x, timesteps, context, context_lengths, suppress_keys), capture)

    def prefix(self, x, timesteps, context, context_lengths=None, suppress_keys=None) -> JointInput:
        """Everything before the first joint layer: embeddings, refiners, position tables, masks. It depends on the
        refiners' weights only: a caller whose adapters leave the refiners alone may keep it, or its text and image
        segments, and reuse them (`EraseTrainer` does, for its fixed prompts, x_t pool and λ probe)."""
        self._check_inputs(x, context)
        layout = self.layout_for(x, context, context_lengths)
        with active_layout(layout):
            adaln_input = self._adaln(timesteps)
            rope = self._rope(layout, x.device)
            text = self._text_segment(context, layout, rope)
            image = self._image_segment(x, adaln_input, layout, rope)
            return self._assemble(text, image, adaln_input, layout, rope, tuple(x.shape[-2:]), suppress_keys)

    def text_segment(self, context, context_lengths, latent_hw) -> torch.Tensor:
        """Captions -> the text segment after the context refiner, (B, text_span, dim); rows past a caption's own
        padded length are batch-padding filler (masked everywhere downstream)."""
        layout = self._layout(context, context_lengths, latent_hw)
        with active_layout(layout):
            return self._text_segment(context, layout, self._rope(layout, context.device))

    def image_segment(self, x, timesteps, context_lengths) -> torch.Tensor:
        """Latents -> the image segment after the noise refiner, (B, image_span, dim). Image position ids start
        after each caption's padded text, so the segment depends on the caption's padded length, not its words."""
        layout = TokenLayout.from_shapes(
            context_lengths, x.shape[-2:], self.config.patch_size, self.config.pad_tokens_multiple
        )
        with active_layout(layout):
            return self._image_segment(x, self._adaln(timesteps), layout, self._rope(layout, x.device))

    def joint_input(self, text, image, timesteps, context_lengths, latent_hw) -> JointInput:
        """A `prefix` result from kept segments: `text` (B, ≥ text_span, dim) — rows past a caption's padded length
        are ignored — and `image` (B, image_span, dim) computed for the same captions' padded lengths."""
        layout = TokenLayout.from_shapes(
            context_lengths, latent_hw, self.config.patch_size, self.config.pad_tokens_multiple
        )
        rope = self._rope(layout, image.device)
        return self._assemble(
            text[:, : layout.text_span], image, self._adaln(timesteps), layout, rope, tuple(latent_hw)
        )

    def _check_inputs(self, x, context) -> None:
        if x.dim() != 4 or context.dim() != 3 or context.shape[0] != x.shape[0]:
            raise ValueError(
                f"expected x (B,C,H,W) and context (B,L,D) with equal B, got {tuple(x.shape)}, {tuple(context.shape)}"
            )

    def _adaln(self, timesteps):
        return self.t_embedder((1.0 - timesteps.float()) * self.config.time_scale, self.dtype)

    def _rope(self, layout: TokenLayout, device):
        """(text cos, text sin, image cos, image sin) position tables of the layout."""
        axes, theta = self.config.axes_dims, self.config.rope_theta
        text_cos, text_sin = rope_frequencies(layout.text_positions(device), axes, theta)
        return (text_cos, text_sin, *rope_frequencies(layout.image_positions(device), axes, theta))

    def _checkpointed(self) -> bool:
        return self.gradient_checkpointing and torch.is_grad_enabled()

    def _text_segment(self, context, layout: TokenLayout, rope):
        text = self._embed_text(context.to(self.dtype), layout.kinds("context_refiner", context.device))
        mask = layout.key_mask("context_refiner", context.device)
        for block in self.context_refiner:
            text = run_block(block, (text, rope[0], rope[1], None, mask), self._checkpointed())
        return text

    def _image_segment(self, x, adaln_input, layout: TokenLayout, rope):
        image = self._embed_image(_pad_to_patch(x.to(self.dtype), self.config.patch_size), layout)
        for block in self.noise_refiner:
            image = run_block(block, (image, rope[2], rope[3], adaln_input, None), self._checkpointed())
        return image

    def _assemble(self, text, image, adaln_input, layout: TokenLayout, rope, latent_hw, suppress_keys=None):
        joint_mask = layout.key_mask("layers", image.device)
        if suppress_keys is not None:
            joint_mask = _suppressed(joint_mask, suppress_keys, layout, image.device)
        text_cos, text_sin, image_cos, image_sin = rope
        return JointInput(
            torch.cat([text, image], dim=1),
            torch.cat([text_cos, image_cos], dim=1),
            torch.cat([text_sin, image_sin], dim=1),
            adaln_input,
            joint_mask,
            layout,
            latent_hw,
        )

    def joint(self, inputs: JointInput, capture: AttentionCapture | None = None) -> torch.Tensor:
        """The joint layers and the output head on a `prefix` result -> velocity (B, C, H, W)."""
        layout = inputs.layout
        joint = inputs.hidden
        checkpointed = self._checkpointed()
        limit = len(self.layers) if self.checkpointed_layers is None else self.checkpointed_layers
        with active_layout(layout):
            for index, block in enumerate(self.layers):
                block_inputs = (joint, inputs.cos, inputs.sin, inputs.adaln, inputs.key_mask)
                if capture is None:
                    joint = run_block(block, block_inputs, checkpointed and index < limit)
                    continue
                recomputed = checkpointed and index < limit
                probe = capture.probe(layout.text_span, layout.image_tokens, inputs.key_mask, recomputed)
                joint, maps = run_probed_block(block, block_inputs, recomputed, probe)
                capture.maps.append(maps)
            output = self.final_layer(joint, inputs.adaln)
        batch = output.shape[0]
        patch = self.config.patch_size
        height, width = inputs.size
        start = layout.text_span
        rows, columns = layout.grid
        tokens = output[:, start : start + layout.image_tokens]
        # (B, rows·cols, ph·pw·C) in patch order (ph, pw, c) -> (B, C, H, W)
        image_out = tokens.view(batch, rows, columns, patch, patch, -1).permute(0, 5, 1, 3, 2, 4)
        image_out = image_out.reshape(batch, -1, rows * patch, columns * patch)[:, :, :height, :width]
        return -image_out

    def _embed_text(self, context, kinds):
        features = self.cap_embedder(context)
        span = kinds.shape[1]
        if features.shape[1] < span:
            features = F.pad(features, (0, 0, 0, span - features.shape[1]))
        features = features[:, :span]
        kinds = kinds.unsqueeze(-1)
        if self.config.pad_tokens:
            features = torch.where(kinds == TEXT_PAD, self.cap_pad_token.to(features.dtype), features)
        return torch.where(kinds == BATCH_PAD, torch.zeros_like(features), features)

    def _embed_image(self, x, layout: TokenLayout):
        batch, channels = x.shape[:2]
        patch = self.config.patch_size
        rows, columns = layout.grid
        patches = x.view(batch, channels, rows, patch, columns, patch).permute(0, 2, 4, 3, 5, 1)
        tokens = self.x_embedder(patches.reshape(batch, rows * columns, -1))
        pad = layout.image_span - layout.image_tokens
        if pad:
            tokens = torch.cat([tokens, self.x_pad_token.to(tokens.dtype).expand(batch, pad, -1)], dim=1)
        return tokens


def _zero(*linears: nn.Module) -> None:
    for linear in linears:
        for parameter in linear.parameters():  # weight, bias
            nn.init.zeros_(parameter)


def _suppressed(joint_mask, suppress_keys, layout: TokenLayout, device) -> torch.Tensor:
    keep = torch.ones(layout.batch_size, layout.sequence_length("layers"), dtype=torch.bool, device=device)
    width = min(suppress_keys.shape[1], layout.text_span)
    keep[:, :width] &= ~suppress_keys[:, :width].to(device)
    return keep if joint_mask is None else joint_mask & keep


def _pad_to_patch(x: torch.Tensor, patch: int) -> torch.Tensor:
    pad_h = (-x.shape[-2]) % patch
    pad_w = (-x.shape[-1]) % patch
    if pad_h or pad_w:
        x = F.pad(x, (0, pad_w, 0, pad_h), mode="circular")
    return x


def count_parameters(model: nn.Module) -> int:
    return sum(parameter.numel() for parameter in model.parameters())


__all__ = ["ZImageDiT", "AttentionCapture", "JointInput", "keyword_attention", "count_parameters"]
