"""Labelled image grids (PNG) for the CLI and the ComfyUI compare node."""

from __future__ import annotations

from pathlib import Path

import numpy
import torch
from PIL import Image, ImageDraw, ImageFont

from .files import atomic_write


def _to_pil(image: torch.Tensor, scale: int) -> Image.Image:
    array = (image.clamp(0, 1).permute(1, 2, 0).cpu().float().numpy() * 255).round().astype(numpy.uint8)
    picture = Image.fromarray(array)
    return picture.resize((picture.width * scale, picture.height * scale), Image.Resampling.NEAREST)


def _wrap(text: str, width: int) -> list[str]:
    lines, line = [], ""
    for word in text.split():
        candidate = f"{line} {word}".strip()
        if len(candidate) > width and line:
            lines.append(line)
            line = word
        else:
            line = candidate
    return lines + ([line] if line else [])


def labelled_grid(
    images: torch.Tensor,
    labels: list[str],
    columns: int,
    scale: int = 2,
    column_titles: list[str] | None = None,
    label_lines: int = 4,
) -> Image.Image:
    """images (N, 3, H, W) in [0, 1] -> a grid with each image's label (wrapped) under it."""
    if len(labels) != len(images):
        raise ValueError(f"{len(images)} images but {len(labels)} labels")
    font = ImageFont.load_default()
    cell_w, cell_h = images.shape[-1] * scale, images.shape[-2] * scale
    text_h, title_h = 11 * label_lines + 4, (14 if column_titles else 0)
    rows = -(-len(images) // columns)
    sheet = Image.new("RGB", (columns * (cell_w + 4) + 4, title_h + rows * (cell_h + text_h + 4) + 4), "white")
    draw = ImageDraw.Draw(sheet)
    for column, title in enumerate(column_titles or []):
        draw.text((4 + column * (cell_w + 4), 2), title, fill="black", font=font)
    characters = max(8, cell_w // 6)
    for index, (image, label) in enumerate(zip(images, labels, strict=True)):
        row, column = divmod(index, columns)
        x, y = 4 + column * (cell_w + 4), title_h + 4 + row * (cell_h + text_h + 4)
        sheet.paste(_to_pil(image, scale), (x, y))
        for line_number, line in enumerate(_wrap(label, characters)[:label_lines]):
            draw.text((x, y + cell_h + 2 + 11 * line_number), line, fill="black", font=font)
    return sheet


def save_png(picture: Image.Image, path: str | Path) -> Path:
    path = Path(path)
    if path.suffix.lower() != ".png":
        raise ValueError(f"output {path} must end in .png")
    return atomic_write(path, lambda temporary: picture.save(temporary, format="PNG"))
