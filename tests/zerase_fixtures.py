"""Shared fixtures: tiny real models built in code (never mocks of zerase_core)."""
import copy
import functools
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch

from zerase_core.model.config import DiTConfig
from zerase_core.model.dit import ZImageDiT

TINY_CONFIG = DiTConfig(dim=256, n_layers=2, n_refiner_layers=1, n_heads=8, axes_dims=(8, 12, 12),
                        cap_feat_dim=32, pad_tokens_multiple=8)


def randomized_dit(config: DiTConfig = TINY_CONFIG, seed: int = 0, std: float = 0.05) -> ZImageDiT:
    """A DiT whose every parameter is random (no zero-initialised identity blocks), frozen."""
    torch.manual_seed(seed)
    model = ZImageDiT(config)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.normal_(0.0, std)
            if parameter.dim() == 1 and parameter.numel() in (config.dim, config.head_dim, config.cap_feat_dim):
                parameter.add_(1.0)   # norm weights around 1
    return model.eval().requires_grad_(False)


def embed_tokens(table: torch.Tensor, ids: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    """(features (B, L, D), lengths (B,)): rows of token ids looked up in `table` (V, D), zero-padded to L."""
    features = torch.zeros(len(ids), max(len(row) for row in ids), table.shape[1])
    for index, row in enumerate(ids):
        features[index, :len(row)] = table[row]
    return features, torch.tensor([len(row) for row in ids])


def dit_output(model: ZImageDiT, seed: int = 1) -> torch.Tensor:
    """The model's float32 output at t = 0.6 for a 4×4 latent and 5 text tokens drawn from `seed`."""
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(1, model.config.in_channels, 4, 4, generator=generator)
    context = torch.randn(1, 5, model.config.cap_feat_dim, generator=generator)
    with torch.no_grad():
        return model(x, torch.tensor([0.6]), context).float()


class WordConditioner:
    """A real (tiny) text conditioner: one random embedding per word, one token per word."""

    def __init__(self, words: list[str], width: int = 32, seed: int = 0):
        generator = torch.Generator().manual_seed(seed)
        self.words = {word: index for index, word in enumerate(["<empty>"] + words)}
        self.table = torch.randn(len(self.words), width, generator=generator)

    def _ids(self, prompt: str) -> list[int]:
        words = prompt.lower().replace(",", " , ").split()
        for word in words:
            if word not in self.words:
                raise ValueError(f"unknown word {word!r}")
        return [self.words[word] for word in words] or [0]

    def encode(self, prompts):
        return embed_tokens(self.table, [self._ids(prompt) for prompt in prompts])

    def keyword_positions(self, prompt, keyword):
        ids, target = self._ids(prompt), self._ids(keyword)
        return [start + offset for start in range(len(ids) - len(target) + 1)
                if ids[start:start + len(target)] == target for offset in range(len(target))]

    def check_keyword(self, keyword):
        self._ids(keyword)


@pytest.fixture
def tiny_dit():
    return randomized_dit()


@pytest.fixture
def word_conditioner():
    return WordConditioner("a red blue green circle square star on white black background with".split())


@functools.lru_cache(maxsize=8)
def _built_dit(config: DiTConfig, seed: int, std: float) -> ZImageDiT:
    return randomized_dit(config, seed, std)


def fresh_dit(config: DiTConfig = TINY_CONFIG, seed: int = 0, std: float = 0.05) -> ZImageDiT:
    """`randomized_dit(...)`, built once per arguments and handed out as a deep copy (tests may attach and train)."""
    return copy.deepcopy(_built_dit(config, seed, std))


def can_create_in(folder: Path) -> bool:
    """Whether this process can create a file in `folder` (tried for real: root ignores permission bits)."""
    probe = folder / ".zerase-write-probe"
    try:
        probe.write_bytes(b"")
    except OSError:
        return False
    probe.unlink()
    return True


@pytest.fixture
def unwritable_folder(tmp_path):
    """A folder this process cannot write: mode 0500, or for root (who ignores modes) sysfs, which refuses new files
    to everyone."""
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        found = next((folder for folder in (locked, Path("/sys/kernel")) if folder.is_dir()
                      and not can_create_in(folder)), None)
        if found is None:
            pytest.skip("no unwritable folder on this machine (root without sysfs)")
        yield found
    finally:
        locked.chmod(0o700)


@contextmanager
def kept_bytes(module: torch.nn.Module):
    """Yields a dict that fills, while inside, with the bytes of each storage autograd saves for the backward,
    `module`'s parameters left out."""
    parameters = {parameter.untyped_storage().data_ptr() for parameter in module.parameters()}
    kept: dict[int, int] = {}

    def pack(tensor):
        if tensor.untyped_storage().data_ptr() not in parameters:
            kept[tensor.untyped_storage().data_ptr()] = tensor.untyped_storage().nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        yield kept
