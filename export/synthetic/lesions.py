"""Tumours drawn on a bone, each knowing its own outline for the LabelMe polygon.

Benign: a well-defined lytic area with a sclerotic rim (giant cell tumour, osteofibroma, other),
an expansile cyst, an osteochondroma (a bony stalk continuous with the cortex pointing away from
the joint), or loose bodies in a joint (synovial osteochondroma). Malignant: ill-defined
moth-eaten or permeative destruction, a cortical break, periosteal reaction (sunburst spicules,
onion-skin layers, Codman triangles) and a soft-tissue mass. Sizes are in units of the bone's
shaft radius so a lesion stays visible when the whole image is shrunk to 224 px.
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
)
from btxrd.export.synthetic.bodyparts import Scene
from btxrd.export.synthetic.shapes import (
    Blob,
    blob_bounds,
    blob_polygon,
    convex_hull,
    random_blob,
    sample_noise,
    smooth_noise,
    smoothstep,
)

BENIGN_SUBTYPES = {
    "osteochondroma": 754, "multiple osteochondromas": 263, "simple bone cyst": 206,
    "giant cell tumor": 93, "osteofibroma": 44, "synovial osteochondroma": 50, "other bt": 115,
}  # fmt: skip
MALIGNANT_SUBTYPES = {"osteosarcoma": 297, "other mt": 45}


class DrawnLesion(Protocol):
    """What the generator needs from a lesion: alter its bone, add layers, give its outline."""

    label: str
    bone: int  # index into Scene.tubes of the bone it alters, -1 for none

    def modify(self, patch: TubePatch, density: np.ndarray) -> np.ndarray: ...

    def draw(self, canvas: Canvas, texture: np.ndarray) -> None: ...

    def outline(self) -> list[Point]: ...


@dataclass(frozen=True)
class Site:
    bone: int
    tube: Tube
    s: float  # position along the bone
    away: float  # +1 if increasing s leads away from the nearest joint, else -1


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
    septa: tuple[tuple[float, float, float], ...]  # (s, d, radius) in the bone's frame
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
        for ss, dd, rr in self.septa:
            dist = np.hypot(s - ss, d - dd)
            wall = np.exp(-(((dist - rr) / (0.8 * self.rim_width)) ** 2))
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
        footprint = smoothstep(1.0, 0.7, np.abs(cd) / np.maximum(self.child.outer_radius(cs), 1e-3))
        cortex = smoothstep(0.9, 1.0, np.abs(patch.d) / np.maximum(patch.outer, 1e-3))
        return density * (1.0 - 0.6 * footprint * cortex)

    def draw(self, canvas: Canvas, texture: np.ndarray) -> None:
        render_tube(self.child, canvas, texture, modifiers=(self._outside_parent,))

    def _outside_parent(self, patch: TubePatch, density: np.ndarray) -> np.ndarray:
        xs, ys = patch.grid()
        ps, pd = self.tube.to_local(xs, ys)
        outer = self.tube.outer_radius(ps)
        return density * (1.0 - 0.8 * smoothstep(outer * 0.98, outer * 0.8, np.abs(pd)))

    def outline(self) -> list[Point]:
        length = self.child.length
        s = np.concatenate([np.linspace(0, 0.8, 8), 0.8 + 0.2 * np.sin(np.linspace(0, 1, 8) * math.pi / 2)])
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
    seed: int

    def modify(self, patch: TubePatch, density: np.ndarray) -> np.ndarray:
        rho = self.blob.rho(patch.s, patch.d)
        region = smoothstep(1.0, 1.0 - self.edge, rho)
        holes = smoothstep(-0.3, 0.6, sample_noise(smooth_noise(self.seed), patch.s / self.grain,
                                                   patch.d / self.grain))  # fmt: skip
        factor = 1.0 - self.lysis * region * (0.3 + 0.7 * holes)
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
        cloud = sample_noise(smooth_noise(self.seed + 1), s / (self.grain * 1.6), d / (self.grain * 1.6))
        layer = self.osteoid * smoothstep(0.2, 1.2, cloud) * region
        layer += self.reaction * self._reaction(box) * outside * smoothstep(1.02, 0.9, rho)
        canvas.bone[box[1] : box[3], box[0] : box[2]] += self.tube.density * layer

    def _reaction(self, box: tuple[int, int, int, int]) -> np.ndarray:
        """Spicules, lamellae and Codman triangles drawn as lines, then softened."""
        x0, y0, x1, y1 = box
        img = Image.new("L", (x1 - x0, y1 - y0), 0)
        draw = ImageDraw.Draw(img)
        rng = np.random.default_rng(self.seed + 2)
        t, blob = self.tube, self.blob
        width = max(1, round(t.radius * 0.05))
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
            gap = t.radius * 0.12 * (k + 1)
            d_arr = self.side * (t.outer_radius(s_arr) + gap)
            line(list(zip(s_arr.tolist(), d_arr.tolist(), strict=True)), 190)
        if self.codman:
            for end in (-1.0, 1.0):
                s_e = blob.sc + end * blob.a * 0.85
                base = float(t.outer_radius(np.array([s_e]))[0])
                lift = t.radius * rng.uniform(0.3, 0.6)
                tip = (s_e - end * blob.a * 0.3, self.side * (base + lift))
                line([(s_e + end * t.radius * 0.2, self.side * base), tip], 230)
        img = img.filter(ImageFilter.GaussianBlur(max(0.6, width * 0.4)))
        return np.asarray(img, dtype=np.float32) / 255.0

    def outline(self) -> list[Point]:
        return blob_polygon(self.tube, self.blob, 36)


def plan_lesions(
    subtype: str, scene: Scene, rng: np.random.Generator, subtle: bool
) -> list[DrawnLesion]:
    """Choose where and how the tumour of ``subtype`` appears on ``scene``'s bones."""
    size = rng.uniform(0.55, 0.75) if subtle else 1.0
    contrast = rng.uniform(0.4, 0.6) if subtle else rng.uniform(0.85, 1.15)
    if subtype in ("osteochondroma", "multiple osteochondromas"):
        count = 1 if subtype == "osteochondroma" else int(rng.integers(2, 5))
        return [_osteochondroma(subtype, scene, rng, size) for _ in range(count)]
    if subtype == "synovial osteochondroma":
        return [_loose_bodies(subtype, scene, rng, size)]
    if subtype in MALIGNANT_SUBTYPES:
        return [_sarcoma(subtype, scene, rng, size, contrast)]
    return [_lytic(subtype, scene, rng, size, contrast)]


def _lytic(subtype: str, scene: Scene, rng: np.random.Generator, size: float,
           contrast: float) -> LyticLesion:  # fmt: skip
    where = {"giant cell tumor": "epiphysis", "osteofibroma": "diaphysis"}.get(subtype, "metaphysis")
    site = _pick_site(scene, rng, where)
    t, r = site.tube, site.tube.radius
    outer = float(t.outer_radius(np.array([site.s]))[0])
    side = float(rng.choice([-1.0, 1.0]))
    if subtype == "simple bone cyst":
        a, b, dc = r * rng.uniform(1.1, 2.4), outer * rng.uniform(0.8, 1.08), 0.0
        rim, expand, n_septa, rough = rng.uniform(0.15, 0.35), 0.15, int(rng.integers(0, 2)), 0.05
    elif subtype == "giant cell tumor":
        a, b = r * rng.uniform(0.9, 1.5), outer * rng.uniform(0.55, 0.85)
        dc, rim, expand = side * outer * rng.uniform(0.15, 0.4), 0.08, 0.2
        n_septa, rough = int(rng.integers(2, 5)), 0.1
    elif subtype == "osteofibroma":
        a, b = r * rng.uniform(1.4, 3.0), r * rng.uniform(0.45, 0.7)
        dc, rim, expand = side * outer * rng.uniform(0.5, 0.8), rng.uniform(0.45, 0.7), 0.1
        n_septa, rough = int(rng.integers(2, 5)), 0.12
    else:
        a, b = r * rng.uniform(0.8, 1.7), outer * rng.uniform(0.45, 0.75)
        dc, rim, expand = side * outer * rng.uniform(0.25, 0.55), rng.uniform(0.3, 0.6), 0.1
        n_septa, rough = int(rng.integers(0, 3)), 0.1
    a, b = a * size, b * max(size, 0.75)
    sc = site.s
    if where == "epiphysis":  # from just under the joint surface towards the metaphysis
        sc = (0.0 if site.away > 0 else t.length) + site.away * (0.45 * outer + a)
    blob = random_blob(rng, sc, dc, a, b, rough)
    septa = []
    for _ in range(n_septa):
        ang = rng.uniform(0, 2 * math.pi)
        septa.append((sc + a * 0.45 * math.cos(ang), dc + b * 0.45 * math.sin(ang),
                      min(a, b) * rng.uniform(0.35, 0.6)))  # fmt: skip
    return LyticLesion(
        subtype, site.bone, t, blob, depth=min(0.85, rng.uniform(0.5, 0.75) * contrast),
        edge=rng.uniform(0.04, 0.1), rim=rim * contrast, rim_width=max(1.0, r * rng.uniform(0.06, 0.1)),
        expand=expand * contrast, septa=tuple(septa), septa_density=0.3 * contrast,
    )  # fmt: skip


def _osteochondroma(subtype: str, scene: Scene, rng: np.random.Generator, size: float) -> Outgrowth:
    site = _pick_site(scene, rng, "metaphysis")
    t, r = site.tube, site.tube.radius
    side = float(rng.choice([-1.0, 1.0]))
    outer = float(t.outer_radius(np.array([site.s]))[0])
    sessile = rng.random() < 0.3
    if sessile:
        length, radius, flare0 = r * rng.uniform(0.45, 0.75), r * rng.uniform(0.45, 0.65), 1.5
    else:
        length, radius, flare0 = r * rng.uniform(0.7, 1.6), r * rng.uniform(0.22, 0.4), rng.uniform(1.5, 2.2)
    length, radius = length * size, radius * max(size, 0.8)
    tilt = math.radians(rng.uniform(25, 60))  # pointing away from the joint
    ds, dd = site.away * math.sin(tilt), side * math.cos(tilt)
    start = (site.s, side * (outer - 0.6 * t.cortex_thickness(np.array([site.s]))[0]))
    end = (start[0] + ds * (length + 0.3 * r), start[1] + dd * (length + 0.3 * r))
    p0 = t.to_image(np.array([start[0]]), np.array([start[1]]))
    p1 = t.to_image(np.array([end[0]]), np.array([end[1]]))
    child = Tube(
        "osteochondroma", (float(p0[0][0]), float(p0[1][0])), (float(p1[0][0]), float(p1[1][0])),
        radius, flare0=flare0, flare1=rng.uniform(1.15, 1.6), cortex=0.3, density=t.density,
    )  # fmt: skip
    return Outgrowth(subtype, site.bone, t, child)


def _loose_bodies(subtype: str, scene: Scene, rng: np.random.Generator, size: float) -> LooseBodies:
    site = _pick_site(scene, rng, "joint")
    t, r = site.tube, site.tube.radius
    side = float(rng.choice([-1.0, 1.0]))
    outer = float(t.outer_radius(np.array([site.s]))[0])
    sc = site.s - site.away * r * rng.uniform(0.0, 0.6)
    area = Blob(sc, side * outer * rng.uniform(0.8, 1.2), r * rng.uniform(0.7, 1.3) * size,
                r * rng.uniform(0.45, 0.8) * size)  # fmt: skip
    bodies = []
    for _ in range(int(rng.integers(5, 16))):
        ang, rad = rng.uniform(0, 2 * math.pi), math.sqrt(rng.random()) * 0.85
        s0, d0 = area.sc + area.a * rad * math.cos(ang), area.dc + area.b * rad * math.sin(ang)
        x, y = t.to_image(np.array([s0]), np.array([d0]))
        axis = r * rng.uniform(0.07, 0.2) * size
        bodies.append(Ellipsoid("loose body", (float(x[0]), float(y[0])),
                                (axis, axis * rng.uniform(0.6, 1.0)), rng.uniform(0, math.pi),
                                shell=0.6, density=rng.uniform(0.9, 1.3)))  # fmt: skip
    return LooseBodies(subtype, tuple(bodies), area, t)


def _sarcoma(subtype: str, scene: Scene, rng: np.random.Generator, size: float,
             contrast: float) -> Sarcoma:  # fmt: skip
    osteosarcoma = subtype == "osteosarcoma"
    site = _pick_site(scene, rng, "metaphysis" if osteosarcoma else "diaphysis")
    t, r = site.tube, site.tube.radius
    outer = float(t.outer_radius(np.array([site.s]))[0])
    side = float(rng.choice([-1.0, 1.0]))
    a = r * (rng.uniform(1.3, 2.6) if osteosarcoma else rng.uniform(1.8, 3.4)) * size
    e_in = outer * rng.uniform(0.3, 1.0)
    e_out = outer + r * rng.uniform(0.6, 1.5) * size
    blob = random_blob(rng, site.s, side * (e_out - e_in) / 2, a, (e_out + e_in) / 2, 0.1)
    return Sarcoma(
        subtype, site.bone, t, blob, side,
        edge=rng.uniform(0.25, 0.45),
        lysis=rng.uniform(0.35, 0.75) * contrast,
        grain=max(1.5, r * (rng.uniform(0.12, 0.2) if osteosarcoma else rng.uniform(0.05, 0.09))),
        cortex_break=rng.uniform(0.5, 0.9) * contrast,
        osteoid=(rng.uniform(0.15, 0.7) if osteosarcoma else rng.uniform(0.0, 0.15)) * contrast,
        mass=rng.uniform(0.12, 0.3) * contrast,
        spicules=int(rng.integers(14, 40)) if rng.random() < (0.7 if osteosarcoma else 0.2) else 0,
        onion=int(rng.integers(2, 6)) if rng.random() < (0.15 if osteosarcoma else 0.75) else 0,
        codman=bool(rng.random() < 0.6),
        reaction=rng.uniform(0.35, 0.6) * contrast,
        seed=int(rng.integers(2**31)),
    )  # fmt: skip


def _pick_site(scene: Scene, rng: np.random.Generator, where: str) -> Site:
    """A point on a visible bone: near a joint (metaphysis, epiphysis, joint) or mid-shaft."""
    weights = np.array([t.lesion_weight for t in scene.tubes], dtype=float)
    margin = 0.8 * scene.bone_radius
    for attempt in range(60):
        bone = int(rng.choice(len(scene.tubes), p=weights / weights.sum()))
        t = scene.tubes[bone]
        r, length = t.radius, t.length
        ends = [e for e, joint in ((0, t.joint0), (1, t.joint1)) if joint]
        if where != "diaphysis" and ends and attempt < 40:
            end = int(rng.choice(ends))
            flare = t.flare0 if end == 0 else t.flare1
            dist = {
                "epiphysis": rng.uniform(0.3, 0.6) * r * flare,
                "joint": rng.uniform(0.1, 0.4) * r * flare,
                "metaphysis": rng.uniform(0.9, 1.7) * r * flare,
            }[where]
            s, away = (dist, 1.0) if end == 0 else (length - dist, -1.0)
        else:
            s = rng.uniform(min(2.5 * r, length / 2), max(length - 2.5 * r, length / 2))
            away = float(rng.choice([-1.0, 1.0]))
        x, y = t.to_image(np.array([s]), np.array([0.0]))
        if margin <= x[0] < scene.width - margin and margin <= y[0] < scene.height - margin:
            return Site(bone, t, float(s), away)
    raise RuntimeError(f"no room for a lesion on {scene.body_part}")  # layouts always have room


def _dedupe(points: list[Point]) -> list[Point]:
    out: list[Point] = []
    for p in points:
        if not out or math.dist(out[-1], p) > 0.5:
            out.append(p)
    if len(out) > 2 and math.dist(out[0], out[-1]) <= 0.5:
        out.pop()
    return out
