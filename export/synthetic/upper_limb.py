"""Layouts of the upper limb: shoulder and humerus, elbow, forearm, hand and wrist.

Each layout draws in the natural frame of ``SceneBuilder`` and returns the typical shaft radius.
"""

from __future__ import annotations

import math

import numpy as np

from btxrd.export.synthetic.anatomy import Point
from btxrd.export.synthetic.scene import SceneBuilder, long_pair


def forearm(b: SceneBuilder, view: str, age: float, rng: np.random.Generator) -> float:
    rt = b.wn * rng.uniform(0.26, 0.38)
    r = rt * rng.uniform(0.24, 0.30)
    cx, y0, y1 = long_pair(b, rng, view, ("radius", "ulna"), "elbow-joint", "wrist-joint", r, rt)
    if "elbow-joint" in b.joints:
        b.tube("humerus", (cx, y0 - b.hn), (cx, y0 - r * 0.4), r * 1.3, flare1=2.2, joint1=True)
    if "wrist-joint" in b.joints:
        carpals(b, rng, (cx, y1 + r * 1.8), r * 0.9)
    return r


def humerus(b: SceneBuilder, view: str, age: float, rng: np.random.Generator) -> float:
    w, h = b.wn, b.hn
    cx = w * rng.uniform(0.45, 0.58)
    rt = w * rng.uniform(0.26, 0.36)
    r = rt * rng.uniform(0.26, 0.32)
    b.soft_tube((cx, -rt), (cx, h + rt), rt, rt * 0.8, 2 * rt)
    top = h * rng.uniform(0.08, 0.16)
    elbow = rng.random() < 0.35
    bottom = h * rng.uniform(0.84, 0.92) if elbow else h + 4 * r
    b.tube(
        "humerus",
        (cx, top),
        (cx + r * 0.3, bottom),
        r,
        flare0=2.1,
        flare1=2.2,
        joint0=True,
        joint1=elbow,
        bend=rng.uniform(-0.02, 0.02),
        lesion_weight=1.5,
    )
    b.ellipsoid("humerus", (cx, top + r * 1.2), (r * 2.0, r * 1.9), shell=0.92, density=0.8)
    # The chest wall and shoulder girdle: soft tissue behind the scapula, up to the deltoid.
    b.soft_tube(
        (cx - 1.4 * w, top - 3 * r), (cx - 1.1 * w, top + 9 * r), 1.25 * w, 1.0 * w, 2.5 * rt
    )
    glenoid = cx - r * 3.0
    b.plate(
        "scapula",
        [
            (glenoid + r * 0.5, top - r * 1.5),
            (glenoid + r * 0.6, top + r * 2.5),
            (glenoid - w, top + r * 6),
            (glenoid - w, top - r * 3),
        ],
        density=0.35,
        rim=0.5,
    )
    b.tube(
        "clavicle",
        (cx - w, top - r * 2.5),
        (cx + r * 0.5, top - r * 2.9),
        r * 0.55,
        flare1=1.5,
        lesion_weight=0.0,
    )
    b.joints.append("shoulder-joint")
    if elbow:
        b.joints.append("elbow-joint")
        b.tube("ulna", (cx, bottom + r * 0.4), (cx - r * 0.8, h + 6 * r), r * 0.6, joint0=True)
    return r


def elbow(b: SceneBuilder, view: str, age: float, rng: np.random.Generator) -> float:
    w, h = b.wn, b.hn
    cx, yj = w * rng.uniform(0.45, 0.55), h * rng.uniform(0.42, 0.55)
    rt = w * rng.uniform(0.22, 0.30)
    r = rt * rng.uniform(0.28, 0.34)
    bend = math.radians(rng.uniform(60, 100) if view == "lateral" else rng.uniform(-10, 10))
    fwd = (math.sin(bend), math.cos(bend))
    far = (cx + fwd[0] * h * 1.5, yj + fwd[1] * h * 1.5)
    b.soft_tube((cx, -rt), (cx, yj), rt, rt, 2 * rt)
    b.soft_tube((cx, yj), far, rt * 0.95, rt * 0.7, 2 * rt)
    b.tube(
        "humerus", (cx, -4 * r), (cx, yj - r * 0.2), r, flare1=2.3, joint1=True, lesion_weight=1.2
    )
    across = (-fwd[1], fwd[0])
    for name, off, rad in (("radius", 0.8, 0.55), ("ulna", -0.7, 0.6)):
        start = (
            cx + across[0] * off * r + fwd[0] * r * 0.4,
            yj + across[1] * off * r + fwd[1] * r * 0.4,
        )
        end = (start[0] + fwd[0] * h * 1.5, start[1] + fwd[1] * h * 1.5)
        b.tube(name, start, end, r * rad, flare0=1.7, joint0=True, lesion_weight=0.7)
    b.joints.append("elbow-joint")
    return r


def hand(b: SceneBuilder, view: str, age: float, rng: np.random.Generator) -> float:
    w, h = b.wn, b.hn
    cx = w * rng.uniform(0.45, 0.55)
    base = h * rng.uniform(0.66, 0.74)
    r = w * rng.uniform(0.022, 0.03)
    fan = {"frontal": 1.0, "oblique": 0.6, "lateral": 0.18}[view]
    b.soft_tube((cx, base - h * 0.19), (cx, h * 1.2), w * (0.2 + 0.1 * fan), w * 0.2, w * 0.5)
    lengths = (0.20, 0.12, 0.075, 0.055)  # metacarpal, proximal, middle, distal phalanx (x h)
    for spread in (-1.5, -0.5, 0.5, 1.5):
        angle = math.radians(spread * 7 * fan + rng.uniform(-2, 2))
        direction = (math.sin(angle), -math.cos(angle))
        x, y = cx + spread * r * 3.2 * fan, base
        finger_start = None
        for j, frac in enumerate(lengths):
            ln = frac * h * (1.0 - 0.08 * abs(spread - 0.3))
            end = (x + direction[0] * ln, y + direction[1] * ln)
            rad = r * (1.15, 0.95, 0.8, 0.7)[j]
            b.tube(
                "hand",
                (x, y),
                end,
                rad,
                flare0=1.45,
                flare1=1.35,
                joint0=True,
                joint1=True,
                cortex=0.32,
                end_zone=0.9,
                lesion_weight=0.5,
            )
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
        b.tube(
            "hand",
            (x, y),
            end,
            r * (1.1, 1.0, 0.8)[j],
            flare0=1.4,
            flare1=1.35,
            joint0=True,
            joint1=True,
            end_zone=0.9,
            lesion_weight=0.3,
        )
        x, y = end[0] + direction[0] * r * 0.6, end[1] + direction[1] * r * 0.6
    b.soft_tube(start, (x, y), r * 2.6, r * 2.0, w * 0.5)
    carpals(b, rng, (cx, base + h * 0.07), r * 1.4)
    if rng.random() < 0.55:
        for name, dx, rad in (("radius", 0.8, 1.9), ("ulna", -2.6, 1.1)):
            x0 = cx + dx * r * 2.0
            b.tube(
                name,
                (x0, base + h * 0.16),
                (x0, h + 10 * r),
                r * rad,
                flare0=1.6,
                joint0=True,
                lesion_weight=0.6,
            )
        b.joints.append("wrist-joint")
    return r * 1.2


def carpals(b: SceneBuilder, rng: np.random.Generator, centre: Point, size: float) -> None:
    for k in range(8):
        col, row = k % 4, k // 4
        c = (
            centre[0] + (col - 1.5) * size * 1.9 + rng.uniform(-0.2, 0.2) * size,
            centre[1] + (row - 0.5) * size * 1.8,
        )
        b.ellipsoid(
            "hand",
            c,
            (size * rng.uniform(0.8, 1.1), size * rng.uniform(0.7, 1.0)),
            rng.uniform(0, math.pi),
            shell=0.8,
            density=0.8,
        )
