"""Where the bones go: one layout per body part and view.

A layout is written upright in a "natural" frame (limb vertical, proximal at the top, the body's
midline to the left); ``SceneBuilder`` maps it into the image. Sizes are fractions of the frame,
jittered per image, so no two knees are alike.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from btxrd.export.synthetic import lower_limb, upper_limb
from btxrd.export.synthetic.scene import Scene, SceneBuilder

BODY_PARTS = ("knee", "femur", "leg", "hip", "humerus", "forearm", "elbow", "hand", "ankle", "foot")
# Natural height/width ranges; long bones get tall pictures, a bilateral pelvis a wide one.
ASPECTS = {
    "knee": (1.1, 1.5), "femur": (1.8, 3.2), "leg": (1.8, 3.2), "hip": (0.8, 1.15),
    "humerus": (1.4, 2.3), "forearm": (1.7, 2.8), "elbow": (1.0, 1.4), "hand": (1.15, 1.5),
    "ankle": (1.0, 1.4), "foot": (1.2, 1.6),
}  # fmt: skip


def build_scene(
    body_part: str,
    view: str,
    size: tuple[int, int],
    rot90: bool,
    age: float,
    rng: np.random.Generator,
) -> Scene:
    """Lay out ``body_part`` seen in ``view`` on an image of ``size`` (width, height).

    ``rot90`` means the picture is stored turned by a quarter, the limb running across it.
    """
    width, height = size
    wn, hn = (height, width) if rot90 else (width, height)
    b = SceneBuilder(float(wn), float(hn), rng, rot90)
    radius = _LAYOUTS[body_part](b, view, age, rng)
    return Scene(
        width, height, body_part, view, tuple(b.tubes), tuple(b.ellipsoids), tuple(b.plates),
        tuple(b.soft), tuple(b.joints), radius,
    )  # fmt: skip


_LAYOUTS: dict[str, Callable[[SceneBuilder, str, float, np.random.Generator], float]] = {
    "knee": lower_limb.knee,
    "femur": lower_limb.femur,
    "leg": lower_limb.leg,
    "hip": lower_limb.hip,
    "humerus": upper_limb.humerus,
    "forearm": upper_limb.forearm,
    "elbow": upper_limb.elbow,
    "hand": upper_limb.hand,
    "ankle": lower_limb.ankle,
    "foot": lower_limb.foot,
}
