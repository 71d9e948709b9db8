"""Kept refiner outputs of the x_t pool: a training step runs only the joint layers.

With adapters on the joint layers only, everything a forward computes before the first joint layer is frozen: the
text segment (caption embedding + context refiner) is a function of the prompt, the image segment (patch embedding +
noise refiner) a function of (x_t, t, the caption's padded length, which shifts the image position ids). The teacher
cache build runs every pool state with every fixed prompt once anyway; `SegmentCache` keeps those segments, and a
training step assembles its rows from them: the ∅ and anchor rows entirely, the word-shuffled erase rows with a
fresh context-refiner pass of their captions only. The cache is filled in the build's fixed order and never during
training, so a resumed run computes the same numbers as an uninterrupted one. The segments are kept where the pool
keeps its states (`TrajectoryPool.store_device`) and the rows a step assembles are moved to the model's device.
"""

from __future__ import annotations

import torch

from ..model.dit import JointInput, ZImageDiT
from ..model.layout import TokenLayout
from .trajectory import TrajectoryPool


class SegmentCache:
    def __init__(self, latent_hw: tuple[int, int]):
        height, width = latent_hw
        self.latent_hw = (height, width)
        self.text: dict[str, tuple[int, torch.Tensor]] = {}  # prompt -> (tokens, (padded tokens, dim))
        self.image: dict[tuple, torch.Tensor] = {}  # (states, p, k, padded tokens) -> (span, dim)

    def bytes(self) -> int:
        tensors = [segment for _, segment in self.text.values()] + list(self.image.values())
        return sum(tensor.numel() * tensor.element_size() for tensor in tensors)

    def to(self, device: torch.device) -> None:
        self.text = {prompt: (tokens, segment.to(device)) for prompt, (tokens, segment) in self.text.items()}
        self.image = {key: segment.to(device) for key, segment in self.image.items()}

    @torch.no_grad()
    def fill(self, model: ZImageDiT, pool: TrajectoryPool, picks, kind: str, texts: list[str], conditioner) -> None:
        """Teacher velocities of `picks` for one prompt kind into `pool.teacher` (the same numbers as
        `teacher_velocities`: one forward, split at the first joint layer), keeping the forward's segments."""
        states, sigma = pool.batch(picks, kind)
        context, lengths = conditioner.encode(texts)
        inputs = model.prefix(states, sigma, context.to(states.device), lengths)
        velocities = model.joint(inputs).float()
        layout = inputs.layout
        store = pool.store_device
        for row, ((p, k), text) in enumerate(zip(picks, texts, strict=True)):
            pool.teacher[(p, k, kind)] = velocities[row].to(store)
            padded = layout.text_padded[row]
            image = inputs.hidden[row, layout.text_span :]
            self.image.setdefault((pool.source(kind), p, k, padded), image.clone().to(store))
            self.text.setdefault(text, (layout.text_lengths[row], inputs.hidden[row, :padded].clone().to(store)))

    @torch.no_grad()
    def add_texts(self, model: ZImageDiT, conditioner, prompts: list[str]) -> None:
        """Keep the text segments of more prompts (before training: the shuffle bank's word orders)."""
        for prompt, text in zip(prompts, self._texts(model, conditioner, prompts), strict=True):
            self.text.setdefault(prompt, (text[0], text[1].clone()))

    def joint_input(
        self, model: ZImageDiT, conditioner, pool: TrajectoryPool, picks, prompts: list[str], kinds: list[str]
    ) -> JointInput:
        """The joint layers' input for rows (pick, prompt, state kind): kept segments where the cache has them,
        the refiners for the rest (prompts the build never saw, such as word-shuffled captions)."""
        texts = self._texts(model, conditioner, prompts)
        lengths = [tokens for tokens, _ in texts]
        padded = [segment.shape[0] for _, segment in texts]
        keys = [(pool.source(kind), p, k, size) for (p, k), kind, size in zip(picks, kinds, padded, strict=True)]
        sigma = torch.stack([pool.sigmas[k] for _, k in picks]).to(pool.device)
        missing = [row for row, key in enumerate(keys) if key not in self.image]
        computed = {}
        if missing:
            states, _ = pool.batch([picks[row] for row in missing], [kinds[row] for row in missing])
            fresh = model.image_segment(states, sigma[missing], [lengths[row] for row in missing])
            computed = dict(zip(missing, fresh, strict=True))
        image = torch.stack(
            [computed[row] if row in computed else self.image[key].to(pool.device) for row, key in enumerate(keys)]
        )
        text = image.new_zeros(len(prompts), max(padded), image.shape[-1])  # batch padding: masked filler
        for row, (_, segment) in enumerate(texts):
            text[row, : segment.shape[0]] = segment
        return model.joint_input(text, image, sigma, lengths, self.latent_hw)

    def _texts(self, model: ZImageDiT, conditioner, prompts: list[str]) -> list[tuple[int, torch.Tensor]]:
        missing = list(dict.fromkeys(prompt for prompt in prompts if prompt not in self.text))
        fresh = {}
        if missing:
            context, lengths = conditioner.encode(missing)
            segments = model.text_segment(context.to(model.x_embedder.weight.device), lengths, self.latent_hw)
            layout = TokenLayout.from_shapes(
                lengths, self.latent_hw, model.config.patch_size, model.config.pad_tokens_multiple
            )
            fresh = {
                prompt: (layout.text_lengths[row], segments[row, : layout.text_padded[row]])
                for row, prompt in enumerate(missing)
            }
        return [self.text[prompt] if prompt in self.text else fresh[prompt] for prompt in prompts]
