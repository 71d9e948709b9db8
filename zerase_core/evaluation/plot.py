"""Line charts drawn with Pillow (no plotting library): one panel per swept parameter, categorical x axis."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from ..common.files import atomic_write

COLOURS = ((214, 39, 40), (31, 119, 180), (44, 160, 44), (148, 103, 189), (255, 127, 14))
PANEL_SIZE = (420, 300)
MARGIN = (48, 28, 16, 40)  # left, top, right, bottom (axis labels and title)


@dataclass(frozen=True)
class Panel:
    title: str
    x_labels: tuple[str, ...]
    series: dict[str, list[float | None]]  # name -> one y per x label (None = missing)
    y_range: tuple[float, float] = (-0.2, 1.0)

    def __post_init__(self) -> None:
        if len(self.x_labels) < 1 or not self.series:
            raise ValueError(f"panel {self.title!r} needs at least one x value and one series")
        for name, values in self.series.items():
            if len(values) != len(self.x_labels):
                raise ValueError(
                    f"series {name!r} of panel {self.title!r} has {len(values)} values for "
                    f"{len(self.x_labels)} x labels"
                )
        if not self.y_range[0] < self.y_range[1]:
            raise ValueError(f"y_range {self.y_range} must be (low, high) with low < high")


def _draw_panel(draw: ImageDraw.ImageDraw, panel: Panel, origin: tuple[int, int], font) -> None:
    left, top = origin[0] + MARGIN[0], origin[1] + MARGIN[1]
    right, bottom = origin[0] + PANEL_SIZE[0] - MARGIN[2], origin[1] + PANEL_SIZE[1] - MARGIN[3]
    low, high = panel.y_range
    draw.text((left, origin[1] + 6), panel.title, fill="black", font=font)
    draw.rectangle((left, top, right, bottom), outline="black")

    def y_of(value: float) -> float:
        return bottom - (min(max(value, low), high) - low) / (high - low) * (bottom - top)

    steps = 6
    for index in range(steps + 1):
        value = low + (high - low) * index / steps
        draw.line((left, y_of(value), right, y_of(value)), fill=(225, 225, 225))
        draw.text((origin[0] + 4, y_of(value) - 5), f"{value:.2f}", fill="black", font=font)
    count = len(panel.x_labels)
    xs = [left + (right - left) * (index + 0.5) / count for index in range(count)]
    for x, label in zip(xs, panel.x_labels, strict=True):
        draw.line((x, bottom, x, bottom + 4), fill="black")
        draw.text((x - 3 * len(label), bottom + 8), label, fill="black", font=font)
    for number, (name, values) in enumerate(panel.series.items()):
        colour = COLOURS[number % len(COLOURS)]
        points = [(x, y_of(value)) for x, value in zip(xs, values, strict=True) if value is not None]
        if len(points) > 1:
            draw.line(points, fill=colour, width=2)
        for x, y in points:
            draw.ellipse((x - 3, y - 3, x + 3, y + 3), fill=colour)
        draw.text((right - 60, top + 6 + 12 * number), name, fill=colour, font=font)


def line_chart(panels: list[Panel], path: str | Path) -> Path:
    """Panels side by side in one PNG, written atomically."""
    path = Path(path)
    if path.suffix.lower() != ".png":
        raise ValueError(f"plot path {path} must end in .png")
    if not panels:
        raise ValueError("line_chart needs at least one panel")
    picture = Image.new("RGB", (PANEL_SIZE[0] * len(panels), PANEL_SIZE[1]), "white")
    draw = ImageDraw.Draw(picture)
    font = ImageFont.load_default()
    for index, panel in enumerate(panels):
        _draw_panel(draw, panel, (index * PANEL_SIZE[0], 0), font)
    return atomic_write(path, lambda temporary: picture.save(temporary, format="PNG"))
