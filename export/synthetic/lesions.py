"""Which tumour goes where: subtype frequencies, sites on the bones, sizes and contrasts.

Sizes are in units of the bone's shaft radius (never less than a few percent of the picture),
so a lesion stays visible when the whole image is squashed to 224 x 224. A minority of lesions
is "subtle": smaller and fainter, so a classifier cannot be perfect after one epoch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from btxrd.export.synthetic.anatomy import Ellipsoid, Tube
from btxrd.export.synthetic.scene import Scene
from btxrd.export.synthetic.shapes import Blob, random_blob
from btxrd.export.synthetic.tumours import DrawnLesion, LooseBodies, LyticLesion, Outgrowth, Sarcoma

# Subtype counts in real BTXRD; used as sampling weights.
BENIGN_SUBTYPES = {
    "osteochondroma": 754, "multiple osteochondromas": 263, "simple bone cyst": 206,
    "giant cell tumor": 93, "osteofibroma": 44, "synovial osteochondroma": 50, "other bt": 115,
}  # fmt: skip
MALIGNANT_SUBTYPES = {"osteosarcoma": 297, "other mt": 45}


@dataclass(frozen=True)
class Site:
    bone: int
    tube: Tube
    s: float  # position along the bone
    away: float  # +1 if increasing s leads away from the nearest joint, else -1
    at_joint: bool  # False when no joint end was available and the site is mid-shaft


def plan_lesions(
    subtype: str, scene: Scene, rng: np.random.Generator, subtle: bool
) -> list[DrawnLesion]:
    """Choose where and how the tumour of ``subtype`` appears on ``scene``'s bones."""
    size = rng.uniform(0.6, 0.8) if subtle else 1.0
    contrast = rng.uniform(0.5, 0.7) if subtle else rng.uniform(0.9, 1.15)
    if subtype in ("osteochondroma", "multiple osteochondromas"):
        count = 1 if subtype == "osteochondroma" else int(rng.integers(2, 5))
        return [_osteochondroma(subtype, scene, rng, size) for _ in range(count)]
    if subtype == "synovial osteochondroma":
        return [_loose_bodies(subtype, scene, rng, size)]
    if subtype in MALIGNANT_SUBTYPES:
        return [_sarcoma(subtype, scene, rng, size, contrast)]
    return [_lytic(subtype, scene, rng, size, contrast)]


def _lytic(
    subtype: str, scene: Scene, rng: np.random.Generator, size: float, contrast: float
) -> LyticLesion:
    where = {"giant cell tumor": "epiphysis", "osteofibroma": "diaphysis"}.get(
        subtype, "metaphysis"
    )
    site = _pick_site(scene, rng, where)
    t, r = site.tube, _unit(scene, site.tube)
    outer = max(float(t.outer_radius(np.array([site.s]))[0]), 0.6 * r)
    side = float(rng.choice([-1.0, 1.0]))
    if subtype == "simple bone cyst":
        a, b, dc = r * rng.uniform(1.4, 2.6), outer * rng.uniform(0.85, 1.12), 0.0
        rim, expand, n_septa, rough = rng.uniform(0.3, 0.5), 0.2, int(rng.integers(0, 2)), 0.05
    elif subtype == "giant cell tumor":
        a, b = r * rng.uniform(1.1, 1.7), outer * rng.uniform(0.6, 0.9)
        dc, rim, expand = side * outer * rng.uniform(0.15, 0.4), 0.2, 0.25
        n_septa, rough = int(rng.integers(2, 5)), 0.1
    elif subtype == "osteofibroma":
        a, b = r * rng.uniform(1.6, 3.0), r * rng.uniform(0.5, 0.8)
        dc, rim, expand = side * outer * rng.uniform(0.5, 0.8), rng.uniform(0.5, 0.8), 0.15
        n_septa, rough = int(rng.integers(2, 5)), 0.12
    else:
        a, b = r * rng.uniform(1.1, 1.9), outer * rng.uniform(0.5, 0.8)
        dc, rim, expand = side * outer * rng.uniform(0.25, 0.55), rng.uniform(0.45, 0.75), 0.15
        n_septa, rough = int(rng.integers(0, 3)), 0.1
    a, b = a * size, b * max(size, 0.75)
    sc = site.s
    if where == "epiphysis" and site.at_joint:  # from under the joint surface to the metaphysis
        sc = (0.0 if site.away > 0 else t.length) + site.away * (0.45 * outer + a)
    blob = random_blob(rng, sc, dc, a, b, rough)
    septa = []
    for _ in range(n_septa):
        ang = rng.uniform(0, 2 * math.pi)
        septa.append(
            (
                sc + a * 0.45 * math.cos(ang),
                dc + b * 0.45 * math.sin(ang),
                min(a, b) * rng.uniform(0.35, 0.6),
                ang + math.pi,
            )
        )
    return LyticLesion(
        subtype, site.bone, t, blob, depth=min(0.9, rng.uniform(0.65, 0.85) * contrast),
        edge=rng.uniform(0.04, 0.1),
        rim=rim * contrast,
        rim_width=max(1.0, r * rng.uniform(0.08, 0.13)),
        expand=expand * contrast, septa=tuple(septa), septa_density=0.3 * contrast,
    )  # fmt: skip


def _osteochondroma(subtype: str, scene: Scene, rng: np.random.Generator, size: float) -> Outgrowth:
    site = _pick_site(scene, rng, "metaphysis")
    t, r = site.tube, _unit(scene, site.tube)
    side = _free_side(scene, site, rng)
    outer = float(t.outer_radius(np.array([site.s]))[0])
    sessile = rng.random() < 0.3
    if sessile:
        length, radius, flare0 = r * rng.uniform(0.8, 1.1), r * rng.uniform(0.4, 0.52), 2.4
    else:
        length, radius = r * rng.uniform(1.4, 2.4), r * rng.uniform(0.32, 0.46)
        flare0 = rng.uniform(2.0, 2.8)
    length, radius = length * size, radius * max(size, 0.8)
    # Start deep enough that the flared base, not the rounded end, meets the parent's surface.
    depth = min(
        0.6 * radius * flare0 + 0.5 * float(t.cortex_thickness(np.array([site.s]))[0]), 0.7 * outer
    )
    tilt = math.radians(rng.uniform(25, 60))  # pointing away from the joint
    ds, dd = site.away * math.sin(tilt), side * math.cos(tilt)
    start = (site.s, side * (outer - depth))
    end = (start[0] + ds * (length + depth), start[1] + dd * (length + depth))
    p0 = t.to_image(np.array([start[0]]), np.array([start[1]]))
    p1 = t.to_image(np.array([end[0]]), np.array([end[1]]))
    child = Tube(
        "osteochondroma", (float(p0[0][0]), float(p0[1][0])), (float(p1[0][0]), float(p1[1][0])),
        radius, flare0=flare0, flare1=rng.uniform(1.2, 1.7), cortex=0.3, end_zone=0.6, cap=1.0,
        density=t.density,
    )  # fmt: skip
    return Outgrowth(subtype, site.bone, t, child)


def _loose_bodies(subtype: str, scene: Scene, rng: np.random.Generator, size: float) -> LooseBodies:
    site = _pick_site(scene, rng, "joint")
    t, r = site.tube, _unit(scene, site.tube)
    side = float(rng.choice([-1.0, 1.0]))
    outer = float(t.outer_radius(np.array([site.s]))[0])
    sc = site.s - site.away * r * rng.uniform(0.0, 0.6)
    area = Blob(
        sc,
        side * outer * rng.uniform(0.8, 1.2),
        r * rng.uniform(0.9, 1.5) * size,
        r * rng.uniform(0.6, 0.9) * size,
    )
    bodies = []
    for _ in range(int(rng.integers(8, 21))):
        ang, rad = rng.uniform(0, 2 * math.pi), math.sqrt(rng.random()) * 0.85
        s0, d0 = area.sc + area.a * rad * math.cos(ang), area.dc + area.b * rad * math.sin(ang)
        x, y = t.to_image(np.array([s0]), np.array([d0]))
        axis = r * rng.uniform(0.1, 0.24) * size
        bodies.append(
            Ellipsoid(
                "loose body",
                (float(x[0]), float(y[0])),
                (axis, axis * rng.uniform(0.6, 1.0)),
                rng.uniform(0, math.pi),
                shell=0.6,
                density=rng.uniform(0.9, 1.3),
            )
        )
    return LooseBodies(subtype, tuple(bodies), area, t)


def _sarcoma(
    subtype: str, scene: Scene, rng: np.random.Generator, size: float, contrast: float
) -> Sarcoma:
    osteosarcoma = subtype == "osteosarcoma"
    site = _pick_site(scene, rng, "metaphysis" if osteosarcoma else "diaphysis")
    t, r = site.tube, _unit(scene, site.tube)
    outer = float(t.outer_radius(np.array([site.s]))[0])
    side = _free_side(scene, site, rng)
    a = r * (rng.uniform(1.4, 2.6) if osteosarcoma else rng.uniform(2.0, 3.4)) * size
    e_in = outer * rng.uniform(0.3, 1.0)
    e_out = outer + r * rng.uniform(1.0, 2.0) * size
    blob = random_blob(rng, site.s, side * (e_out - e_in) / 2, a, (e_out + e_in) / 2, 0.1)
    # Periosteal reaction: sunburst for osteosarcoma, onion-skin for the Ewing-like rest.
    pick = rng.random()
    if osteosarcoma:
        spicules, onion = (int(rng.integers(20, 50)), 0) if pick < 0.65 else (0, 0)
    else:
        spicules, onion = (0, int(rng.integers(2, 6))) if pick < 0.65 else (0, 0)
        if 0.65 <= pick < 0.85:
            spicules = int(rng.integers(20, 40))  # hair-on-end
    return Sarcoma(
        subtype, site.bone, t, blob, side,
        edge=rng.uniform(0.25, 0.45),
        lysis=rng.uniform(0.55, 0.85) * contrast,
        grain=max(1.0, r * (rng.uniform(0.05, 0.08) if osteosarcoma else rng.uniform(0.025, 0.04))),
        cortex_break=rng.uniform(0.6, 0.95) * contrast,
        osteoid=(rng.uniform(0.3, 0.8) if osteosarcoma else rng.uniform(0.0, 0.15)) * contrast,
        mass=rng.uniform(0.35, 0.6) * contrast,
        spicules=spicules,
        onion=onion,
        codman=bool(rng.random() < 0.5),
        reaction=rng.uniform(0.45, 0.8) * contrast,
        unit=r,
        seed=int(rng.integers(2**31)),
    )  # fmt: skip


def _free_side(scene: Scene, site: Site, rng: np.random.Generator) -> float:
    """The side of the bone with more room (away from a parallel bone), most of the time."""
    t = site.tube
    clearance = []
    for side in (-1.0, 1.0):
        x, y = t.to_image(np.array([site.s]), np.array([side * 2.5 * t.radius]))
        gaps = [
            _distance_to_axis(other, float(x[0]), float(y[0])) / other.radius
            for k, other in enumerate(scene.tubes)
            if k != site.bone
        ]
        clearance.append(min(gaps, default=99.0))
    best = -1.0 if clearance[0] > clearance[1] else 1.0
    return best if rng.random() < 0.85 else -best


def _distance_to_axis(t: Tube, x: float, y: float) -> float:
    s, d = t.to_local(np.array([x]), np.array([y]))
    if 0.0 <= s[0] <= t.length:
        return float(abs(d[0]))
    return float(min(math.dist((x, y), t.p0), math.dist((x, y), t.p1)))


def _unit(scene: Scene, tube: Tube) -> float:
    """Lesion yardstick: the bone's radius, but never so small the lesion vanishes at 224 px.

    Models squash the whole picture to 224 x 224, so both sides of the image count.
    """
    short, long = sorted((scene.width, scene.height))
    return max(tube.radius, 0.07 * short, 0.045 * long)


def _pick_site(scene: Scene, rng: np.random.Generator, where: str) -> Site:
    """A point on a visible bone: near a joint (metaphysis, epiphysis, joint) or mid-shaft."""
    weights = np.array([t.lesion_weight for t in scene.tubes], dtype=float)
    for attempt in range(60):
        bone = int(rng.choice(len(scene.tubes), p=weights / weights.sum()))
        t = scene.tubes[bone]
        # Keep the lesion's centre well inside the picture (less so if nothing else fits).
        margin = (1.2 if attempt < 50 else 0.5) * _unit(scene, t)
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
            at_joint = True
        else:
            s = rng.uniform(min(2.5 * r, length / 2), max(length - 2.5 * r, length / 2))
            away = float(rng.choice([-1.0, 1.0]))
            at_joint = False
        x, y = t.to_image(np.array([s]), np.array([0.0]))
        if margin <= x[0] < scene.width - margin and margin <= y[0] < scene.height - margin:
            return Site(bone, t, float(s), away, at_joint)
    raise RuntimeError(f"no room for a lesion on {scene.body_part}")  # layouts always have room
