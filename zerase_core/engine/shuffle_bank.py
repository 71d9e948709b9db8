"""Word orders drawn and encoded before training (`EraseConfig.shuffle_bank`): the text encoder is used once.

Z-Erase shuffles the erase prompt's words at every step (keywords kept whole, probability p), so the text encoder
runs inside the training loop: at Z-Image scale a 4B-parameter Qwen3 beside the DiT. With a bank, K orders of each
erase prompt are drawn from their own random stream and encoded, with every other prompt the trainer uses, before
the first step; a step then takes one of the K (still with probability p, else the prompt as written).
`PreparedConditioner` holds those features and keyword positions and nothing else, so the trainer keeps no reference
to the text encoder and its owner can release it.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy
import torch

from ..common.prompts import PromptSet, shuffle_words


class ShuffleBank:
    def __init__(self, prompts: PromptSet, erase_prompts: Iterable[str], size: int, seed: int):
        if size < 1:
            raise ValueError(f"a shuffle bank needs ≥ 1 order per prompt, got {size}")
        rng = numpy.random.default_rng([seed, 1])  # its own stream: the training stream starts as without it
        self.orders = {
            prompt: [shuffle_words(prompt, prompts.keywords_in(prompt), rng, 1.0) for _ in range(size)]
            for prompt in dict.fromkeys(erase_prompts)
        }

    def prompts(self) -> list[str]:
        return [order for orders in self.orders.values() for order in orders]

    def pick(self, prompt: str, rng: numpy.random.Generator, probability: float) -> str:
        """With `probability` one of the prompt's orders, else the prompt as written."""
        if rng.random() >= probability:
            return prompt
        orders = self.orders[prompt]
        return orders[int(rng.integers(len(orders)))]


class PreparedConditioner:
    """A `TextConditioner` for a fixed set of prompts, encoded one by one by another conditioner it does not keep."""

    def __init__(self, conditioner, prompts: Iterable[str], prompt_set: PromptSet):
        """Features of every prompt, and token rows of the keywords each contains (`prompt_set.keywords_in`)."""
        self._features: dict[str, torch.Tensor] = {}
        self._positions: dict[tuple[str, str], list[int]] = {}
        for prompt in dict.fromkeys(prompts):
            context, lengths = conditioner.encode([prompt])
            self._features[prompt] = context[0, : int(lengths[0])].detach().clone()
            for keyword in prompt_set.keywords_in(prompt):
                self._positions[(prompt, keyword)] = list(conditioner.keyword_positions(prompt, keyword))

    def __len__(self) -> int:
        return len(self._features)

    def encode(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        unknown = [prompt for prompt in prompts if prompt not in self._features]
        if unknown:
            raise ValueError(
                f"prompt {unknown[0]!r} was not encoded before training: with a shuffle bank the "
                "trainer has no text encoder; set shuffle_bank=0 to encode prompts during training"
            )
        rows = [self._features[prompt] for prompt in prompts]
        features = rows[0].new_zeros(len(rows), max(row.shape[0] for row in rows), rows[0].shape[-1])
        for index, row in enumerate(rows):
            features[index, : row.shape[0]] = row
        return features, torch.tensor([row.shape[0] for row in rows])

    def keyword_positions(self, prompt: str, keyword: str) -> list[int]:
        if prompt not in self._features:
            raise ValueError(f"prompt {prompt!r} was not encoded before training")
        return list(self._positions.get((prompt, keyword), []))

    def check_keyword(self, keyword: str) -> None:
        """Keywords were checked by the conditioner that encoded the prompts."""
