"""How each kind of tumour looks, and where its LabelMe outline runs.

Benign: a well-defined lytic area with a sclerotic rim and soap-bubble septa (giant cell tumour,
osteofibroma, other), an expansile cyst, an osteochondroma (a bony stalk continuous with the
cortex), or ossified loose bodies in a joint (synovial osteochondroma). Malignant: ill-defined
moth-eaten or permeative destruction, a cortical break, periosteal reaction (sunburst spicules,
onion-skin layers, Codman triangles) and a soft-tissue mass. Each object alters its bone while
the bone is rendered (``modify``), adds its own layers (``draw``) and knows its ``outline``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from btxrd.export.synthetic.anatomy import (
    Canvas,
    Ellipsoid,
    Point,
    Tube,
    TubePatch,
    render_ellipsoid,
    render_tube,
    sample_field,
)
from btxrd.export.synthetic.shapes import (
    Blob,
    blob_bounds,
    blob_polygon,
    convex_hull,
    smooth_noise,
    smoothstep,
)


class DrawnLesion(Protocol):
    """What the generator needs from a lesion: alter its bone, add layers, give its outline."""

    @property
    def label(self) -> str: ...

    @property
    def bone(self) -> int:
        """Index into Scene.tubes of the bone it alters, -1 for none."""
        ...

    def modify(self, patch: TubePatch, density: np.ndarray) -> np.ndarray: ...

    def draw(self, canvas: Canvas, texture: np.ndarray) -> None: ...

    def outline(self) -> list[Point]: ...


@dataclass(frozen=True)
class LyticLesion:
    """Well-defined lucency; optional sclerotic rim, expanded shell and soap-bubble septa."""

    label: str
    bone: int
    tube: Tube
    blob: Blob
    depth: float
    edge: float
    rim: float
    rim_width: float  # px
    expand: float
    septa: tuple[tuple[float, float, float, float], ...]  # (s, d, radius, arc direction)
    septa_density: float

    def modify(self, patch: TubePatch, density: np.ndarray) -> np.ndarray:
        inside = smoothstep(1.0 + self.edge, 1.0 - self.edge, self.blob.rho(patch.s, patch.d))
        return density * (1.0 - self.depth * inside)

    def draw(self, canvas: Canvas, texture: np.ndarray) -> None:
        box = canvas.box(blob_bounds(self.tube, self.blob, 3 * self.rim_width + 2))
        if box is None:
            return
        xs, ys = canvas.grid(box)
        s, d = self.tube.to_local(xs, ys)
        outer = self.tube.outer_radius(s)
        rho = self.blob.rho(s, d)
        width = self.rim_width / min(self.blob.a, self.blob.b)
        in_bone = smoothstep(outer * 1.04, outer * 0.96, np.abs(d))
        inside = smoothstep(1.0 + self.edge, 1.0 - self.edge, rho)
        ring = np.exp(-(((rho - 1.0) / width) ** 2))
        layer = self.rim * ring * np.maximum(in_bone, inside) + self.expand * inside * (1 - in_bone)
        for ss, dd, rr, phi in self.septa:
            dist = np.hypot(s - ss, d - dd)
            # Only part of each bubble's wall shows, as in a "soap-bubble" lesion.
            arc = smoothstep(-0.2, 0.4, np.cos(np.arctan2(d - dd, s - ss) - phi))
            wall = arc * np.exp(-(((dist - rr) / (0.7 * self.rim_width)) ** 2))
            layer += self.septa_density * wall * smoothstep(1.0, 0.85, rho)
        canvas.bone[box[1] : box[3], box[0] : box[2]] += self.tube.density * layer

    def outline(self) -> list[Point]:
        return blob_polygon(self.tube, self.blob, 32)


@dataclass(frozen=True)
class Outgrowth:
    """Osteochondroma: a small bone growing out of the parent's cortex, away from the joint."""

    label: str
    bone: int
    tube: Tube
    child: Tube

    def modify(self, patch: TubePatch, density: np.ndarray) -> np.ndarray:
        # The parent's cortex opens into the stalk: thin it under the base.
        xs, ys = patch.grid()
        cs, cd = self.child.to_local(xs, ys)
        footprint = smoothstep(
            1.0, 0.75, np.abs(cd) / np.maximum(self.child.outer_radius(cs), 1e-3)
        )
        cortex = smoothstep(0.85, 1.0, np.abs(patch.d) / np.maximum(patch.inner, 1e-3))
        return density * (1.0 - 0.85 * footprint * cortex)

    def draw(self, canvas: Canvas, texture: np.ndarray) -> None:
        render_tube(self.child, canvas, texture, modifiers=(self._outside_parent,))

    def _outside_parent(self, patch: TubePatch, density: np.ndarray) -> np.ndarray:
        xs, ys = patch.grid()
        ps, pd = self.tube.to_local(xs, ys)
        inner = self.tube.outer_radius(ps) - self.tube.cortex_thickness(ps)
        return density * (1.0 - 0.8 * smoothstep(inner, inner * 0.8, np.abs(pd)))

    def outline(self) -> list[Point]:
        length = self.child.length
        s = np.concatenate(
            [np.linspace(0, 0.8, 8), 0.8 + 0.2 * np.sin(np.linspace(0, 1, 8) * math.pi / 2)]
        )
        s = np.unique(np.clip(s, 0.0, 1.0)) * length
        r = self.child.outer_radius(s) * 1.05
        left = self.child.to_image(s, r)
        right = self.child.to_image(s[::-1], -r[::-1])
        pts = list(zip(left[0], left[1], strict=True)) + list(zip(right[0], right[1], strict=True))
        return _dedupe([(float(x), float(y)) for x, y in pts])


@dataclass(frozen=True)
class LooseBodies:
    """Synovial osteochondroma: ossified loose bodies clustered in a joint recess."""

    label: str
    bodies: tuple[Ellipsoid, ...]
    swelling: Blob
    tube: Tube
    bone: int = -1

    def modify(self, patch: TubePatch, density: np.ndarray) -> np.ndarray:
        return density

    def draw(self, canvas: Canvas, texture: np.ndarray) -> None:
        box = canvas.box(blob_bounds(self.tube, self.swelling, 2))
        if box is not None:
            xs, ys = canvas.grid(box)
            s, d = self.tube.to_local(xs, ys)
            dome = np.sqrt(np.clip(1.0 - self.swelling.rho(s, d) ** 2, 0.0, None))
            canvas.tissue[box[1] : box[3], box[0] : box[2]] += 0.12 * dome
        for body in self.bodies:
            render_ellipsoid(body, canvas, texture)

    def outline(self) -> list[Point]:
        pts: list[Point] = []
        for body in self.bodies:
            for k in range(8):
                angle = k * math.pi / 4
                u, v = body.axes[0] * 1.15 * math.cos(angle), body.axes[1] * 1.15 * math.sin(angle)
                c, s = math.cos(body.angle), math.sin(body.angle)
                pts.append((body.center[0] + u * c - v * s, body.center[1] + u * s + v * c))
        return convex_hull(pts)


@dataclass(frozen=True)
class Sarcoma:
    """Ill-defined destruction plus periosteal reaction and a soft-tissue mass."""

    label: str
    bone: int
    tube: Tube
    blob: Blob
    side: float
    edge: float
    lysis: float
    grain: float  # px per noise texel: small = permeative, large = moth-eaten
    cortex_break: float
    osteoid: float
    mass: float
    spicules: int
    onion: int
    codman: bool
    reaction: float
    unit: float  # lesion yardstick in px (see _unit)
    seed: int

    def modify(self, patch: TubePatch, density: np.ndarray) -> np.ndarray:
        rho = self.blob.rho(patch.s, patch.d)
        region = smoothstep(1.0, 1.0 - self.edge, rho)
        noise = sample_field(smooth_noise(self.seed), patch.s / self.grain, patch.d / self.grain)
        holes = smoothstep(0.1, 0.8, noise)
        factor = 1.0 - self.lysis * region * (0.35 + 0.65 * holes)
        cortex = smoothstep(0.75, 0.95, self.side * patch.d / np.maximum(patch.outer, 1e-3))
        factor *= 1.0 - self.cortex_break * cortex * smoothstep(0.9, 0.55, rho)
        return density * factor

    def draw(self, canvas: Canvas, texture: np.ndarray) -> None:
        box = canvas.box(blob_bounds(self.tube, self.blob, 2))
        if box is None:
            return
        xs, ys = canvas.grid(box)
        s, d = self.tube.to_local(xs, ys)
        outer = self.tube.outer_radius(s)
        rho = self.blob.rho(s, d)
        region = smoothstep(1.0, 1.0 - self.edge, rho)
        outside = smoothstep(outer * 0.98, outer * 1.1, np.abs(d))
        dome = np.sqrt(np.clip(1.0 - rho * rho, 0.0, None))
        canvas.tissue[box[1] : box[3], box[0] : box[2]] += self.mass * dome
        # Tumour osteoid: fluffy, cloud-like density fading out at the margins.
        cloud = sample_field(
            smooth_noise(self.seed + 1), s / (self.grain * 2.5), d / (self.grain * 2.5)
        )
        layer = self.osteoid * smoothstep(-0.5, 1.8, cloud) * region
        layer += self.reaction * self._reaction(box) * outside * smoothstep(1.02, 0.9, rho)
        canvas.bone[box[1] : box[3], box[0] : box[2]] += self.tube.density * layer

    def _reaction(self, box: tuple[int, int, int, int]) -> np.ndarray:
        """Spicules, lamellae and Codman triangles drawn as lines, then softened."""
        x0, y0, x1, y1 = box
        img = Image.new("L", (x1 - x0, y1 - y0), 0)
        draw = ImageDraw.Draw(img)
        rng = np.random.default_rng(self.seed + 2)
        t, blob = self.tube, self.blob
        width = max(1, round(self.unit * 0.05))
        top = blob.dc + self.side * blob.b  # the mass's far edge, across the bone

        def line(points: list[tuple[float, float]], fill: int, w: int = width) -> None:
            s_arr = np.array([p[0] for p in points])
            d_arr = np.array([p[1] for p in points])
            px, py = t.to_image(s_arr, d_arr)
            draw.line([(x - x0, y - y0) for x, y in zip(px, py, strict=True)], fill=fill, width=w)

        for _ in range(self.spicules):
            u = rng.uniform(-0.8, 0.8)
            s0 = blob.sc + u * blob.a
            base = float(t.outer_radius(np.array([s0]))[0]) * self.side
            reach = (top - base) * math.sqrt(max(1 - u * u, 0.0)) * rng.uniform(0.55, 0.95)
            # Radiate from a focus inside the bone: the sunburst fans out.
            fan = u * blob.a * 0.6
            line([(s0, base * 0.95), (s0 + fan * abs(reach) / blob.b, base + reach)], 210)
        for k in range(self.onion):
            span = blob.a * 0.8 * (1.0 - 0.12 * k)
            s_arr = np.linspace(blob.sc - span, blob.sc + span, 12)
            gap = self.unit * 0.12 * (k + 1)
            d_arr = self.side * (t.outer_radius(s_arr) + gap)
            line(list(zip(s_arr.tolist(), d_arr.tolist(), strict=True)), 190)
        if self.codman:
            for end in (-1.0, 1.0):
                s_e = blob.sc + end * blob.a * 0.85
                base = float(t.outer_radius(np.array([s_e]))[0])
                lift = self.unit * rng.uniform(0.3, 0.6)
                tip = (s_e - end * blob.a * 0.3, self.side * (base + lift))
                line([(s_e + end * self.unit * 0.2, self.side * base), tip], 230)
        img = img.filter(ImageFilter.GaussianBlur(max(0.6, width * 0.4)))
        return np.asarray(img, dtype=np.float32) / 255.0

    def outline(self) -> list[Point]:
        return blob_polygon(self.tube, self.blob, 36)


def _dedupe(points: list[Point]) -> list[Point]:
    out: list[Point] = []
    for p in points:
        if not out or math.dist(out[-1], p) > 0.5:
            out.append(p)
    if len(out) > 2 and math.dist(out[0], out[-1]) <= 0.5:
        out.pop()
    return out
