"""The out-of-distribution gate's word on one input, and every way it is said.

One home for the verdict and its wording: ``btxrd-run`` (its records, table and messages),
``btxrd-serve`` (its API and, through the API, the page) and ``btxrd-explain`` build verdicts
with ``verdict_for`` and say a refusal with ``refusal_message`` and ``refusal_explanation``.

A refused input gets no class and no class probability anywhere a reader could take one for an
answer: the probabilities the model computed are kept for audit under the ``ood`` block's
``withheld_scores`` key only, which no table, CSV column, Parquet column or page shows.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from btxrd.runtime.model.contract import Trust

# The record key, inside the ``ood`` block, of a refused input's probabilities.
WITHHELD_KEY = "withheld_scores"


@dataclass(frozen=True)
class OodVerdict:
    """The out-of-distribution gate's word on one input."""

    score: float
    threshold: float
    method: str
    in_distribution: bool
    gate_on: bool  # False with --no-ood-gate: the input is classified whatever the verdict

    @property
    def refuses(self) -> bool:
        """The input gets no class: out of distribution with the gate on."""
        return self.gate_on and not self.in_distribution

    def to_json(self, withheld: Mapping[str, float] | None = None) -> dict[str, Any]:
        """The record's ``ood`` block; ``withheld``: a refused input's probabilities."""
        block: dict[str, Any] = {
            "score": round(self.score, 6) if math.isfinite(self.score) else None,
            "threshold": self.threshold,
            "method": self.method,
            "in_distribution": self.in_distribution,
            "gate": "on" if self.gate_on else "off",
        }
        if withheld is not None:
            block[WITHHELD_KEY] = dict(withheld)
        return block

    def describe(self) -> str:
        score = f"{self.score:.4g}" if math.isfinite(self.score) else "not a number"
        return (
            f"unlike the images this model was trained on (OOD score {score} > "
            f"{self.threshold:.4g})"
        )


def verdict_for(trust: Trust, score: float, *, gate_on: bool = True) -> OodVerdict:
    """The verdict of the gate in ``trust`` on an input whose ``ood_score`` is ``score``."""
    return OodVerdict(
        score=score,
        threshold=trust.ood.threshold,
        method=trust.ood.method,
        in_distribution=not trust.ood.is_out_of_distribution(score),
        gate_on=gate_on,
    )


def refusal_message(where: str, verdict: OodVerdict) -> str:
    """The one line a refused input's record carries as its ``error`` (``where``: its name)."""
    return f"{where}: {verdict.describe()}; not classified"


def refusal_explanation(*, demo: bool) -> str:
    """What a refusal means and what to do, in plain words for a clinician (the page)."""
    said = (
        "This image is unlike the images the model was trained on, so it gives no class. "
        "Its result is not a finding: the image was not assessed."
    )
    if demo:
        return (
            f"{said} The demo model was trained on synthetic images only and refuses real "
            "radiographs; use a model trained on your images."
        )
    return (
        f"{said} Check that it is a radiograph of the kind the model was trained on (its model "
        "card says which); otherwise it needs a reader, not this model."
    )


def is_refusal(record: Mapping[str, Any]) -> bool:
    """Whether a result record is of an input the gate refused (it has no class)."""
    ood = record.get("ood")
    return bool(ood) and ood.get("gate") == "on" and ood.get("in_distribution") is False
