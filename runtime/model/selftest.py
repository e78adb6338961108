"""Fixed, procedurally drawn test images whose PyTorch scores export stores in the model.

``btxrd-run --selftest`` recomputes them with onnxruntime on this machine. The images are
formulas (no RNG, no files), so every machine draws the same pixels.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

if TYPE_CHECKING:
    from btxrd.runtime.model.classifier import Classifier

SELFTEST_TOLERANCE = 1e-4


def selftest_images() -> dict[str, Image.Image]:
    """Three radiograph-like patterns: a bright bar on a dark field, rings, and an RGB ramp."""
    y, x = np.mgrid[0:300, 0:400].astype(np.float64)
    bar = 40 + 160 * np.exp(-(((x - 200) / 45) ** 2)) + 20 * np.sin(y / 9)
    rings = 128 + 100 * np.sin(np.hypot(x - 150, y - 170) / 11) * np.exp(-y / 400)
    ramp = np.stack([x / 400 * 255, y / 300 * 255, (x + y) / 700 * 255], axis=-1)
    as_u8 = lambda a: np.clip(np.rint(a), 0, 255).astype(np.uint8)  # noqa: E731
    return {
        "bar": Image.fromarray(as_u8(bar)),
        "rings": Image.fromarray(as_u8(rings).T.copy()),
        "ramp": Image.fromarray(as_u8(ramp)),
    }


@dataclass(frozen=True)
class SelftestReport:
    passed: bool
    lines: tuple[str, ...]


def check_reference_scores(classifier: Classifier) -> SelftestReport:
    """Recompute the stored reference scores on this machine and say what differs."""
    stored = classifier.info.metadata.reference_scores.get("images") or {}
    tolerance = float(
        classifier.info.metadata.reference_scores.get("tolerance", SELFTEST_TOLERANCE)
    )
    if not stored:
        return SelftestReport(False, ("the model stores no reference scores; re-export it",))
    kind = classifier.info.metadata.reference_scores.get("kind", "softmax")
    images = selftest_images()
    lines, passed = [], True
    for name, expected in stored.items():
        if name not in images:
            lines.append(f"{name}: unknown reference image (exported by a newer btxrd?)")
            passed = False
            continue
        got = classifier.predict(images[name])
        # Export stores the raw softmax, or the calibrated probabilities when it says so (a
        # reference image the gate refuses is compared on the probabilities it withholds).
        calibrated = got.withheld_scores if got.refused else got.scores
        scores = calibrated if kind == "calibrated" else got.softmax
        values = np.array([scores[c] for c in classifier.class_names])
        diff = float(np.abs(values - np.asarray(expected)).max())
        ok = diff <= tolerance
        passed &= ok
        lines.append(
            f"{name}: {'ok' if ok else 'DIFFERS'} (max |dp| {diff:.2e}, tolerance {tolerance:g})"
        )
    lines.append("selftest passed" if passed else "selftest FAILED: scores differ from export's")
    return SelftestReport(passed, tuple(lines))
