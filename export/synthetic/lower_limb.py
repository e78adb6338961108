"""Layouts of the lower limb and pelvis: hip, femur, knee, leg, ankle and foot.

Each layout draws in the natural frame of ``SceneBuilder`` and returns the typical shaft radius.
"""

from __future__ import annotations

import math

import numpy as np

from btxrd.export.synthetic.anatomy import Point
from btxrd.export.synthetic.scene import SceneBuilder, long_pair


def knee(b: SceneBuilder, view: str, age: float, rng: np.random.Generator) -> float:
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
    b.tube(
        "femur",
        (cx - rf * 0.3, -3 * rf),
        (cx, yj - gap / 2),
        rf,
        flare1=2.05,
        joint1=True,
        bend=rng.uniform(-0.02, 0.02),
        lesion_weight=1.4,
    )
    top = (cx + down[0] * gap / 2, yj + down[1] * gap / 2)
    rtib = rf * rng.uniform(0.85, 0.95)
    b.tube(
        "tibia",
        top,
        (top[0] + down[0] * 1.6 * h, top[1] + down[1] * 1.6 * h),
        rtib,
        flare0=1.95,
        joint0=True,
        lesion_weight=1.3,
    )
    side = rng.choice([-1.0, 1.0])
    offset = {"frontal": 1.55, "oblique": 1.0, "lateral": 0.45}[view] * rtib * side
    head = (top[0] + down[0] * rf * 1.1 - down[1] * offset, top[1] + down[1] * rf * 1.1)
    b.tube(
        "fibula",
        head,
        (head[0] + down[0] * 1.6 * h, head[1] + down[1] * 1.6 * h),
        rf * 0.33,
        flare0=1.8,
        cortex=0.35,
        joint0=True,
        lesion_weight=0.3,
    )
    if view == "lateral":
        b.ellipsoid(
            "patella",
            (cx - side * rf * 2.1, yj - rf * 1.0),
            (rf * 0.5, rf * 1.05),
            math.radians(-side * 10),
            shell=0.8,
        )
    else:
        b.ellipsoid(
            "patella",
            (cx + rng.uniform(-0.3, 0.3) * rf, yj - rf * 1.3),
            (rf * 0.85, rf * 1.0),
            shell=0.85,
            density=0.45,
        )
    b.joints.append("knee-joint")
    return rf


def leg(b: SceneBuilder, view: str, age: float, rng: np.random.Generator) -> float:
    rt = b.wn * rng.uniform(0.28, 0.40)
    r = rt * rng.uniform(0.30, 0.36)
    cx, y0, y1 = long_pair(b, rng, view, ("tibia", "fibula"), "knee-joint", "ankle-joint", r, rt)
    if "knee-joint" in b.joints:
        b.tube("femur", (cx, y0 - b.hn), (cx, y0 - r * 0.3), r * 1.1, flare1=2.0, joint1=True)
    if "ankle-joint" in b.joints:
        b.ellipsoid("foot", (cx, y1 + r * 1.2), (r * 1.5, r * 0.9), shell=0.85)
    return r


def femur(b: SceneBuilder, view: str, age: float, rng: np.random.Generator) -> float:
    w, h = b.wn, b.hn
    cx = w * rng.uniform(0.42, 0.58)
    rt = w * rng.uniform(0.30, 0.42)
    r = rt * rng.uniform(0.28, 0.34)
    b.soft_tube((cx, -rt), (cx, h + rt), rt, rt * 0.85, 2 * rt)
    if rng.random() < 0.5:  # distal femur and knee at the bottom
        yj = h * rng.uniform(0.78, 0.9)
        b.tube(
            "femur",
            (cx - r, -4 * r),
            (cx, yj),
            r,
            flare1=2.0,
            joint1=True,
            bend=rng.uniform(-0.03, 0.03),
            lesion_weight=1.5,
        )
        b.tube("tibia", (cx, yj + r * 0.35), (cx, yj + h), r * 0.9, flare0=1.9, joint0=True)
        b.joints.append("knee-joint")
    else:  # proximal femur and hip at the top
        head = (cx - r * 2.2, h * rng.uniform(0.12, 0.2))
        _proximal_femur(b, rng, head, r, view, h + 4 * r)
    return r


def _proximal_femur(
    b: SceneBuilder, rng: np.random.Generator, head: Point, r: float, view: str, shaft_end: float
) -> None:
    """Femoral head in the acetabulum, neck, trochanters, shaft, and the hip bone around them.

    The natural frame has the body's midline to the left (mirroring gives the other side).
    """
    hx, hy = head
    rh = r * rng.uniform(1.5, 1.7)
    lateral = 2.6 if view == "frontal" else 1.7  # the neck foreshortens off the frontal view
    # The shaft's rounded top is the greater trochanter; the neck joins it below that.
    top = (hx + lateral * rh, hy + 0.2 * rh)
    b.tube(
        "femur",
        top,
        (top[0] + 0.08 * (shaft_end - hy), shaft_end),
        r,
        flare0=1.9,
        bend=rng.uniform(-0.02, 0.02),
        lesion_weight=1.4,
    )
    neck_end = (top[0] - 0.2 * r, top[1] + 2.4 * r)
    b.tube(
        "femur", (hx, hy), neck_end, r * 0.9, flare0=1.0, flare1=1.5, density=0.7, lesion_weight=0.3
    )
    b.ellipsoid("femur", head, (rh, rh), shell=0.9)
    b.ellipsoid(
        "femur",
        (neck_end[0] - 0.9 * r, neck_end[1] + 0.9 * r),
        (r * 0.45, r * 0.6),
        shell=0.8,
        density=0.6,
    )
    roof = [
        (hx + 1.1 * rh * math.cos(a), hy - 1.1 * rh * math.sin(a))
        for a in np.linspace(math.radians(-15), math.radians(150), 9)
    ]
    ilium = [
        *roof,
        (hx - 2.6 * rh, hy + 0.1 * rh),
        (hx - 4.6 * rh, hy - 2.6 * rh),
        (hx - 4.4 * rh, hy - 5.4 * rh),
        (hx - 1.5 * rh, hy - 6.2 * rh),
        (hx + 1.2 * rh, hy - 5.2 * rh),
        (hx + 2.3 * rh, hy - 3.4 * rh),
        (hx + 1.5 * rh, hy - 2.6 * rh),
        (hx + 1.4 * rh, hy - 1.0 * rh),
    ]
    b.plate("hip bone", ilium, density=0.4, rim=0.5)
    rami = [
        (hx + 0.2 * rh, hy + 1.0 * rh),
        (hx + 0.4 * rh, hy + 3.2 * rh),
        (hx - 1.2 * rh, hy + 3.8 * rh),
        (hx - 4.4 * rh, hy + 2.6 * rh),
        (hx - 4.2 * rh, hy + 1.2 * rh),
        (hx - 1.2 * rh, hy + 0.9 * rh),
    ]
    b.plate("hip bone", rami, density=0.45, rim=0.6)
    foramen = [
        (hx - 1.6 * rh + 1.3 * rh * math.cos(a), hy + 2.3 * rh + 0.8 * rh * math.sin(a))
        for a in np.linspace(0, 2 * math.pi, 12, endpoint=False)
    ]
    b.plate("hip bone", foramen, hole=True)
    b.joints.append("hip-joint")


def hip(b: SceneBuilder, view: str, age: float, rng: np.random.Generator) -> float:
    w, h = b.wn, b.hn
    r = h * rng.uniform(0.045, 0.055)
    head = (w * rng.uniform(0.52, 0.6), h * rng.uniform(0.42, 0.5))
    skin = head[0] + r * rng.uniform(6.0, 7.5)  # the lateral contour of the hip
    big = 1.5 * w
    b.soft_tube((skin - big, -h), (skin - big + 0.1 * w, 2 * h), big, big, 1.0 * w)
    _proximal_femur(b, rng, head, r, view, h + 4 * r)
    return r


def ankle(b: SceneBuilder, view: str, age: float, rng: np.random.Generator) -> float:
    w, h = b.wn, b.hn
    cx, yj = w * rng.uniform(0.45, 0.55), h * rng.uniform(0.5, 0.62)
    rt = w * rng.uniform(0.24, 0.32)
    r = rt * rng.uniform(0.34, 0.40)
    b.soft_tube((cx, -rt), (cx, yj), rt * 0.9, rt * 1.05, 2 * rt)
    b.tube("tibia", (cx, -4 * r), (cx, yj), r, flare1=1.7, joint1=True, lesion_weight=1.2)
    side = rng.choice([-1.0, 1.0])
    off = {"frontal": 1.6, "oblique": 1.1, "lateral": 0.5}[view] * r * side
    b.tube(
        "fibula",
        (cx + off, -4 * r),
        (cx + off * 1.05, yj + r * 0.8),
        r * 0.38,
        flare1=1.8,
        joint1=True,
        lesion_weight=0.4,
    )
    b.ellipsoid("foot", (cx, yj + r * 1.0), (r * 1.5, r * 0.9), shell=0.85)
    if view == "lateral":
        b.soft_tube(
            (cx - r * 2.5, yj + r * 1.8), (cx + w, yj + r * 2.0), rt * 0.9, rt * 0.6, 2 * rt
        )
        b.ellipsoid("foot", (cx - r * 1.0, yj + r * 2.6), (r * 2.2, r * 1.1), 0.15, shell=0.88)
        for k in range(3):
            b.ellipsoid(
                "foot",
                (cx + r * (1.8 + 1.5 * k), yj + r * 1.8),
                (r * 0.9, r * 0.7),
                shell=0.8,
                density=0.8,
            )
    else:
        b.soft_tube((cx, yj), (cx, h + rt), rt * 1.05, rt * 0.9, 2 * rt)
        for k in range(4):
            b.ellipsoid(
                "foot",
                (cx + (k - 1.5) * r * 1.3, yj + r * 2.4),
                (r * 0.7, r * 0.6),
                shell=0.8,
                density=0.8,
            )
    b.joints.append("ankle-joint")
    return r


def foot(b: SceneBuilder, view: str, age: float, rng: np.random.Generator) -> float:
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
            b.tube(
                "foot",
                (x, y),
                end,
                rad * (1.0, 0.85, 0.75)[j],
                flare0=1.45,
                flare1=1.4,
                joint0=True,
                joint1=True,
                end_zone=0.9,
                lesion_weight=0.6 if j == 0 else 0.2,
            )
            x, y = end[0] + direction[0] * r * 0.6, end[1] + direction[1] * r * 0.6
    for k in range(7):
        c = (cx + ((k % 4) - 1.5) * r * 3.0, base + r * (3.0 + 3.0 * (k // 4)))
        b.ellipsoid("foot", c, (r * 1.6, r * 1.3), rng.uniform(0, math.pi), shell=0.85, density=0.8)
    if view != "frontal":
        b.ellipsoid("foot", (cx, base + r * 11), (r * 3.2, r * 2.5), shell=0.88)
    return r * 1.2
