"""The pictures the page shows: the film as the model read it, a heatmap layer for the opacity
slider, the ``--cam`` overlay, and the colour scale; all from ``btxrd.runtime.output.overlay``.

The film is kept at most ``VIEW_MAX_SIDE`` pixels on its longer side: a page shows no more, and
the server keeps the last results (``serve.kept_results``) in memory for the page to fetch.
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from PIL import Image

from btxrd.runtime.output.overlay import cam_overlay, jet, normalise_cam, resize_cam

VIEW_MAX_SIDE = 1024
# PNG compression level 1: about a third of the default's encoding time, files a little larger;
# these pictures travel over loopback.
_FAST_PNG = 1


@dataclass(frozen=True)
class View:
    """What the page can ask for about one classified upload after the answer."""

    name: str  # the upload's file name, as the record's image_name
    film: Image.Image  # 8-bit L or RGB, upright, at most VIEW_MAX_SIDE on its longer side
    cams: Mapping[str, np.ndarray]  # class -> [0, 1] map; a flat map is left out
    scores: Mapping[str, float]
    prediction: str | None


def view_of(
    name: str,
    image: Image.Image,
    cam: np.ndarray | None,
    class_names: tuple[str, ...],
    scores: Mapping[str, float],
    prediction: str | None,
) -> View:
    """A ``View`` of one classified image (``cam``: the model's C x h x w maps, or None)."""
    film = image
    if max(image.size) > VIEW_MAX_SIDE:
        film = image.copy()
        film.thumbnail((VIEW_MAX_SIDE, VIEW_MAX_SIDE), Image.Resampling.BILINEAR)
    maps: dict[str, np.ndarray] = {}
    if cam is not None:
        for index, class_name in enumerate(class_names):
            cam01 = normalise_cam(cam[index])
            if cam01 is not None:
                maps[class_name] = cam01
    return View(name, film, maps, dict(scores), prediction)


def png_bytes(picture: Image.Image, info=None) -> bytes:
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG", compress_level=_FAST_PNG, pnginfo=info)
    return buffer.getvalue()


def film_png(view: View) -> bytes:
    return png_bytes(view.film)


def layer_png(view: View, class_name: str) -> bytes:
    """The heatmap alone, at the film's size: JET colours whose opacity is the attention, so
    the page's slider (CSS opacity ``a``) shows what ``overlay(film, map, alpha=a)`` draws."""
    attention = np.clip(resize_cam(view.cams[class_name], view.film.size), 0.0, 1.0)
    rgba = np.dstack([jet(attention), np.rint(attention * 255).astype(np.uint8)])
    return png_bytes(Image.fromarray(rgba, mode="RGBA"))


def overlay_png(
    view: View, class_name: str, *, alpha: float, model_sha256: str, intended_use: str
) -> bytes:
    """The overlay ``btxrd-run --cam`` writes (caption, colour scale, PNG metadata), drawn on
    the film kept for the page (the CLI's is at the file's full size;
    tests/serve/test_serve_api.py checks the two are equal where the sizes are)."""
    picture, metadata = cam_overlay(
        view.film,
        view.cams[class_name],
        name=view.name,
        source=view.name,
        class_name=class_name,
        probability=view.scores[class_name],
        prediction=view.prediction,
        model_sha256=model_sha256,
        intended_use=intended_use,
        alpha=alpha,
    )
    return png_bytes(picture, metadata)


def scale_png(width: int = 256, height: int = 12) -> bytes:
    """The colour scale (low to high) of every heatmap, from the same JET function."""
    ramp = np.tile(np.linspace(0.0, 1.0, width), (height, 1))
    return png_bytes(Image.fromarray(jet(ramp)))
