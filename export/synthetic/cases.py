"""Who and what each synthetic image shows: class, subtype, patient, body part, view, size, centre.

Class counts are fixed for the whole set (so proportions hold exactly); everything else is drawn
from the image's own random stream, so an image never depends on the others or on the workers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from btxrd.export.data.dataset import BTXRD_CLASSES
from btxrd.export.synthetic.bodyparts import ASPECTS
from btxrd.export.synthetic.imaging import CENTRES, Centre
from btxrd.export.synthetic.lesions import BENIGN_SUBTYPES, MALIGNANT_SUBTYPES
from btxrd.runtime.labels.sheet import BENIGN, MALIGNANT, NORMAL

# BTXRD's class sizes: Normal 1879, Benign 1525, Malignant 342.
DEFAULT_PROPORTIONS = (1879 / 3746, 1525 / 3746, 342 / 3746)
BODY_PART_WEIGHTS = {
    "knee": 0.24, "femur": 0.11, "leg": 0.13, "hip": 0.09, "humerus": 0.10, "forearm": 0.06,
    "elbow": 0.05, "hand": 0.09, "ankle": 0.06, "foot": 0.07,
}  # fmt: skip
_AGES = {
    "osteochondroma": (6, 35), "multiple osteochondromas": (4, 30), "simple bone cyst": (4, 22),
    "giant cell tumor": (18, 55), "osteofibroma": (4, 30), "synovial osteochondroma": (20, 65),
    "other bt": (5, 60), "osteosarcoma": (6, 35), "other mt": (5, 70),
}  # fmt: skip
_SUBTLE = {NORMAL: 0.0, BENIGN: 0.08, MALIGNANT: 0.03}


@dataclass(frozen=True)
class Case:
    index: int
    file_name: str
    label: str
    subtype: str | None
    centre: Centre
    age: int
    gender: str
    body_part: str
    view: str
    width: int
    height: int
    rot90: bool
    rgb: bool
    quality: int
    subtle: bool


def assign_labels(n: int, proportions: tuple[float, float, float], seed: int) -> list[str]:
    """Exact class counts (largest remainder), shuffled by the set's seed."""
    total = sum(proportions)
    raw = [n * p / total for p in proportions]
    counts = [math.floor(r) for r in raw]
    for i in sorted(range(3), key=lambda i: raw[i] - counts[i], reverse=True)[: n - sum(counts)]:
        counts[i] += 1
    labels = [c for c, k in zip(BTXRD_CLASSES, counts, strict=True) for _ in range(k)]
    order = np.random.default_rng(np.random.SeedSequence(seed)).permutation(n)
    return [labels[i] for i in order]


def image_rng(seed: int, index: int) -> np.random.Generator:
    """The independent random stream of image ``index`` (a SeedSequence child)."""
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(index,)))


def plan_case(
    index: int, label: str, min_size: int, max_size: int, rng: np.random.Generator
) -> Case:
    subtype = None
    if label != NORMAL:
        table = BENIGN_SUBTYPES if label == BENIGN else MALIGNANT_SUBTYPES
        names = list(table)
        weights = np.array([table[k] for k in names], dtype=float)
        subtype = names[int(rng.choice(len(names), p=weights / weights.sum()))]
    centre = CENTRES[int(rng.choice(3, p=_weights([c.weight for c in CENTRES])))]
    parts = list(BODY_PART_WEIGHTS)
    part_weights = [
        w * (0.5 if label != NORMAL and p in ("hand", "foot") else 1.0)  # tumours favour the knee
        for p, w in BODY_PART_WEIGHTS.items()
    ]
    body_part = parts[int(rng.choice(len(parts), p=_weights(part_weights)))]
    views = ("frontal", "lateral", "oblique")
    view_p = (0.5, 0.15, 0.35) if body_part in ("hand", "foot") else (0.55, 0.38, 0.07)
    view = views[int(rng.choice(3, p=view_p))]
    long_side = math.exp(rng.uniform(math.log(min_size), math.log(max_size + 1)))
    aspect = rng.uniform(*ASPECTS[body_part])  # natural height / width
    wn, hn = (long_side / aspect, long_side) if aspect >= 1 else (long_side, long_side * aspect)
    wn, hn = max(64, min(int(wn), max_size)), max(64, min(int(hn), max_size))
    rot90 = rng.random() < 0.12
    width, height = (hn, wn) if rot90 else (wn, hn)
    suffix = ".jpg" if rng.random() < 0.02 else ".jpeg"
    return Case(
        index=index,
        file_name=f"IMG{index + 1:06d}{suffix}",
        label=label,
        subtype=subtype,
        centre=centre,
        age=_age(subtype, rng),
        gender="M" if rng.random() < 0.56 else "F",
        body_part=body_part,
        view=view,
        width=width,
        height=height,
        rot90=rot90,
        rgb=bool(rng.random() < centre.rgb),
        quality=int(rng.integers(centre.quality[0], centre.quality[1] + 1)),
        subtle=bool(rng.random() < _SUBTLE[label]),
    )


def _age(subtype: str | None, rng: np.random.Generator) -> int:
    if subtype is None:  # normal studies: children with open physes as well as adults
        return int(rng.uniform(5, 20) if rng.random() < 0.45 else rng.uniform(20, 80))
    if subtype == "osteosarcoma" and rng.random() < 0.15:
        return int(rng.uniform(40, 75))  # the second, older peak
    lo, hi = _AGES[subtype]
    return int(rng.uniform(lo, hi))


def _weights(values: list[float] | list[int]) -> np.ndarray:
    arr = np.asarray(values, dtype=float)
    return arr / arr.sum()
