"""Radiographic primitives: long, round and flat bones and soft tissue, as projected density.

Everything renders into "density" (line integral of attenuation, dimensionless): the radiograph is
``1 - exp(-density)`` later. A long bone is a hollow cylinder, so its projection has a bright
cortex at the edges and a darker medulla for free; round bones are ellipsoid shells. Each part
is rendered only inside its bounding box, vectorised with numpy.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

Point = tuple[float, float]

# Attenuation per unit of normalised path length, tuned by eye against real radiographs.
CORTEX_MU = 1.25
MARROW_MU = 0.2
TRABECULAR_MU = 0.36


@dataclass(frozen=True)
class Tube:
    """A long bone from ``p0`` to ``p1`` (pixels): shaft radius, flared ends, rounded caps."""

    name: str  # the dataset.xlsx column it sets: "femur", "hand", ...
    p0: Point
    p1: Point
    radius: float
    flare0: float = 1.6  # end radius / shaft radius
    flare1: float = 1.6
    cortex: float = 0.28  # shaft cortex thickness / shaft radius
    bend: float = 0.0  # bow of the shaft as a fraction of its length
    density: float = 1.0
    end_zone: float = 2.6  # reach of the thin-cortex, trabecular ends, in shaft radii
    cap: float = 0.55  # length of the rounded ends / their radius (1 = hemispherical)
    joint0: bool = False  # True if end 0 is an articular end inside the picture
    joint1: bool = False
    lesion_weight: float = 1.0  # how likely a tumour is drawn on this bone

    @property
    def length(self) -> float:
        return math.dist(self.p0, self.p1)

    def frame(self) -> tuple[float, float, float, float]:
        """Unit vectors along (ux, uy) and across (nx, ny) the bone."""
        length = max(self.length, 1e-6)
        ux, uy = (self.p1[0] - self.p0[0]) / length, (self.p1[1] - self.p0[1]) / length
        return ux, uy, -uy, ux

    def bow(self, s: np.ndarray) -> np.ndarray:
        t = np.clip(s / max(self.length, 1e-6), 0.0, 1.0)
        return self.bend * self.length * 4.0 * t * (1.0 - t)

    def to_local(self, xs: np.ndarray, ys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Pixel coordinates -> (s along the bone from p0, d signed distance from its axis)."""
        ux, uy, nx, ny = self.frame()
        dx, dy = xs - self.p0[0], ys - self.p0[1]
        s = dx * ux + dy * uy
        return s, dx * nx + dy * ny - self.bow(s)

    def to_image(self, s: np.ndarray, d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        ux, uy, nx, ny = self.frame()
        d = d + self.bow(s)
        return self.p0[0] + ux * s + nx * d, self.p0[1] + uy * s + ny * d

    def outer_radius(self, s: np.ndarray) -> np.ndarray:
        """Radius profile: shaft, flared metaphyses, elliptical articular caps."""
        s = np.asarray(s, dtype=np.float32)
        r, length = self.radius, self.length
        w0, w1 = 1.6 * r * self.flare0, 1.6 * r * self.flare1
        near0 = np.exp(-((np.clip(s, 0, None) / w0) ** 2))
        near1 = np.exp(-((np.clip(length - s, 0, None) / w1) ** 2))
        profile = r * (1.0 + (self.flare0 - 1.0) * near0 + (self.flare1 - 1.0) * near1)
        cap0, cap1 = self.cap * r * self.flare0, self.cap * r * self.flare1
        profile = profile * _cap(s / cap0) * _cap((length - s) / cap1)
        return profile

    def cortex_thickness(self, s: np.ndarray) -> np.ndarray:
        """Thick cortex in the diaphysis, a thin shell over the metaphyses and epiphyses."""
        ends = self.end_weight(s)
        return self.radius * (self.cortex * (1.0 - ends) + 0.07 * ends)

    def end_weight(self, s: np.ndarray) -> np.ndarray:
        """1 at the articular ends, 0 in the mid-shaft (where marrow replaces trabecular bone)."""
        w = self.end_zone * self.radius
        e0 = np.exp(-((np.clip(s, 0, None) / (w * self.flare0)) ** 2))
        e1 = np.exp(-((np.clip(self.length - s, 0, None) / (w * self.flare1)) ** 2))
        return np.maximum(e0, e1)

    def bbox(self, margin: float = 0.0) -> tuple[float, float, float, float]:
        reach = self.radius * max(self.flare0, self.flare1) * 1.1 + abs(self.bend) * self.length
        reach += margin
        xs, ys = (self.p0[0], self.p1[0]), (self.p0[1], self.p1[1])
        return min(xs) - reach, min(ys) - reach, max(xs) + reach, max(ys) + reach


@dataclass(frozen=True)
class Ellipsoid:
    """A compact bone (carpal, tarsal, patella, femoral head): an ellipsoid shell of cortex."""

    name: str
    center: Point
    axes: tuple[float, float]
    angle: float = 0.0  # radians
    shell: float = 0.8  # inner/outer ratio: smaller means thicker cortex
    density: float = 1.0


@dataclass(frozen=True)
class Plate:
    """A flat bone (iliac wing, scapula) or a hole in one: a polygon with a bright rim."""

    name: str
    outline: tuple[Point, ...]
    density: float = 0.45
    rim: float = 0.5
    hole: bool = False


@dataclass(frozen=True)
class SoftTube:
    """Soft tissue around a limb segment: skin and fat over muscle, radius r0 -> r1."""

    p0: Point
    p1: Point
    r0: float
    r1: float
    norm: float  # path length (px) that counts as one unit of tissue thickness
    density: float = 0.55


@dataclass(frozen=True)
class TubePatch:
    """A tube's local coordinates over a pixel box, handed to lesion and variant modifiers."""

    x0: int
    y0: int
    s: np.ndarray
    d: np.ndarray
    outer: np.ndarray
    inner: np.ndarray

    def grid(self) -> tuple[np.ndarray, np.ndarray]:
        """Pixel coordinates of the patch, for modifiers that need a second frame."""
        h, w = self.s.shape
        xs = np.arange(self.x0, self.x0 + w, dtype=np.float32)[None, :]
        ys = np.arange(self.y0, self.y0 + h, dtype=np.float32)[:, None]
        return xs, ys


Modifier = Callable[[TubePatch, np.ndarray], np.ndarray]


class Canvas:
    """Full-size density layers; parts are added in place through their bounding boxes."""

    def __init__(self, width: int, height: int) -> None:
        self.width, self.height = width, height
        self.tissue = np.zeros((height, width), np.float32)
        self.bone = np.zeros((height, width), np.float32)

    def box(self, bounds: tuple[float, float, float, float]) -> tuple[int, int, int, int] | None:
        """Clip float bounds (x0, y0, x1, y1) to the canvas; None if nothing is left."""
        x0, y0 = max(0, math.floor(bounds[0])), max(0, math.floor(bounds[1]))
        x1, y1 = (
            min(self.width, math.ceil(bounds[2]) + 1),
            min(self.height, math.ceil(bounds[3]) + 1),
        )
        return (x0, y0, x1, y1) if x1 > x0 and y1 > y0 else None

    @staticmethod
    def grid(box: tuple[int, int, int, int]) -> tuple[np.ndarray, np.ndarray]:
        x0, y0, x1, y1 = box
        xs = np.arange(x0, x1, dtype=np.float32)[None, :]
        ys = np.arange(y0, y1, dtype=np.float32)[:, None]
        return xs, ys


def render_tube(
    tube: Tube,
    canvas: Canvas,
    texture: np.ndarray,
    modifiers: Sequence[Modifier] = (),
) -> None:
    """Project a hollow bone into ``canvas.bone``, letting modifiers (lesions) alter it first."""
    box = canvas.box(tube.bbox())
    if box is None:
        return
    xs, ys = canvas.grid(box)
    s, d = tube.to_local(xs, ys)
    outer = tube.outer_radius(s)
    inner = np.maximum(outer - tube.cortex_thickness(s), 0.0)
    ends = tube.end_weight(s)
    norm = 2.0 * tube.radius
    cortex = (_chord(outer, d) - _chord(inner, d)) / norm
    medulla = _chord(inner, d) / norm
    grain = sample_field(texture, s / (0.06 * norm + 0.7), d / (0.03 * norm + 0.7))
    medulla_mu = (MARROW_MU + (TRABECULAR_MU - MARROW_MU) * ends) * (
        1.0 + 0.15 * grain * (0.3 + ends)
    )
    density = tube.density * (CORTEX_MU * cortex + medulla_mu * medulla)
    patch = TubePatch(box[0], box[1], s, d, outer, inner)
    for modify in modifiers:
        density = modify(patch, density)
    canvas.bone[box[1] : box[3], box[0] : box[2]] += density


def render_ellipsoid(part: Ellipsoid, canvas: Canvas, texture: np.ndarray) -> None:
    a, b = part.axes
    reach = max(a, b) * 1.05
    cx, cy = part.center
    box = canvas.box((cx - reach, cy - reach, cx + reach, cy + reach))
    if box is None:
        return
    xs, ys = canvas.grid(box)
    c, s = math.cos(part.angle), math.sin(part.angle)
    u = ((xs - cx) * c + (ys - cy) * s) / a
    v = (-(xs - cx) * s + (ys - cy) * c) / b
    rho = np.sqrt(u * u + v * v)
    q = part.shell
    outer = np.sqrt(np.clip(1.0 - rho * rho, 0.0, None))
    inner = q * np.sqrt(np.clip(1.0 - (rho / q) ** 2, 0.0, None))
    grain = sample_field(texture, u * max(a / 3.0, 2.0), v * max(b / 3.0, 2.0))
    density = CORTEX_MU * 0.9 * (outer - inner) + TRABECULAR_MU * inner * (1.0 + 0.2 * grain)
    canvas.bone[box[1] : box[3], box[0] : box[2]] += part.density * density


def render_plate(part: Plate, canvas: Canvas, texture: np.ndarray, blur: float) -> None:
    """Fill the outline, soften it, and brighten its edge where the cortex is seen end-on."""
    xs = [p[0] for p in part.outline]
    ys = [p[1] for p in part.outline]
    pad = 3.0 * blur + 2.0
    box = canvas.box((min(xs) - pad, min(ys) - pad, max(xs) + pad, max(ys) + pad))
    if box is None:
        return
    x0, y0, x1, y1 = box
    mask = Image.new("L", (x1 - x0, y1 - y0), 0)
    ImageDraw.Draw(mask).polygon([(x - x0, y - y0) for x, y in part.outline], fill=255)
    # A flat bone is thin in its middle and thick along its margins (crest, brim, rami).
    core = mask.filter(ImageFilter.BoxBlur(max(2, round(0.2 * min(x1 - x0, y1 - y0)))))
    mask = mask.filter(ImageFilter.GaussianBlur(max(blur, 0.5)))
    m = np.asarray(mask, dtype=np.float32) / 255.0
    thin = np.asarray(core, dtype=np.float32) / 255.0
    gx, gy = canvas.grid(box)
    grain = sample_field(texture, gy / (2.0 * blur + 1.0), gx / (2.0 * blur + 1.0))
    density = part.density * m * (1.0 - 0.6 * thin) * (1.0 + 0.2 * grain)
    density += part.rim * 4.0 * m * (1.0 - m)
    region = canvas.bone[y0:y1, x0:x1]
    if part.hole:
        region *= 1.0 - 0.85 * m  # a foramen: no bone in front or behind it
    else:
        region += density


def render_soft_tube(part: SoftTube, canvas: Canvas) -> None:
    """Soft tissue: fat under the skin (less dense) over muscle; the union of parts, not the sum."""
    reach = max(part.r0, part.r1) * 1.02
    xs_ = (part.p0[0], part.p1[0])
    ys_ = (part.p0[1], part.p1[1])
    box = canvas.box((min(xs_) - reach, min(ys_) - reach, max(xs_) + reach, max(ys_) + reach))
    if box is None:
        return
    xs, ys = canvas.grid(box)
    length = max(math.dist(part.p0, part.p1), 1e-6)
    ux, uy = (part.p1[0] - part.p0[0]) / length, (part.p1[1] - part.p0[1]) / length
    dx, dy = xs - part.p0[0], ys - part.p0[1]
    t = dx * ux + dy * uy
    tc = np.clip(t, 0.0, length)
    # Distance to the axis segment gives rounded (hemispherical) ends.
    dist = np.sqrt((dx - tc * ux) ** 2 + (dy - tc * uy) ** 2)
    radius = part.r0 + (part.r1 - part.r0) * (tc / length)
    # Thickness falls off towards the skin more slowly than a round limb would: limbs are
    # flattened by the table and the picture is windowed for bone.
    fat = (_chord(radius, dist) / (2.0 * radius)) ** 0.7
    muscle = (_chord(radius * 0.88, dist) / (2.0 * radius)) ** 0.7
    density = part.density * (0.4 * fat + 0.6 * muscle) * (2.0 * radius / part.norm) ** 0.5
    region = canvas.tissue[box[1] : box[3], box[0] : box[2]]
    np.maximum(region, density, out=region)


def make_texture(rng: np.random.Generator, size: int = 128) -> np.ndarray:
    """Trabecular grain: blurred noise, stretched along the bone when sampled."""
    noise = rng.standard_normal((size, size)).astype(np.float32)
    img = Image.fromarray(((noise * 40) + 128).clip(0, 255).astype(np.uint8), "L")
    img = img.filter(ImageFilter.GaussianBlur(0.8))
    tex = np.asarray(img, dtype=np.float32)
    return (tex - tex.mean()) / (tex.std() + 1e-6)


def sample_field(texture: np.ndarray, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Bilinear lookup with wrap-around (nearest-neighbour lookups look like blocky cheese)."""
    h, w = texture.shape
    u0, v0 = np.floor(u), np.floor(v)
    fu, fv = (u - u0).astype(np.float32), (v - v0).astype(np.float32)
    i0, j0 = u0.astype(np.int64) % h, v0.astype(np.int64) % w
    i1, j1 = (i0 + 1) % h, (j0 + 1) % w
    top = texture[i0, j0] * (1 - fv) + texture[i0, j1] * fv
    bottom = texture[i1, j0] * (1 - fv) + texture[i1, j1] * fv
    return top * (1 - fu) + bottom * fu


def _chord(radius: np.ndarray | float, dist: np.ndarray) -> np.ndarray:
    """Length of a straight line through a circle of ``radius`` at ``dist`` from its centre."""
    return 2.0 * np.sqrt(np.clip(radius * radius - dist * dist, 0.0, None))


def _cap(u: np.ndarray) -> np.ndarray:
    """Elliptical end: 0 at the tip (u=0), 1 once u >= 1."""
    v = np.clip(u, 0.0, 1.0)
    return np.sqrt(np.clip(1.0 - (1.0 - v) ** 2, 0.0, None))
