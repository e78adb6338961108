"""Pictures with Pillow only: attention overlays, mask views, captioned cells and grids.

Cells show the radiograph at its own aspect ratio (the CAM and mask, computed on the stretched
model input, are stretched back), so what a reader sees is the image as it was taken.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from btxrd.runtime.output.atomic import write_bytes
from btxrd.runtime.output.overlay import jet, overlay, png_info, resize_cam, wrap_text

CELL = 240
BACKGROUND = (28, 28, 30)
TEXT = (236, 236, 236)
MUTED = (160, 160, 165)
LESION = (255, 255, 255)
PEAK = (0, 255, 0)
_PAD = 6
# Pictures embedded in report.html only: no visible ringing at the cells' size.
JPEG_QUALITY = 88


@lru_cache(maxsize=8)
def font(size: int = 13) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    return ImageFont.load_default(size=size)


def display_size(size: tuple[int, int], box: int = CELL) -> tuple[int, int]:
    """``size`` (width, height) scaled to fit a ``box`` square, aspect kept."""
    width, height = size
    scale = box / max(width, height)
    return max(1, round(width * scale)), max(1, round(height * scale))


def fit(image: Image.Image, box: int = CELL) -> Image.Image:
    """``image`` scaled to fit a ``box`` square, its mode kept: a grayscale radiograph stays one
    band, a third of the memory of RGB (a run keeps one per image)."""
    return image.resize(display_size(image.size, box), Image.Resampling.BILINEAR)


def thumbnail(image: Image.Image, box: int = CELL) -> Image.Image:
    """The radiograph as RGB, scaled to fit a ``box`` square. Resized before the conversion:
    Pillow resizes bands independently, so the pixels are those of converting first, and an
    image that already fits (``fit``) is only copied."""
    return fit(image, box).convert("RGB")


def attention(
    image: Image.Image,
    cam01: np.ndarray,
    alpha: float,
    mask: np.ndarray | None = None,
    box: int = CELL,
) -> Image.Image:
    """CAM overlay on the thumbnail; the lesion outlined and the CAM's maximum marked if a mask
    is given."""
    view = overlay(thumbnail(image, box), cam01, alpha)
    if mask is not None:
        view = outline(view, mask, LESION)
        view = mark_peak(view, cam01)
    return view


def heatmap(cam01: np.ndarray, size: tuple[int, int]) -> Image.Image:
    return Image.fromarray(jet(resize_cam(cam01, size)))


def mask_view(mask: np.ndarray, size: tuple[int, int]) -> Image.Image:
    return _resized_mask(mask, size).convert("RGB")


def outline(image: Image.Image, mask: np.ndarray, colour: tuple[int, int, int]) -> Image.Image:
    """Draw the boundary of ``mask`` (any grid, stretched to the image) onto a copy of ``image``."""
    inside = np.asarray(_resized_mask(mask, image.size)) > 0
    core = inside.copy()
    core[1:, :] &= inside[:-1, :]
    core[:-1, :] &= inside[1:, :]
    core[:, 1:] &= inside[:, :-1]
    core[:, :-1] &= inside[:, 1:]
    edge = inside & ~core
    pixels = np.array(image.convert("RGB"))
    pixels[edge] = colour
    return Image.fromarray(pixels)


def mark_peak(image: Image.Image, cam01: np.ndarray) -> Image.Image:
    """A small cross where the CAM is highest (stretched to the image)."""
    row, col = np.unravel_index(int(np.argmax(cam01)), cam01.shape)
    x = (col + 0.5) * image.width / cam01.shape[1]
    y = (row + 0.5) * image.height / cam01.shape[0]
    marked = image.copy()
    draw = ImageDraw.Draw(marked)
    arm = max(4, image.width // 40)
    draw.line([(x - arm, y), (x + arm, y)], fill=PEAK, width=2)
    draw.line([(x, y - arm), (x, y + arm)], fill=PEAK, width=2)
    return marked


def captioned(image: Image.Image | None, lines: Sequence[str], box: int = CELL) -> Image.Image:
    """A ``box``-wide cell: caption lines above the image centred in a ``box`` square."""
    size = 13
    caption = [w for line in lines for w in wrap_text(line, font(size), box - 2 * _PAD)]
    line_height = size + 4
    top = _PAD + line_height * len(caption)
    cell = Image.new("RGB", (box, top + box + _PAD), BACKGROUND)
    draw = ImageDraw.Draw(cell)
    for i, text in enumerate(caption):
        draw.text((_PAD, _PAD + i * line_height), text, fill=TEXT if i == 0 else MUTED, font=font())
    if image is not None:
        cell.paste(image, ((box - image.width) // 2, top + (box - image.height) // 2))
    return cell


def grid(
    rows: Sequence[tuple[str, Sequence[Image.Image]]],
    title: str | None = None,
    columns: int | None = None,
    empty: str = "none",
) -> Image.Image:
    """Rows of cells, each row labelled on the left; an empty row says ``empty``."""
    label_width = 70
    columns = columns or max([len(cells) for _, cells in rows] + [1])
    cell_width = max([c.width for _, cells in rows for c in cells] + [CELL])
    heights = [max([c.height for c in cells] + [40]) for _, cells in rows]
    title_height = 34 if title else 0
    canvas = Image.new(
        "RGB",
        (label_width + columns * (cell_width + _PAD) + _PAD, title_height + sum(heights) + _PAD),
        BACKGROUND,
    )
    draw = ImageDraw.Draw(canvas)
    if title:
        draw.text((_PAD, 8), title, fill=TEXT, font=font(18))
    y = title_height
    for (label, cells), height in zip(rows, heights, strict=True):
        draw.text((_PAD, y + _PAD), label, fill=TEXT, font=font(16))
        if not cells:
            draw.text((label_width, y + _PAD), empty, fill=MUTED, font=font())
        for i, cell in enumerate(cells):
            canvas.paste(cell, (label_width + i * (cell_width + _PAD), y))
        y += height
    return canvas


def stack(images: Sequence[Image.Image]) -> Image.Image:
    """Images one below the other, left-aligned."""
    width = max(im.width for im in images)
    canvas = Image.new("RGB", (width, sum(im.height for im in images)), BACKGROUND)
    y = 0
    for im in images:
        canvas.paste(im, (0, y))
        y += im.height
    return canvas


@dataclass(frozen=True)
class Png:
    """A figure encoded once (optimised PNG encoding is the slow part of writing one): the bytes
    its file holds are the bytes report.html embeds."""

    data: bytes
    width: int
    height: int

    def data_uri(self) -> str:
        return "data:image/png;base64," + base64.b64encode(self.data).decode("ascii")


@dataclass(frozen=True)
class Jpeg:
    """A picture for report.html only (the files beside it stay PNG). An attention overlay cell
    is about a sixth of its optimised PNG's bytes and encodes in well under a millisecond, where
    the optimised PNG takes about 50 ms (measured on the demo split's images)."""

    data: bytes
    width: int
    height: int

    def data_uri(self) -> str:
        return "data:image/jpeg;base64," + base64.b64encode(self.data).decode("ascii")


def encode_jpeg(image: Image.Image, quality: int = JPEG_QUALITY) -> Jpeg:
    """``image`` as JPEG bytes; a grayscale ("L") image stays one band, a smaller file."""
    buffer = io.BytesIO()
    image.convert("L" if image.mode == "L" else "RGB").save(buffer, format="JPEG", quality=quality)
    return Jpeg(buffer.getvalue(), image.width, image.height)


def encode_png(image: Image.Image, metadata: Mapping[str, str] | None = None) -> Png:
    """``image`` as RGB PNG bytes, with ``metadata`` as ``btxrd.*`` text chunks."""
    buffer = io.BytesIO()
    info = png_info(metadata) if metadata else None
    image.convert("RGB").save(buffer, format="PNG", optimize=True, pnginfo=info)
    return Png(buffer.getvalue(), image.width, image.height)


def write_png(png: Png, path: str | Path) -> Path:
    """Write encoded PNG bytes through the atomic helper."""
    write_bytes(path, png.data)
    return Path(path)


def save_png(
    image: Image.Image, path: str | Path, metadata: Mapping[str, str] | None = None
) -> Path:
    """Encode ``image`` and write it (for a figure that is not embedded anywhere else)."""
    return write_png(encode_png(image, metadata), path)


def _resized_mask(mask: np.ndarray, size: tuple[int, int]) -> Image.Image:
    image = Image.fromarray(np.asarray(mask, dtype=np.uint8) * 255)
    return image.resize(size, Image.Resampling.NEAREST)
