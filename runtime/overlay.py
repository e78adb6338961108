"""Heatmap overlays with Pillow and numpy only (no cv2 in the runtime)."""

from __future__ import annotations

import numpy as np
from PIL import Image

from btxrd.runtime.settings import OVERLAY_ALPHA


def normalise_cam(cam: np.ndarray) -> np.ndarray | None:
    """Min-max to [0, 1], as pytorch-grad-cam does; ``None`` for a flat (degenerate) map."""
    cam = np.asarray(cam, dtype=np.float32)
    if not np.isfinite(cam).all():
        return None
    low, high = float(cam.min()), float(cam.max())
    if high - low <= 1e-12:
        return None
    return (cam - low) / (high - low)


def resize_cam(cam: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of a float map to (width, height)."""
    return np.asarray(
        Image.fromarray(cam.astype(np.float32)).resize(size, Image.Resampling.BILINEAR)
    )


def jet(values: np.ndarray) -> np.ndarray:
    """The JET colormap (as OpenCV's COLORMAP_JET) for values in [0, 1] -> uint8 RGB."""
    v = np.clip(values, 0.0, 1.0)
    red = np.clip(1.5 - np.abs(4.0 * v - 3.0), 0.0, 1.0)
    green = np.clip(1.5 - np.abs(4.0 * v - 2.0), 0.0, 1.0)
    blue = np.clip(1.5 - np.abs(4.0 * v - 1.0), 0.0, 1.0)
    return np.rint(np.stack([red, green, blue], axis=-1) * 255).astype(np.uint8)


def overlay(image: Image.Image, cam01: np.ndarray, alpha: float = OVERLAY_ALPHA) -> Image.Image:
    """Blend a [0, 1] map (any size) over ``image`` at the image's own size, RGB."""
    base = np.asarray(image.convert("RGB"), dtype=np.float32)
    heat = jet(resize_cam(cam01, image.size)).astype(np.float32)
    blended = (1.0 - alpha) * base + alpha * heat
    return Image.fromarray(np.rint(blended).clip(0, 255).astype(np.uint8))
