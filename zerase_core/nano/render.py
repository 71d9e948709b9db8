"""Renderer of the nano world: one flat, axis-aligned coloured shape on a plain background.

Image convention for the whole project: a batch of images is a float tensor (B, 3, H, W) with values in [0, 1]
(`render_batch`); a single render is numpy uint8 (H, W, 3). Shapes are drawn on a 3× supersampled grid and
box-downsampled, so edges are anti-aliased. Nothing is rotated: square and diamond differ only by orientation.
`none_renders.render_none` draws the evaluator's `none` class (no clean single shape).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Any

import numpy
import torch

from .vocab import ATTRIBUTES, PATTERNS, SHAPES

SUPERSAMPLE = 3
EXTENT_RANGE = (0.5, 0.8)  # shape extent as a fraction of the image side
POSITION_MARGIN = 0.8  # fraction of the free margin a random shape may be shifted by
NONE = "none"

COLOUR_RGB: dict[str, tuple[int, int, int]] = {
    "red": (215, 35, 35),
    "green": (35, 165, 60),
    "blue": (40, 80, 225),
    "yellow": (240, 210, 30),
    "purple": (145, 55, 195),
    "orange": (245, 135, 25),
}
BACKGROUND_RGB: dict[str, tuple[int, int, int]] = {
    "white": (245, 245, 245),
    "black": (20, 20, 20),
    "gray": (125, 125, 125),
    "pink": (250, 195, 215),
}
# Pattern marks are the shape colour mixed 55 % towards black, or towards white on the black background: they
# differ from the shape colour and contrast with the background, so silhouette and hue survive on every background.
MARK_MIX = 0.55
STAR_INNER_RATIO = 0.4
CROSS_ARM_WIDTH = 1.0 / 3.0  # arm width as a fraction of the extent
STRIPE_PERIOD = 13.0  # px at 64 px, perpendicular to the diagonal stripes
DOT_SPACING = 12.0  # px at 64 px
DOT_RADIUS = 2.75  # px at 64 px


@dataclass(frozen=True)
class Scene:
    """One nano image: canonical attribute values plus geometry (fractions of the image side)."""

    shape: str
    colour: str
    pattern: str
    background: str
    extent: float = 0.65  # side of the shape's bounding box / image side
    centre: tuple[float, float] = (0.5, 0.5)  # (x, y), x to the right, y down

    def __post_init__(self) -> None:
        for attribute, values in ATTRIBUTES.items():
            value = getattr(self, attribute)
            if value not in values:
                raise ValueError(f"Scene {attribute} {value!r} is not one of {list(values)}")
        if not 0.05 <= self.extent <= 1.0:
            raise ValueError(f"Scene extent {self.extent} must be in [0.05, 1] (fraction of the image side)")
        half = self.extent / 2
        for axis, position in zip("xy", self.centre, strict=True):
            if not half - 1e-6 <= position <= 1 - half + 1e-6:
                raise ValueError(
                    f"Scene centre {axis}={position} puts a shape of extent {self.extent} outside the image; "
                    f"use a value in [{half:.3f}, {1 - half:.3f}]"
                )

    def labels(self) -> dict[str, str]:
        return {attribute: getattr(self, attribute) for attribute in ATTRIBUTES}


def check_size(size: int) -> None:
    if size < 64 or size % 16:
        raise ValueError(f"image size {size} is not supported; use a multiple of 16 that is at least 64 (e.g. 64)")


def random_scene(rng: numpy.random.Generator, **fixed: object) -> Scene:
    """A uniformly random scene; any field (e.g. shape="star", extent=0.6) may be fixed by keyword."""
    unknown = set(fixed) - set(Scene.__dataclass_fields__)
    if unknown:
        raise ValueError(
            f"random_scene got unknown field(s) {sorted(unknown)}; fields: {list(Scene.__dataclass_fields__)}"
        )
    values: dict[str, Any] = {}  # Scene's keyword arguments: attribute names, extent, centre
    for attribute, table in ATTRIBUTES.items():
        names = list(table)
        values[attribute] = names[int(rng.integers(len(names)))]
    values["extent"] = float(rng.uniform(*EXTENT_RANGE))
    values.update({key: value for key, value in fixed.items() if key != "centre"})
    # Offsets use 80 % of the free margin: shapes never touch the border, whose cut-off outline is ambiguous.
    margin = POSITION_MARGIN * (1.0 - float(values["extent"])) / 2
    values["centre"] = (0.5 + float(rng.uniform(-margin, margin)), 0.5 + float(rng.uniform(-margin, margin)))
    if "centre" in fixed:
        values["centre"] = fixed["centre"]
    return Scene(**values)


@functools.lru_cache(maxsize=8)
def supersampled_grid(size: int) -> tuple[numpy.ndarray, numpy.ndarray]:
    """Supersampled pixel-centre coordinates in output-pixel units, each (S, S)."""
    side = size * SUPERSAMPLE
    line = (numpy.arange(side, dtype=numpy.float32) + 0.5) / SUPERSAMPLE
    return numpy.meshgrid(line, line)  # x varies along columns, y along rows


def shape_mask(shape: str, u: numpy.ndarray, v: numpy.ndarray) -> numpy.ndarray:
    """Boolean mask of `shape` in coordinates scaled so the bounding box is [-1, 1]² (v points down)."""
    if shape == "circle":
        return u * u + v * v <= 1.0
    if shape == "square":
        return (numpy.abs(u) <= 1.0) & (numpy.abs(v) <= 1.0)
    if shape == "diamond":
        return numpy.abs(u) + numpy.abs(v) <= 1.0
    if shape == "triangle":  # point up, base at the bottom
        return (v <= 1.0) & (numpy.abs(u) <= (v + 1.0) / 2)
    if shape == "cross":
        arm = CROSS_ARM_WIDTH
        return ((numpy.abs(u) <= arm) & (numpy.abs(v) <= 1.0)) | ((numpy.abs(v) <= arm) & (numpy.abs(u) <= 1.0))
    if shape == "star":
        return _star_mask(u, v)
    raise ValueError(f"unknown shape {shape!r}; known shapes: {list(SHAPES)}")


def _star_mask(u: numpy.ndarray, v: numpy.ndarray) -> numpy.ndarray:
    # Five points, point up; outer radius 1.05 so the width fills the box, shifted down to centre its bounding box.
    outer = 1.05
    sector = 2 * math.pi / 5
    v = v - outer * (1 - math.cos(math.pi / 5)) / 2
    radius = numpy.sqrt(u * u + v * v) / outer
    angle = numpy.arctan2(u, -v)  # 0 = up
    folded = numpy.abs(numpy.mod(angle + sector / 2, sector) - sector / 2)
    px, py = radius * numpy.sin(folded), radius * numpy.cos(folded)
    # Inside when on the origin's side of the edge from the outer point (0, 1) to the inner vertex.
    dx = STAR_INNER_RATIO * math.sin(sector / 2)
    dy = STAR_INNER_RATIO * math.cos(sector / 2) - 1.0
    return dx * (py - 1.0) - dy * px <= 0.0


def pattern_mask(
    pattern: str, x: numpy.ndarray, y: numpy.ndarray, centre: tuple[float, float], size: int
) -> numpy.ndarray:
    """Where pattern marks go, in output-pixel coordinates; the shape centre always keeps the shape colour."""
    scale = size / 64
    if pattern == "plain":
        return numpy.zeros(x.shape, dtype=bool)
    if pattern == "striped":
        diagonal = ((x - centre[0]) + (y - centre[1])) / math.sqrt(2) / (STRIPE_PERIOD * scale)
        return numpy.mod(diagonal + 0.25, 1.0) >= 0.5
    if pattern == "dotted":
        spacing = DOT_SPACING * scale
        offset_x = numpy.mod((x - centre[0]) / spacing, 1.0) - 0.5
        offset_y = numpy.mod((y - centre[1]) / spacing, 1.0) - 0.5
        return (offset_x * offset_x + offset_y * offset_y) * spacing * spacing <= (DOT_RADIUS * scale) ** 2
    raise ValueError(f"unknown pattern {pattern!r}; known patterns: {list(PATTERNS)}")


def mark_rgb(colour: str, background: str) -> numpy.ndarray:
    base = numpy.asarray(COLOUR_RGB[colour], dtype=numpy.float32)
    target = 255.0 if background == "black" else 0.0
    return base + MARK_MIX * (target - base)


def _downsample(coverage: numpy.ndarray, size: int) -> numpy.ndarray:
    return coverage.reshape(size, SUPERSAMPLE, size, SUPERSAMPLE).mean(axis=(1, 3), dtype=numpy.float32)


def compose(size: int, background: str, layers: list[tuple[numpy.ndarray, numpy.ndarray, str]]) -> numpy.ndarray:
    """Float (size, size, 3) image in [0, 255] from supersampled (shape mask, mark mask, colour) layers."""
    image = numpy.empty((size, size, 3), dtype=numpy.float32)
    image[:] = BACKGROUND_RGB[background]
    for shape_cover, mark_cover, colour in layers:
        body = _downsample(shape_cover.astype(numpy.float32), size)[..., None]
        marks = _downsample((shape_cover & mark_cover).astype(numpy.float32), size)[..., None]
        colour_rgb = numpy.asarray(COLOUR_RGB[colour], dtype=numpy.float32)
        image = image * (1 - body) + colour_rgb * (body - marks) + mark_rgb(colour, background) * marks
    return image


def scene_layer(scene: Scene, size: int) -> tuple[numpy.ndarray, numpy.ndarray, str]:
    """Supersampled (shape mask, mark mask, colour); masks are evaluated only inside the shape's bounding box."""
    x, y = supersampled_grid(size)
    centre = (scene.centre[0] * size, scene.centre[1] * size)
    half = scene.extent * size / 2
    side = size * SUPERSAMPLE
    rows = slice(
        max(0, int((centre[1] - half - 1) * SUPERSAMPLE)), min(side, int((centre[1] + half + 1) * SUPERSAMPLE) + 1)
    )
    columns = slice(
        max(0, int((centre[0] - half - 1) * SUPERSAMPLE)), min(side, int((centre[0] + half + 1) * SUPERSAMPLE) + 1)
    )
    x, y = x[rows, columns], y[rows, columns]
    shape = numpy.zeros((side, side), dtype=bool)
    marks = numpy.zeros((side, side), dtype=bool)
    shape[rows, columns] = shape_mask(scene.shape, (x - centre[0]) / half, (y - centre[1]) / half)
    marks[rows, columns] = pattern_mask(scene.pattern, x, y, centre, size)
    return shape, marks, scene.colour


def to_uint8(image: numpy.ndarray) -> numpy.ndarray:
    return numpy.clip(numpy.rint(image), 0, 255).astype(numpy.uint8)


def render(scene: Scene, size: int = 64) -> numpy.ndarray:
    """uint8 (size, size, 3) image of `scene`."""
    check_size(size)
    return to_uint8(compose(size, scene.background, [scene_layer(scene, size)]))


def images_to_tensor(images: list[numpy.ndarray]) -> torch.Tensor:
    """uint8 (H, W, 3) images -> float (B, 3, H, W) in [0, 1]."""
    stacked = torch.from_numpy(numpy.stack(images))
    return stacked.permute(0, 3, 1, 2).float().div_(255.0).contiguous()


def render_batch(scenes: list[Scene], size: int = 64) -> torch.Tensor:
    """Float (B, 3, size, size) in [0, 1], the project's image-tensor convention."""
    return images_to_tensor([render(scene, size) for scene in scenes])
