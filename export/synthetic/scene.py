"""A scene: the bones of one picture, placed in its pixel frame, and the builder that places them.

Layouts (see ``bodyparts``) draw upright in a "natural" frame; the builder mirrors, tilts and
sometimes turns them by 90 degrees on the way into the image frame, as radiographs are.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

from btxrd.export.synthetic.anatomy import Ellipsoid, Plate, Point, SoftTube, Tube

REGION_OF = {
    "hand": "upper limb", "ulna": "upper limb", "radius": "upper limb", "humerus": "upper limb",
    "foot": "lower limb", "tibia": "lower limb", "fibula": "lower limb", "femur": "lower limb",
    "hip bone": "pelvis",
}  # fmt: skip


@dataclass(frozen=True)
class Scene:
    """The anatomy of one image: parts to render plus the facts the sheet records about it."""

    width: int
    height: int
    body_part: str
    view: str
    tubes: tuple[Tube, ...]
    ellipsoids: tuple[Ellipsoid, ...]
    plates: tuple[Plate, ...]
    soft: tuple[SoftTube, ...]
    joints: tuple[str, ...]
    bone_radius: float  # typical shaft radius (px), the yardstick for lesions and variants

    def visible_bones(self) -> set[str]:
        """Names of the bones that actually show in the picture (the sheet's bone flags)."""
        names = {t.name for t in self.tubes if _tube_visible(t, self.width, self.height)}
        for part in self.ellipsoids:
            if _inside(part.center, self.width, self.height, 0.0):
                names.add(part.name)
        for plate in self.plates:
            if not plate.hole and any(
                _inside(p, self.width, self.height, 0.0) for p in plate.outline
            ):
                names.add(plate.name)
        return {n for n in names if n in REGION_OF}


class SceneBuilder:
    """Collects parts drawn in the natural frame and maps them into the image frame."""

    def __init__(self, wn: float, hn: float, rng: np.random.Generator, rot90: bool) -> None:
        self.wn, self.hn = wn, hn
        mirror = rng.random() < 0.5
        tilt = math.radians(rng.uniform(-9, 9))
        c, s = math.cos(tilt), math.sin(tilt)
        sx = -1.0 if mirror else 1.0
        # Linear part: mirror, then tilt, then an optional quarter turn (clockwise).
        a = np.array([[c, -s], [s, c]]) @ np.diag([sx, 1.0])
        if rot90:
            a = np.array([[0.0, -1.0], [1.0, 0.0]]) @ a
        self.matrix = a
        out_w, out_h = (hn, wn) if rot90 else (wn, hn)
        centre_in = np.array([wn / 2, hn / 2])
        self.offset = np.array([out_w / 2, out_h / 2]) - a @ centre_in
        self.flip = float(np.linalg.det(a)) < 0
        self.tubes: list[Tube] = []
        self.ellipsoids: list[Ellipsoid] = []
        self.plates: list[Plate] = []
        self.soft: list[SoftTube] = []
        self.joints: list[str] = []

    def map(self, p: Point) -> Point:
        x, y = self.matrix @ np.asarray(p, dtype=float) + self.offset
        return (float(x), float(y))

    def tube(self, name: str, p0: Point, p1: Point, radius: float, **kw: float | bool) -> None:
        tube = Tube(name, self.map(p0), self.map(p1), radius, **kw)  # type: ignore[arg-type]
        self.tubes.append(replace(tube, bend=-tube.bend) if self.flip else tube)

    def ellipsoid(
        self, name: str, c: Point, axes: tuple[float, float], angle: float = 0.0, **kw: float
    ) -> None:
        vx, vy = self.matrix @ np.array([math.cos(angle), math.sin(angle)])
        self.ellipsoids.append(Ellipsoid(name, self.map(c), axes, math.atan2(vy, vx), **kw))

    def plate(self, name: str, outline: list[Point], **kw: float | bool) -> None:
        pts = tuple(self.map(p) for p in _smooth(outline, 3))
        self.plates.append(Plate(name, pts, **kw))  # type: ignore[arg-type]

    def soft_tube(self, p0: Point, p1: Point, r0: float, r1: float, norm: float) -> None:
        self.soft.append(SoftTube(self.map(p0), self.map(p1), r0, r1, norm))


def _smooth(outline: list[Point], rounds: int) -> list[Point]:
    """Chaikin corner cutting: bones have no corners."""
    pts = outline
    for _ in range(rounds):
        nxt: list[Point] = []
        for (x0, y0), (x1, y1) in zip(pts, pts[1:] + pts[:1], strict=True):
            nxt += [
                (0.75 * x0 + 0.25 * x1, 0.75 * y0 + 0.25 * y1),
                (0.25 * x0 + 0.75 * x1, 0.25 * y0 + 0.75 * y1),
            ]
        pts = nxt
    return pts


def _tube_visible(tube: Tube, width: int, height: int) -> bool:
    ts = np.linspace(0.0, 1.0, 21)
    xs = tube.p0[0] + (tube.p1[0] - tube.p0[0]) * ts
    ys = tube.p0[1] + (tube.p1[1] - tube.p0[1]) * ts
    inside = (xs >= 0) & (xs < width) & (ys >= 0) & (ys < height)
    return bool(inside.sum() * tube.length / 20.0 >= 1.5 * tube.radius)


def _inside(p: Point, width: int, height: int, margin: float) -> bool:
    return margin <= p[0] < width - margin and margin <= p[1] < height - margin


def long_pair(
    b: SceneBuilder,
    rng: np.random.Generator,
    view: str,
    names: tuple[str, str],
    top_joint: str,
    bottom_joint: str,
    r_main: float,
    rt: float,
) -> tuple[float, float, float]:
    """Two parallel bones (tibia/fibula, radius/ulna) down the picture; returns (cx, y0, y1)."""
    w, h = b.wn, b.hn
    cx = w * rng.uniform(0.44, 0.56)
    shown = rng.choice(["top", "bottom", "neither"], p=[0.4, 0.4, 0.2])
    y0 = h * rng.uniform(0.05, 0.18) if shown == "top" else -3 * r_main
    y1 = h * rng.uniform(0.82, 0.95) if shown == "bottom" else h + 3 * r_main
    b.soft_tube((cx, -rt), (cx, h + rt), rt, rt * rng.uniform(0.65, 0.9), 2 * rt)
    side = rng.choice([-1.0, 1.0])
    spread = {"frontal": 1.9, "oblique": 1.2, "lateral": 0.55}[view] * r_main
    b.tube(
        names[0],
        (cx, y0),
        (cx + rng.uniform(-0.2, 0.2) * r_main, y1),
        r_main,
        joint0=shown == "top",
        joint1=shown == "bottom",
        bend=rng.uniform(-0.025, 0.025),
        flare0=1.8,
        flare1=1.7,
    )
    r2 = r_main * rng.uniform(0.45, 0.7)
    b.tube(
        names[1],
        (cx + side * spread, y0 + r_main),
        (cx + side * spread * 0.9, y1 + r_main * 0.6),
        r2,
        joint0=shown == "top",
        joint1=shown == "bottom",
        bend=rng.uniform(-0.04, 0.04),
        flare0=1.6,
        flare1=1.6,
        lesion_weight=0.5,
    )
    if shown == "top" and top_joint:
        b.joints.append(top_joint)
    if shown == "bottom" and bottom_joint:
        b.joints.append(bottom_joint)
    return cx, y0, y1
