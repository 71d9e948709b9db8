"""The evaluator's `none` class (images with no clean single shape) and training batches that mix them with renders.

A `none` image is blank, a lumpy blob, a pair of shapes, a blurred render or a scrambled one (`NONE_KINDS`); its
labels say which attributes are still visible (the rule above `NONE_KINDS`). Same image convention as `render`.
"""

from __future__ import annotations

import math

import numpy
import torch

from .render import (
    NONE,
    Scene,
    check_size,
    compose,
    images_to_tensor,
    pattern_mask,
    random_scene,
    render,
    scene_layer,
    supersampled_grid,
    to_uint8,
)
from .vocab import BACKGROUNDS, COLOURS, PATTERNS, SHAPES

# Kinds of `none` image. Labelling rule: shape is always "none"; the background is always known; colour and
# pattern are known only when the image holds one coloured object whose colour / pattern is still clearly visible
# (a blob keeps both, a blurred render keeps its colour, a scrambled render keeps both, a pair of differently
# coloured shapes keeps only their shared pattern, a blank background keeps neither).
NONE_KINDS = ("blank", "blob", "pair", "blurred", "scrambled")


def _choice(rng: numpy.random.Generator, names: list[str] | tuple[str, ...]) -> str:
    return names[int(rng.integers(len(names)))]


def _blob_layer(
    rng: numpy.random.Generator, size: int, colour: str, pattern: str
) -> tuple[numpy.ndarray, numpy.ndarray, str]:
    # Radius modulated by harmonics 1-3 with random phases: lumpy, never circle-, star- or cross-like.
    x, y = supersampled_grid(size)
    centre = (size * (0.5 + rng.uniform(-0.1, 0.1)), size * (0.5 + rng.uniform(-0.1, 0.1)))
    base = size * rng.uniform(0.2, 0.32)
    angle = numpy.arctan2(y - centre[1], x - centre[0])
    modulation = numpy.ones_like(angle)
    for harmonic, (low, high) in zip((1, 2, 3), ((0.0, 0.15), (0.12, 0.3), (0.12, 0.3)), strict=True):
        modulation += rng.uniform(low, high) * numpy.cos(harmonic * angle + rng.uniform(0, 2 * math.pi))
    inside = numpy.hypot(x - centre[0], y - centre[1]) <= base * modulation
    return inside, pattern_mask(pattern, x, y, centre, size), colour


def _pair_layers(rng: numpy.random.Generator, size: int, background: str) -> tuple[list, str]:
    shapes = rng.choice(list(SHAPES), size=2, replace=False)
    colours = rng.choice(list(COLOURS), size=2, replace=False)
    pattern = _choice(rng, list(PATTERNS))
    extent = float(rng.uniform(0.25, 0.4))
    first = random_scene(
        rng, shape=str(shapes[0]), colour=str(colours[0]), pattern=pattern, background=background, extent=extent
    )
    direction = rng.uniform(0, 2 * math.pi)
    distance = extent * rng.uniform(0.35, 0.7)
    low, high = extent / 2, 1 - extent / 2
    centre = (
        float(numpy.clip(first.centre[0] + distance * math.cos(direction), low, high)),
        float(numpy.clip(first.centre[1] + distance * math.sin(direction), low, high)),
    )
    second = Scene(str(shapes[1]), str(colours[1]), pattern, background, extent, centre)
    return [scene_layer(first, size), scene_layer(second, size)], pattern


def _box_blur(image: numpy.ndarray, radius: int, passes: int = 3) -> numpy.ndarray:
    # Repeated box blur approximates a Gaussian of sigma ≈ radius.
    for _ in range(passes):
        for axis in (0, 1):
            padded = numpy.pad(image, [(radius + 1, radius) if a == axis else (0, 0) for a in range(3)], mode="edge")
            cumulative = numpy.cumsum(padded, axis=axis, dtype=numpy.float32)
            upper = numpy.take(cumulative, numpy.arange(2 * radius + 1, cumulative.shape[axis]), axis=axis)
            lower = numpy.take(cumulative, numpy.arange(0, cumulative.shape[axis] - 2 * radius - 1), axis=axis)
            image = (upper - lower) / (2 * radius + 1)
    return image


def _scramble(image: numpy.ndarray, rng: numpy.random.Generator, tiles: int = 4) -> numpy.ndarray:
    size = image.shape[0]
    tile = size // tiles
    blocks = image.reshape(tiles, tile, tiles, tile, 3).transpose(0, 2, 1, 3, 4).reshape(tiles * tiles, tile, tile, 3)
    blocks = blocks[rng.permutation(tiles * tiles)]
    return blocks.reshape(tiles, tiles, tile, tile, 3).transpose(0, 2, 1, 3, 4).reshape(size, size, 3)


def render_none(rng: numpy.random.Generator, size: int = 64) -> tuple[numpy.ndarray, dict[str, str]]:
    """A uint8 image with no clean single shape, and its labels (rule above `NONE_KINDS`)."""
    check_size(size)
    kind = _choice(rng, NONE_KINDS)
    background = _choice(rng, list(BACKGROUNDS))
    labels = {"shape": NONE, "colour": NONE, "pattern": NONE, "background": background}
    if kind == "blank":
        image = compose(size, background, [])
    elif kind == "blob":
        colour, pattern = _choice(rng, list(COLOURS)), _choice(rng, list(PATTERNS))
        image = compose(size, background, [_blob_layer(rng, size, colour, pattern)])
        labels.update(colour=colour, pattern=pattern)
    elif kind == "pair":
        layers, pattern = _pair_layers(rng, size, background)
        image = compose(size, background, layers)
        labels.update(pattern=pattern)
    else:
        scene = random_scene(rng, background=background)
        image = compose(size, background, [scene_layer(scene, size)])
        if kind == "blurred":
            image = _box_blur(image, radius=max(1, size // 10))
            labels.update(colour=scene.colour)
        else:
            image = _scramble(image, rng)
            labels.update(colour=scene.colour, pattern=scene.pattern)
    return to_uint8(image), labels


def render_mixed(
    rng: numpy.random.Generator, count: int, size: int = 64, none_fraction: float = 1 / 8
) -> tuple[torch.Tensor, list[dict[str, str]]]:
    """Training batch: float (count, 3, size, size) in [0, 1], each a `none` render with probability `none_fraction`."""
    images, labels = [], []
    for _ in range(count):
        if rng.random() < none_fraction:
            image, label = render_none(rng, size)
        else:
            scene = random_scene(rng)
            image, label = render(scene, size), scene.labels()
        images.append(image)
        labels.append(label)
    return images_to_tensor(images), labels
