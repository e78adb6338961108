"""Where the bones go: one layout per body part and view, in the final image's pixel frame.

A layout is written upright in a "natural" frame (limb vertical, proximal at the top), then
mirrored, tilted a few degrees and sometimes turned by 90 degrees, as radiographs are.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np

from btxrd.export.synthetic.anatomy import Ellipsoid, Plate, Point, SoftTube, Tube

BODY_PARTS = ("knee", "femur", "leg", "hip", "humerus", "forearm", "elbow", "hand", "ankle", "foot")
# Natural height/width ranges; long bones get tall pictures, a bilateral pelvis a wide one.
ASPECTS = {
    "knee": (1.1, 1.5), "femur": (1.8, 3.2), "leg": (1.8, 3.2), "hip": (0.8, 1.15),
    "humerus": (1.4, 2.3), "forearm": (1.7, 2.8), "elbow": (1.0, 1.4), "hand": (1.15, 1.5),
    "ankle": (1.0, 1.4), "foot": (1.2, 1.6),
}  # fmt: skip
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
            if not plate.hole and any(_inside(p, self.width, self.height, 0.0) for p in plate.outline):
                names.add(plate.name)
        return {n for n in names if n in REGION_OF}


class _Builder:
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

    def ellipsoid(self, name: str, c: Point, axes: tuple[float, float], angle: float = 0.0,
                  **kw: float) -> None:  # fmt: skip
        vx, vy = self.matrix @ np.array([math.cos(angle), math.sin(angle)])
        self.ellipsoids.append(Ellipsoid(name, self.map(c), axes, math.atan2(vy, vx), **kw))

    def plate(self, name: str, outline: list[Point], **kw: float | bool) -> None:
        pts = tuple(self.map(p) for p in outline)
        self.plates.append(Plate(name, pts, **kw))  # type: ignore[arg-type]

    def soft_tube(self, p0: Point, p1: Point, r0: float, r1: float, norm: float) -> None:
        self.soft.append(SoftTube(self.map(p0), self.map(p1), r0, r1, norm))


def build_scene(
    body_part: str, view: str, width: int, height: int, age: float, rng: np.random.Generator
) -> Scene:
    """Lay out the bones of ``body_part`` seen in ``view`` on a ``width`` x ``height`` image."""
    natural = ASPECTS[body_part]
    rot90 = (height >= width) != (natural[0] >= 1.0)
    wn, hn = (height, width) if rot90 else (width, height)
    b = _Builder(float(wn), float(hn), rng, rot90)
    radius = _LAYOUTS[body_part](b, view, age, rng)
    return Scene(
        width, height, body_part, view, tuple(b.tubes), tuple(b.ellipsoids), tuple(b.plates),
        tuple(b.soft), tuple(b.joints), radius,
    )  # fmt: skip


def _knee(b: _Builder, view: str, age: float, rng: np.random.Generator) -> float:
    w, h = b.wn, b.hn
    cx, yj = w * rng.uniform(0.44, 0.56), h * rng.uniform(0.42, 0.58)
    rt = w * rng.uniform(0.30, 0.40)
    rf = rt * rng.uniform(0.30, 0.36)
    gap = rf * rng.uniform(0.25, 0.45)
    flex = math.radians(rng.uniform(5, 35) if view == "lateral" else rng.uniform(-4, 4))
    down = (math.sin(flex), math.cos(flex))
    b.soft_tube((cx, -rt), (cx, yj), rt, rt * 0.95, 2 * rt)
    leg_end = (cx + down[0] * h, yj + down[1] * h)
    b.soft_tube((cx, yj), leg_end, rt * 0.9, rt * 0.6, 2 * rt)
    b.tube("femur", (cx - rf * 0.3, -3 * rf), (cx, yj - gap / 2), rf, flare1=2.05, joint1=True,
           bend=rng.uniform(-0.02, 0.02), lesion_weight=1.4)  # fmt: skip
    top = (cx + down[0] * gap / 2, yj + down[1] * gap / 2)
    rtib = rf * rng.uniform(0.85, 0.95)
    b.tube("tibia", top, (top[0] + down[0] * 1.6 * h, top[1] + down[1] * 1.6 * h), rtib,
           flare0=1.95, joint0=True, lesion_weight=1.3)  # fmt: skip
    side = rng.choice([-1.0, 1.0])
    offset = {"frontal": 1.55, "oblique": 1.0, "lateral": 0.45}[view] * rtib * side
    head = (top[0] + down[0] * rf * 1.1 - down[1] * offset, top[1] + down[1] * rf * 1.1)
    b.tube("fibula", head, (head[0] + down[0] * 1.6 * h, head[1] + down[1] * 1.6 * h),
           rf * 0.33, flare0=1.8, cortex=0.35, joint0=True, lesion_weight=0.3)  # fmt: skip
    if view == "lateral":
        b.ellipsoid("patella", (cx - side * rf * 2.1, yj - rf * 1.0), (rf * 0.5, rf * 1.05),
                    math.radians(-side * 10), shell=0.8)  # fmt: skip
    else:
        b.ellipsoid("patella", (cx + rng.uniform(-0.3, 0.3) * rf, yj - rf * 1.3),
                    (rf * 0.85, rf * 1.0), shell=0.85, density=0.45)  # fmt: skip
    b.joints.append("knee-joint")
    return rf


def _long_pair(
    b: _Builder, rng: np.random.Generator, view: str, names: tuple[str, str], top_joint: str,
    bottom_joint: str, r_main: float, rt: float,
) -> tuple[float, float, float]:  # fmt: skip
    """Two parallel bones (tibia/fibula, radius/ulna) down the picture; returns (cx, y0, y1)."""
    w, h = b.wn, b.hn
    cx = w * rng.uniform(0.44, 0.56)
    shown = rng.choice(["top", "bottom", "neither"], p=[0.4, 0.4, 0.2])
    y0 = h * rng.uniform(0.05, 0.18) if shown == "top" else -3 * r_main
    y1 = h * rng.uniform(0.82, 0.95) if shown == "bottom" else h + 3 * r_main
    b.soft_tube((cx, -rt), (cx, h + rt), rt, rt * rng.uniform(0.65, 0.9), 2 * rt)
    side = rng.choice([-1.0, 1.0])
    spread = {"frontal": 1.9, "oblique": 1.2, "lateral": 0.55}[view] * r_main
    b.tube(names[0], (cx, y0), (cx + rng.uniform(-0.2, 0.2) * r_main, y1), r_main,
           joint0=shown == "top", joint1=shown == "bottom", bend=rng.uniform(-0.025, 0.025),
           flare0=1.8, flare1=1.7)  # fmt: skip
    r2 = r_main * rng.uniform(0.45, 0.7)
    b.tube(names[1], (cx + side * spread, y0 + r_main), (cx + side * spread * 0.9, y1 + r_main * 0.6),
           r2, joint0=shown == "top", joint1=shown == "bottom", bend=rng.uniform(-0.04, 0.04),
           flare0=1.6, flare1=1.6, lesion_weight=0.5)  # fmt: skip
    if shown == "top" and top_joint:
        b.joints.append(top_joint)
    if shown == "bottom" and bottom_joint:
        b.joints.append(bottom_joint)
    return cx, y0, y1


def _leg(b: _Builder, view: str, age: float, rng: np.random.Generator) -> float:
    rt = b.wn * rng.uniform(0.28, 0.40)
    r = rt * rng.uniform(0.30, 0.36)
    cx, y0, y1 = _long_pair(b, rng, view, ("tibia", "fibula"), "knee-joint", "ankle-joint", r, rt)
    if "knee-joint" in b.joints:
        b.tube("femur", (cx, y0 - b.hn), (cx, y0 - r * 0.3), r * 1.1, flare1=2.0, joint1=True)
    if "ankle-joint" in b.joints:
        b.ellipsoid("foot", (cx, y1 + r * 1.2), (r * 1.5, r * 0.9), shell=0.85)
    return r


def _forearm(b: _Builder, view: str, age: float, rng: np.random.Generator) -> float:
    rt = b.wn * rng.uniform(0.26, 0.38)
    r = rt * rng.uniform(0.24, 0.30)
    cx, y0, y1 = _long_pair(b, rng, view, ("radius", "ulna"), "elbow-joint", "wrist-joint", r, rt)
    if "elbow-joint" in b.joints:
        b.tube("humerus", (cx, y0 - b.hn), (cx, y0 - r * 0.4), r * 1.3, flare1=2.2, joint1=True)
    if "wrist-joint" in b.joints:
        _carpals(b, rng, (cx, y1 + r * 1.8), r * 0.9)
    return r


def _femur(b: _Builder, view: str, age: float, rng: np.random.Generator) -> float:
    w, h = b.wn, b.hn
    cx = w * rng.uniform(0.42, 0.58)
    rt = w * rng.uniform(0.30, 0.42)
    r = rt * rng.uniform(0.28, 0.34)
    b.soft_tube((cx, -rt), (cx, h + rt), rt, rt * 0.85, 2 * rt)
    if rng.random() < 0.5:  # distal femur and knee at the bottom
        yj = h * rng.uniform(0.78, 0.9)
        b.tube("femur", (cx - r, -4 * r), (cx, yj), r, flare1=2.0, joint1=True,
               bend=rng.uniform(-0.03, 0.03), lesion_weight=1.5)  # fmt: skip
        b.tube("tibia", (cx, yj + r * 0.35), (cx, yj + h), r * 0.9, flare0=1.9, joint0=True)
        b.joints.append("knee-joint")
    else:  # proximal femur and hip at the top
        top = h * rng.uniform(0.1, 0.2)
        _proximal_femur(b, rng, cx, top, r, view)
        b.tube("femur", (cx, top + r * 1.5), (cx + r * 0.5, h + 4 * r), r, flare0=1.5,
               bend=rng.uniform(-0.03, 0.03), lesion_weight=1.5)  # fmt: skip
    return r


def _proximal_femur(b: _Builder, rng: np.random.Generator, cx: float, top: float, r: float,
                    view: str) -> None:  # fmt: skip
    """Femoral head in the acetabulum, neck, greater trochanter, and a piece of the hip bone."""
    side = -1.0  # the head points medially (left in the natural frame; mirroring varies it)
    neck_len = r * (2.6 if view == "frontal" else 1.6)
    head = (cx + side * neck_len, top - r * 0.6)
    b.tube("femur", head, (cx, top + r * 1.7), r * 0.65, flare0=1.0, flare1=1.4, lesion_weight=0.6)
    b.ellipsoid("femur", head, (r * 1.15, r * 1.15), shell=0.9)
    b.ellipsoid("femur", (cx - side * r * 0.7, top + r * 0.9), (r * 0.7, r * 1.0), shell=0.85)
    rim = [(head[0] + r * 1.45 * math.cos(a), head[1] - r * 1.45 * math.sin(a))
           for a in np.linspace(0.1, math.pi - 0.4, 8)]  # fmt: skip
    up = [(head[0] + r * 3.5, head[1] - r * 5), (head[0] - r * 1.5, head[1] - r * 6)]
    b.plate("hip bone", [*rim, *up], density=0.5, rim=0.5)
    b.joints.append("hip-joint")


def _hip(b: _Builder, view: str, age: float, rng: np.random.Generator) -> float:
    w, h = b.wn, b.hn
    r = w * rng.uniform(0.055, 0.075)
    cx, top = w * rng.uniform(0.55, 0.65), h * rng.uniform(0.38, 0.48)
    b.soft_tube((w * 0.1, -h), (w * 0.2, h * 2), w * 0.75, w * 0.55, 1.5 * w)
    _proximal_femur(b, rng, cx, top, r, view)
    b.tube("femur", (cx, top + r * 1.5), (cx + r * 0.6, h + 4 * r), r, flare0=1.5,
           lesion_weight=1.2)  # fmt: skip
    head = (cx - 2.6 * r, top - 0.6 * r)
    ilium = [(head[0] + r * 2, head[1] - r * 1.6), (w * 0.75, -h * 0.1), (w * 0.05, -h * 0.05),
             (head[0] - r * 2.5, head[1] - r * 0.5)]  # fmt: skip
    b.plate("hip bone", ilium, density=0.4, rim=0.6)
    pubis = [(head[0] - r * 0.5, head[1] + r * 1.0), (head[0] + r * 0.4, head[1] + r * 4.5),
             (head[0] - r * 4.5, head[1] + r * 4.2), (head[0] - r * 5.5, head[1] + r * 1.8)]
    b.plate("hip bone", pubis, density=0.55, rim=0.6)
    hole = [(head[0] - r * 1.0, head[1] + r * 2.0), (head[0] - 0.2 * r, head[1] + r * 3.4),
            (head[0] - r * 3.5, head[1] + r * 3.4), (head[0] - r * 4.0, head[1] + r * 2.3)]
    b.plate("hip bone", hole, hole=True)
    return r


def _humerus(b: _Builder, view: str, age: float, rng: np.random.Generator) -> float:
    w, h = b.wn, b.hn
    cx = w * rng.uniform(0.45, 0.58)
    rt = w * rng.uniform(0.26, 0.36)
    r = rt * rng.uniform(0.26, 0.32)
    b.soft_tube((cx, -rt), (cx, h + rt), rt, rt * 0.8, 2 * rt)
    top = h * rng.uniform(0.08, 0.16)
    elbow = rng.random() < 0.35
    bottom = h * rng.uniform(0.84, 0.92) if elbow else h + 4 * r
    b.tube("humerus", (cx, top), (cx + r * 0.3, bottom), r, flare0=2.1, flare1=2.2, joint0=True,
           joint1=elbow, bend=rng.uniform(-0.02, 0.02), lesion_weight=1.5)  # fmt: skip
    b.ellipsoid("humerus", (cx, top + r * 1.2), (r * 2.0, r * 1.9), shell=0.92, density=0.8)
    glenoid = cx - r * 3.0
    b.plate("scapula", [(glenoid + r * 0.5, top - r * 1.5), (glenoid + r * 0.6, top + r * 2.5),
                        (glenoid - w, top + r * 6), (glenoid - w, top - r * 3)],
            density=0.35, rim=0.5)  # fmt: skip
    b.tube("clavicle", (cx - w, top - r * 2.5), (cx + r * 0.5, top - r * 2.9), r * 0.55,
           flare1=1.5, lesion_weight=0.0)  # fmt: skip
    b.joints.append("shoulder-joint")
    if elbow:
        b.joints.append("elbow-joint")
        b.tube("ulna", (cx, bottom + r * 0.4), (cx - r * 0.8, h + 6 * r), r * 0.6, joint0=True)
    return r


def _elbow(b: _Builder, view: str, age: float, rng: np.random.Generator) -> float:
    w, h = b.wn, b.hn
    cx, yj = w * rng.uniform(0.45, 0.55), h * rng.uniform(0.42, 0.55)
    rt = w * rng.uniform(0.22, 0.30)
    r = rt * rng.uniform(0.28, 0.34)
    bend = math.radians(rng.uniform(60, 100) if view == "lateral" else rng.uniform(-10, 10))
    fwd = (math.sin(bend), math.cos(bend))
    far = (cx + fwd[0] * h * 1.5, yj + fwd[1] * h * 1.5)
    b.soft_tube((cx, -rt), (cx, yj), rt, rt, 2 * rt)
    b.soft_tube((cx, yj), far, rt * 0.95, rt * 0.7, 2 * rt)
    b.tube("humerus", (cx, -4 * r), (cx, yj - r * 0.2), r, flare1=2.3, joint1=True,
           lesion_weight=1.2)  # fmt: skip
    across = (-fwd[1], fwd[0])
    for name, off, rad in (("radius", 0.8, 0.55), ("ulna", -0.7, 0.6)):
        start = (cx + across[0] * off * r + fwd[0] * r * 0.4, yj + across[1] * off * r + fwd[1] * r * 0.4)
        end = (start[0] + fwd[0] * h * 1.5, start[1] + fwd[1] * h * 1.5)
        b.tube(name, start, end, r * rad, flare0=1.7, joint0=True, lesion_weight=0.7)
    b.joints.append("elbow-joint")
    return r


def _hand(b: _Builder, view: str, age: float, rng: np.random.Generator) -> float:
    w, h = b.wn, b.hn
    cx = w * rng.uniform(0.45, 0.55)
    base = h * rng.uniform(0.66, 0.74)
    r = w * rng.uniform(0.022, 0.03)
    fan = {"frontal": 1.0, "oblique": 0.6, "lateral": 0.18}[view]
    b.soft_tube((cx, base - h * 0.12), (cx, h * 1.2), w * 0.30, w * 0.22, w * 0.5)
    lengths = (0.20, 0.12, 0.075, 0.055)  # metacarpal, proximal, middle, distal phalanx (x h)
    for k, spread in enumerate((-1.5, -0.5, 0.5, 1.5)):
        angle = math.radians(spread * 7 * fan + rng.uniform(-2, 2))
        direction = (math.sin(angle), -math.cos(angle))
        x, y = cx + spread * r * 3.2 * fan, base
        finger_start = None
        for j, frac in enumerate(lengths):
            ln = frac * h * (1.0 - 0.08 * abs(spread - 0.3))
            end = (x + direction[0] * ln, y + direction[1] * ln)
            rad = r * (1.15, 0.95, 0.8, 0.7)[j]
            b.tube("hand", (x, y), end, rad, flare0=1.45, flare1=1.35, joint0=True, joint1=True,
                   cortex=0.3, lesion_weight=0.5)  # fmt: skip
            if j == 1:
                finger_start = (x, y)
            x, y = end[0] + direction[0] * r * 0.6, end[1] + direction[1] * r * 0.6
        assert finger_start is not None
        b.soft_tube(finger_start, (x, y), r * 2.3, r * 1.9, w * 0.5)
    thumb = math.radians(-40 * max(fan, 0.5) + rng.uniform(-5, 5))
    direction = (math.sin(thumb), -math.cos(thumb))
    x, y = cx - r * 5.5 * max(fan, 0.4), base + h * 0.08
    start = (x, y)
    for j, frac in enumerate((0.14, 0.09, 0.065)):
        end = (x + direction[0] * frac * h, y + direction[1] * frac * h)
        b.tube("hand", (x, y), end, r * (1.1, 1.0, 0.8)[j], flare0=1.4, flare1=1.35, joint0=True,
               joint1=True, lesion_weight=0.3)  # fmt: skip
        x, y = end[0] + direction[0] * r * 0.6, end[1] + direction[1] * r * 0.6
    b.soft_tube(start, (x, y), r * 2.6, r * 2.0, w * 0.5)
    _carpals(b, rng, (cx, base + h * 0.07), r * 1.4)
    if rng.random() < 0.55:
        for name, dx, rad in (("radius", 0.8, 1.9), ("ulna", -2.6, 1.1)):
            x0 = cx + dx * r * 2.0
            b.tube(name, (x0, base + h * 0.16), (x0, h + 10 * r), r * rad, flare0=1.6, joint0=True,
                   lesion_weight=0.6)  # fmt: skip
        b.joints.append("wrist-joint")
    return r * 1.2


def _carpals(b: _Builder, rng: np.random.Generator, centre: Point, size: float) -> None:
    for k in range(8):
        col, row = k % 4, k // 4
        c = (centre[0] + (col - 1.5) * size * 1.9 + rng.uniform(-0.2, 0.2) * size,
             centre[1] + (row - 0.5) * size * 1.8)  # fmt: skip
        b.ellipsoid("hand", c, (size * rng.uniform(0.8, 1.1), size * rng.uniform(0.7, 1.0)),
                    rng.uniform(0, math.pi), shell=0.8, density=0.8)  # fmt: skip


def _ankle(b: _Builder, view: str, age: float, rng: np.random.Generator) -> float:
    w, h = b.wn, b.hn
    cx, yj = w * rng.uniform(0.45, 0.55), h * rng.uniform(0.5, 0.62)
    rt = w * rng.uniform(0.24, 0.32)
    r = rt * rng.uniform(0.34, 0.40)
    b.soft_tube((cx, -rt), (cx, yj), rt * 0.9, rt * 1.05, 2 * rt)
    b.tube("tibia", (cx, -4 * r), (cx, yj), r, flare1=1.7, joint1=True, lesion_weight=1.2)
    side = rng.choice([-1.0, 1.0])
    off = {"frontal": 1.6, "oblique": 1.1, "lateral": 0.5}[view] * r * side
    b.tube("fibula", (cx + off, -4 * r), (cx + off * 1.05, yj + r * 0.8), r * 0.38, flare1=1.8,
           joint1=True, lesion_weight=0.4)  # fmt: skip
    b.ellipsoid("foot", (cx, yj + r * 1.0), (r * 1.5, r * 0.9), shell=0.85)
    if view == "lateral":
        b.soft_tube((cx - r * 2.5, yj + r * 1.8), (cx + w, yj + r * 2.0), rt * 0.9, rt * 0.6, 2 * rt)
        b.ellipsoid("foot", (cx - r * 1.0, yj + r * 2.6), (r * 2.2, r * 1.1), 0.15, shell=0.88)
        for k in range(3):
            b.ellipsoid("foot", (cx + r * (1.8 + 1.5 * k), yj + r * 1.8), (r * 0.9, r * 0.7),
                        shell=0.8, density=0.8)  # fmt: skip
    else:
        b.soft_tube((cx, yj), (cx, h + rt), rt * 1.05, rt * 0.9, 2 * rt)
        for k in range(4):
            b.ellipsoid("foot", (cx + (k - 1.5) * r * 1.3, yj + r * 2.4), (r * 0.7, r * 0.6),
                        shell=0.8, density=0.8)  # fmt: skip
    b.joints.append("ankle-joint")
    return r


def _foot(b: _Builder, view: str, age: float, rng: np.random.Generator) -> float:
    w, h = b.wn, b.hn
    cx = w * rng.uniform(0.45, 0.55)
    base = h * rng.uniform(0.55, 0.62)
    r = w * rng.uniform(0.028, 0.036)
    fan = {"frontal": 1.0, "oblique": 0.65, "lateral": 0.2}[view]
    b.soft_tube((cx, base - h * 0.25), (cx, h * 1.3), w * 0.30, w * 0.34, w * 0.5)
    for k in range(5):
        spread = k - 2.0
        angle = math.radians(spread * 5 * fan + rng.uniform(-2, 2))
        direction = (math.sin(angle), -math.cos(angle))
        x, y = cx + spread * r * 3.3 * fan, base
        rad = r * (1.5 if k == 0 else 1.0)
        for j, frac in enumerate((0.24, 0.1, 0.05)):
            ln = frac * h * (1.0 - 0.1 * abs(spread + 1))
            end = (x + direction[0] * ln, y + direction[1] * ln)
            b.tube("foot", (x, y), end, rad * (1.0, 0.85, 0.75)[j], flare0=1.45, flare1=1.4,
                   joint0=True, joint1=True, lesion_weight=0.6 if j == 0 else 0.2)  # fmt: skip
            x, y = end[0] + direction[0] * r * 0.6, end[1] + direction[1] * r * 0.6
    for k in range(7):
        c = (cx + ((k % 4) - 1.5) * r * 3.0, base + r * (3.0 + 3.0 * (k // 4)))
        b.ellipsoid("foot", c, (r * 1.6, r * 1.3), rng.uniform(0, math.pi), shell=0.85, density=0.8)
    if view != "frontal":
        b.ellipsoid("foot", (cx, base + r * 11), (r * 3.2, r * 2.5), shell=0.88)
    return r * 1.2


def _tube_visible(tube: Tube, width: int, height: int) -> bool:
    ts = np.linspace(0.0, 1.0, 21)
    xs = tube.p0[0] + (tube.p1[0] - tube.p0[0]) * ts
    ys = tube.p0[1] + (tube.p1[1] - tube.p0[1]) * ts
    inside = (xs >= 0) & (xs < width) & (ys >= 0) & (ys < height)
    return bool(inside.sum() * tube.length / 20.0 >= 1.5 * tube.radius)


def _inside(p: Point, width: int, height: int, margin: float) -> bool:
    return margin <= p[0] < width - margin and margin <= p[1] < height - margin


_LAYOUTS: dict[str, Callable[[_Builder, str, float, np.random.Generator], float]] = {
    "knee": _knee, "femur": _femur, "leg": _leg, "hip": _hip, "humerus": _humerus,
    "forearm": _forearm, "elbow": _elbow, "hand": _hand, "ankle": _ankle, "foot": _foot,
}  # fmt: skip
