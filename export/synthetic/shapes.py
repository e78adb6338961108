"""Shape helpers shared by lesions and normal variants: wobbly blobs, smooth noise, hulls.

A lesion is a star-shaped blob in a bone's own (s, d) frame. The same formula gives its pixel
mask (through ``rho``) and its LabelMe outline (through ``outline``), so the polygon traces
exactly what was drawn.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageFilter

from btxrd.export.synthetic.anatomy import Point, Tube


@dataclass(frozen=True)
class Blob:
    """A star-shaped region centred at (sc, dc) with semi-axes a (along) and b (across)."""

    sc: float
    dc: float
    a: float
    b: float
    harmonics: tuple[tuple[int, float, float], ...] = ()  # (k, amplitude, phase)

    def wobble(self, theta: np.ndarray) -> np.ndarray:
        r = np.ones_like(theta)
        for k, amp, phase in self.harmonics:
            r = r + amp * np.cos(k * theta + phase)
        return r

    def rho(self, s: np.ndarray, d: np.ndarray) -> np.ndarray:
        """< 1 inside, 1 on the outline, > 1 outside."""
        u = (s - self.sc) / self.a
        v = (d - self.dc) / self.b
        return np.sqrt(u * u + v * v) / self.wobble(np.arctan2(v, u))

    def outline(self, count: int) -> tuple[np.ndarray, np.ndarray]:
        theta = np.linspace(0.0, 2.0 * math.pi, count, endpoint=False)
        r = self.wobble(theta)
        return self.sc + self.a * r * np.cos(theta), self.dc + self.b * r * np.sin(theta)

    def reach(self) -> float:
        return max(self.a, self.b) * (1.0 + sum(abs(h[1]) for h in self.harmonics))


def random_blob(
    rng: np.random.Generator, sc: float, dc: float, a: float, b: float, roughness: float
) -> Blob:
    """A blob with a few random low-order harmonics; ``roughness`` ~0.05 smooth, ~0.15 lobulated."""
    harmonics = tuple(
        (k, float(rng.uniform(0.3, 1.0) * roughness / (k - 1) ** 0.5), float(rng.uniform(0, 6.283)))
        for k in range(2, 6)
    )
    return Blob(sc, dc, a, b, harmonics)


def blob_polygon(tube: Tube, blob: Blob, count: int) -> list[Point]:
    s, d = blob.outline(count)
    xs, ys = tube.to_image(s, d)
    return [(float(x), float(y)) for x, y in zip(xs, ys, strict=True)]


def blob_bounds(tube: Tube, blob: Blob, margin: float) -> tuple[float, float, float, float]:
    xs, ys = zip(*blob_polygon(tube, blob, 48), strict=True)
    return min(xs) - margin, min(ys) - margin, max(xs) + margin, max(ys) + margin


def smoothstep(edge0: float | np.ndarray, edge1: float | np.ndarray, x: np.ndarray) -> np.ndarray:
    """0 at edge0, 1 at edge1 (either order), smooth in between."""
    span = np.asarray(edge1 - edge0, dtype=np.float32)
    span = np.where(np.abs(span) < 1e-6, np.float32(1e-6), span)  # a zero-width edge is a step
    t = np.clip((x - edge0) / span, 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def smooth_noise(seed: int, size: int = 48) -> np.ndarray:
    """A tileable-enough field of unit variance, sampled with ``sample_field``."""
    rng = np.random.default_rng(seed)
    raw = rng.standard_normal((size, size)).astype(np.float32)
    img = Image.fromarray(((raw * 40) + 128).clip(0, 255).astype(np.uint8), "L")
    field = np.asarray(img.filter(ImageFilter.GaussianBlur(1.2)), dtype=np.float32)
    return (field - field.mean()) / (field.std() + 1e-6)


def convex_hull(points: list[Point]) -> list[Point]:
    """Andrew's monotone chain; counter-clockwise in image coordinates (y down)."""
    pts = sorted(set(points))
    if len(pts) < 3:
        return pts

    def cross(o: Point, a: Point, b: Point) -> float:
        return (a[0] - o[0]) * (b[1] - o[1]) - (a[1] - o[1]) * (b[0] - o[0])

    lower: list[Point] = []
    upper: list[Point] = []
    for p in pts:
        while len(lower) >= 2 and cross(lower[-2], lower[-1], p) <= 0:
            lower.pop()
        lower.append(p)
    for p in reversed(pts):
        while len(upper) >= 2 and cross(upper[-2], upper[-1], p) <= 0:
            upper.pop()
        upper.append(p)
    return lower[:-1] + upper[:-1]
