"""Small real worlds whose answers are known, for testing the evaluation protocol (imported by tests).

`SceneRenderer` is a renderer (encode + render) built from the nano renderer: a word-embedding text encoder
(one random vector per vocabulary word, no mixing), a decoder that reads each caption position as its nearest word
and renders the scene those words name, and optionally an eraser (every value, or only the concept's own token).
`GalleryJudge` names the attributes of an image by exact nearest neighbour among all canonical renders, so on
canonical renders it is always right. `tiny_nano_world` is a NanoWorld of small random networks.
"""
from __future__ import annotations

import itertools

import numpy
import pytest
import torch
from zerase_fixtures import embed_tokens

from zerase_core.evaluation.metrics import thumbnail_features
from zerase_core.model.dit import ZImageDiT
from zerase_core.nano.codec import CodecConfig, LatentCodec
from zerase_core.nano.evaluator import Evaluator, EvaluatorConfig
from zerase_core.nano.prompts import attribute_of
from zerase_core.nano.render import (
    Scene,
    compose,
    images_to_tensor,
    random_scene,
    render,
    to_uint8,
)
from zerase_core.nano.text_encoder import NanoTextEncoder, TextEncoderConfig
from zerase_core.nano.vocab import ATTRIBUTES, VOCABULARY
from zerase_core.nano.world import NanoWorld


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Small models on 2 shared cores run ~10× faster on one thread than on two competing ones."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


class SceneRenderer:
    """`blank=True`: an eraser that deletes the picture: prompts with the erased value render an empty canvas."""

    def __init__(self, width: int = 24, erase: str | None = None, tokens_only: bool = False, jitter: bool = False,
                 blank: bool = False):
        generator = torch.Generator().manual_seed(0)
        self.table = torch.randn(len(VOCABULARY), width, generator=generator)
        self.erase, self.tokens_only, self.jitter, self.blank = erase, tokens_only, jitter, blank

    def encode(self, prompts):
        return embed_tokens(self.table, [VOCABULARY.encode(prompt) for prompt in prompts])

    def _scene(self, words: list[str], seed: int) -> Scene:
        found, erased_any = {}, False
        for word in words:
            try:
                attribute, value = attribute_of(word)
            except ValueError:
                continue
            erased = self.erase is not None and (word == self.erase if self.tokens_only else
                                                 (attribute, value) == attribute_of(self.erase))
            if erased:
                value = next(other for other in ATTRIBUTES[attribute] if other != value)
                erased_any = True
            found[attribute] = value
        if erased_any and self.blank:
            return Blank(found.get("background", "white"))
        geometry = {}
        if not self.jitter:
            geometry = {"extent": 0.65, "centre": (0.5, 0.5)}
        return random_scene(numpy.random.default_rng(seed), **found, **geometry)

    def render(self, prompts, seeds, offset=None):
        features, lengths = self.encode(prompts)
        if offset is not None:
            width = min(features.shape[1], offset.shape[0])
            features[:, :width] += offset[:width]
        distances = torch.cdist(features, self.table[None].expand(len(prompts), -1, -1))   # (B, L, V)
        nearest = distances.argmin(dim=-1)
        scenes = [self._scene([VOCABULARY.words[int(token)] for token in row[:length]], seed)
                  for row, length, seed in zip(nearest, lengths.tolist(), seeds)]
        return render_batch_with_blanks(scenes)


class Blank:
    """An empty canvas of one background (no object)."""

    def __init__(self, background: str):
        self.background = background


def render_batch_with_blanks(scenes) -> torch.Tensor:
    return images_to_tensor([to_uint8(compose(64, scene.background, [])) if isinstance(scene, Blank) else render(scene, 64)
                             for scene in scenes])


class NoiseRenderer(SceneRenderer):
    """A collapsed model: uniform noise whatever the prompt."""

    def render(self, prompts, seeds, offset=None):
        return torch.stack([torch.rand(3, 64, 64, generator=torch.Generator().manual_seed(seed)) for seed in seeds])


class GalleryJudge:
    """Exact nearest neighbour among the 432 canonical renders (extent 0.65, centred) and the 4 empty canvases
    (shape, colour and pattern "none", as the nano evaluator labels them)."""

    def __init__(self):
        self.labels = [dict(zip(ATTRIBUTES, values)) for values in itertools.product(*ATTRIBUTES.values())]
        scenes = [Scene(**labels) for labels in self.labels]
        for background in ATTRIBUTES["background"]:
            self.labels.append({"shape": "none", "colour": "none", "pattern": "none", "background": background})
            scenes.append(Blank(background))
        self.gallery = render_batch_with_blanks(scenes).flatten(1)

    def verdicts(self, images):
        nearest = torch.cdist(images.flatten(1), self.gallery).argmin(dim=1)
        return [dict(self.labels[int(index)]) for index in nearest]

    def features(self, images):
        return thumbnail_features(images, side=2)


def tiny_nano_world(dit: ZImageDiT, seed: int = 0) -> NanoWorld:
    """A NanoWorld around `dit` (cap_feat_dim 32) with small random text encoder, codec and evaluator."""
    torch.manual_seed(seed)
    text = NanoTextEncoder(TextEncoderConfig(width=dit.config.cap_feat_dim, heads=4, ffn_width=64))
    codec = LatentCodec(CodecConfig(widths=(8, 8, 16, 16)))
    evaluator = Evaluator(EvaluatorConfig(widths=(8, 8, 8, 8), feature_dim=16))
    return NanoWorld(dit, text.eval().requires_grad_(False), codec.eval().requires_grad_(False),
                     evaluator.eval().requires_grad_(False))
