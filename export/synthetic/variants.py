"""Normal findings that resemble lesions, drawn in every class so none of them gives the class away.

Growth plates (open physes under 17), bone islands, nutrient canals, Harris growth-arrest lines,
faint trabecular lucencies and calcified vessels. A classifier has to learn what a tumour looks
like, not merely that something in the bone is brighter or darker than its surroundings.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from btxrd.export.synthetic.anatomy import Canvas, Ellipsoid, Tube, TubePatch, render_ellipsoid
from btxrd.export.synthetic.scene import Scene
from btxrd.export.synthetic.shapes import Blob, random_blob, smoothstep


@dataclass(frozen=True)
class GrowthPlate:
    """A wavy lucent band between epiphysis and metaphysis, with a bright line beside it."""

    bone: int
    s: float  # position of the plate along the bone
    toward_shaft: float
    width: float
    wave: float
    period: float

    def modify(self, patch: TubePatch, density: np.ndarray) -> np.ndarray:
        offset = patch.s - self.s - self.wave * np.sin(patch.d / self.period)
        band = np.exp(-((offset / self.width) ** 2))
        line = np.exp(-(((offset - self.toward_shaft * 1.8 * self.width) / self.width) ** 2))
        return density * (1.0 - 0.6 * band + 0.35 * line)


@dataclass(frozen=True)
class Canal:
    """A nutrient canal: a thin dark line running obliquely through one cortex."""

    bone: int
    s: float
    side: float
    slope: float
    width: float

    def modify(self, patch: TubePatch, density: np.ndarray) -> np.ndarray:
        depth = np.abs(patch.d) - patch.inner
        offset = patch.s - self.s - self.slope * depth
        cortex = (patch.d * self.side > 0) & (depth > -self.width)
        return density * (1.0 - 0.55 * cortex * np.exp(-((offset / self.width) ** 2)))


@dataclass(frozen=True)
class ArrestLine:
    """A Harris line: a thin transverse band of denser bone in the metaphysis."""

    bone: int
    s: float
    width: float

    def modify(self, patch: TubePatch, density: np.ndarray) -> np.ndarray:
        band = np.exp(-(((patch.s - self.s) / self.width) ** 2)) * (np.abs(patch.d) < patch.inner)
        return density * (1.0 + 0.25 * band)


@dataclass(frozen=True)
class Lucency:
    """A faint, fuzzy area of sparser trabeculae: lesion-like, but no rim and little contrast."""

    bone: int
    blob: Blob
    depth: float

    def modify(self, patch: TubePatch, density: np.ndarray) -> np.ndarray:
        inside = smoothstep(1.2, 0.5, self.blob.rho(patch.s, patch.d))
        return density * (1.0 - self.depth * inside)


@dataclass(frozen=True)
class Island:
    """A bone island: a small dense focus in the medulla."""

    body: Ellipsoid

    def draw(self, canvas: Canvas, texture: np.ndarray) -> None:
        render_ellipsoid(self.body, canvas, texture)


@dataclass(frozen=True)
class Vessel:
    """A calcified artery: a faint tortuous double line in the soft tissue."""

    points: tuple[tuple[float, float], ...]
    width: int

    def draw(self, canvas: Canvas, texture: np.ndarray) -> None:
        xs = [p[0] for p in self.points]
        ys = [p[1] for p in self.points]
        box = canvas.box((min(xs) - 4, min(ys) - 4, max(xs) + 4, max(ys) + 4))
        if box is None:
            return
        x0, y0, x1, y1 = box
        img = Image.new("L", (x1 - x0, y1 - y0), 0)
        ImageDraw.Draw(img).line(
            [(x - x0, y - y0) for x, y in self.points], fill=200, width=self.width
        )
        layer = np.asarray(img.filter(ImageFilter.GaussianBlur(0.7)), dtype=np.float32) / 255.0
        canvas.bone[y0:y1, x0:x1] += 0.35 * layer


def plan_variants(scene: Scene, age: float, rng: np.random.Generator) -> tuple[list, list]:
    """Return (bone modifiers, extra drawings) of normal findings for this scene."""
    modifiers: list = []
    drawings: list = []
    tubes = list(enumerate(scene.tubes))
    for bone, t in tubes:
        for end, joint in ((0, t.joint0), (1, t.joint1)):
            if joint and age < 17 and t.radius > 4:
                flare = t.flare0 if end == 0 else t.flare1
                dist = t.radius * flare * rng.uniform(0.45, 0.7)
                s, toward = (dist, 1.0) if end == 0 else (t.length - dist, -1.0)
                modifiers.append(
                    GrowthPlate(
                        bone,
                        s,
                        toward,
                        max(0.8, t.radius * 0.06),
                        t.radius * rng.uniform(0.03, 0.09),
                        t.radius * rng.uniform(0.25, 0.5),
                    )
                )
    big = [
        (bone, t)
        for bone, t in tubes
        if t.radius >= 0.6 * scene.bone_radius and t.lesion_weight > 0
    ]
    if not big:
        return modifiers, drawings
    if rng.random() < 0.35:
        bone, t = big[int(rng.integers(len(big)))]
        s = _mid(t, rng)
        modifiers.append(
            Canal(
                bone,
                s,
                float(rng.choice([-1.0, 1.0])),
                rng.uniform(-2.5, 2.5),
                max(0.7, t.radius * 0.035),
            )
        )
    if rng.random() < 0.3:
        bone, t = big[int(rng.integers(len(big)))]
        drawings.append(Island(_island(t, rng)))
    if rng.random() < 0.2:
        bone, t = big[int(rng.integers(len(big)))]
        near = _near_end(t, rng, 1.2, 2.2)
        if near is not None:
            for k in range(int(rng.integers(1, 4))):
                modifiers.append(
                    ArrestLine(bone, near + k * t.radius * 0.25, max(0.8, t.radius * 0.04))
                )
    if rng.random() < 0.25:
        bone, t = big[int(rng.integers(len(big)))]
        near = _near_end(t, rng, 0.8, 2.0)
        if near is not None:
            blob = random_blob(
                rng,
                near,
                t.radius * rng.uniform(-0.3, 0.3),
                t.radius * rng.uniform(0.6, 1.2),
                t.radius * rng.uniform(0.4, 0.7),
                0.15,
            )
            modifiers.append(Lucency(bone, blob, rng.uniform(0.08, 0.16)))
    if age > 45 and rng.random() < 0.3:
        bone, t = big[int(rng.integers(len(big)))]
        drawings.append(_vessel(t, rng))
    return modifiers, drawings


def _mid(t: Tube, rng: np.random.Generator) -> float:
    return float(rng.uniform(0.3, 0.7) * t.length)


def _near_end(t: Tube, rng: np.random.Generator, lo: float, hi: float) -> float | None:
    ends = [e for e, joint in ((0, t.joint0), (1, t.joint1)) if joint]
    if not ends:
        return None
    dist = t.radius * rng.uniform(lo, hi)
    return dist if int(rng.choice(ends)) == 0 else t.length - dist


def _island(t: Tube, rng: np.random.Generator) -> Ellipsoid:
    s = float(rng.uniform(0.15, 0.85) * t.length)
    d = float(rng.uniform(-0.5, 0.5) * t.radius)
    x, y = t.to_image(np.array([s]), np.array([d]))
    size = t.radius * rng.uniform(0.1, 0.22)
    ux, uy, _, _ = t.frame()
    return Ellipsoid(
        "island",
        (float(x[0]), float(y[0])),
        (size * rng.uniform(1.0, 1.6), size),
        math.atan2(uy, ux),
        shell=0.4,
        density=rng.uniform(0.5, 0.9),
    )


def _vessel(t: Tube, rng: np.random.Generator) -> Vessel:
    side = float(rng.choice([-1.0, 1.0]))
    s = np.linspace(0.1, 0.9, 14) * t.length
    d = side * (t.radius * rng.uniform(1.3, 2.0) + t.radius * 0.15 * np.sin(s / (t.radius * 1.3)))
    xs, ys = t.to_image(s, d)
    return Vessel(tuple(zip(xs.tolist(), ys.tolist(), strict=True)), max(1, round(t.radius * 0.05)))
