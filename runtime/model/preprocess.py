"""Preprocessing, defined once: runtime, export's parity check and explain all call this.

It reproduces torchvision's ``Resize((h, w)) -> ToTensor() -> Normalize(mean, std)`` on a PIL
image, which is what the model was trained with.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from btxrd.runtime.decode.decoded import DecodedImage
from btxrd.runtime.model.contract import Preprocessing

_FILTERS = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
}


def resize_for_model(image: Image.Image, prep: Preprocessing) -> Image.Image:
    """Stretch to the network's input size (the geometric transform CAMs and masks share)."""
    height, width = prep.image_size
    if image.size == (width, height):
        return image
    return image.resize((width, height), _FILTERS[prep.resize])


def to_input_array(image: Image.Image, prep: Preprocessing) -> np.ndarray:
    """A resized "L" or "RGB" image to a normalised float32 (3, H, W) array."""
    # Grayscale is resized as one channel and replicated afterwards: Pillow resizes channels
    # independently, so this equals converting to RGB first, at a third of the cost.
    pixels = np.asarray(image, dtype=np.uint8)
    if pixels.ndim == 2:
        pixels = np.broadcast_to(pixels[:, :, None], (*pixels.shape, 3))
    # Divide (not multiply by 1/255) so values match torchvision ToTensor bit for bit.
    chw = pixels.transpose(2, 0, 1).astype(np.float32) / np.float32(prep.pixel_max)
    mean = np.asarray(prep.mean, dtype=np.float32)[:, None, None]
    std = np.asarray(prep.std, dtype=np.float32)[:, None, None]
    return np.ascontiguousarray((chw - mean) / std, dtype=np.float32)


def preprocess(decoded: DecodedImage | Image.Image, prep: Preprocessing) -> np.ndarray:
    """Decoded image to the model's (3, H, W) float32 input."""
    image = decoded.image if isinstance(decoded, DecodedImage) else decoded
    return to_input_array(resize_for_model(image, prep), prep)
