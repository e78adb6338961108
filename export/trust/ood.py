"""Out-of-distribution scores on the network's pooled features and logits (numpy).

Features are the global averages of every tap (``btxrd.export.trust.taps``), concatenated;
``widths`` says how many channels each tap has, the last being the map the head sees. Every
score is oriented so that higher means more unlike the training data:

- ``mahalanobis_multilayer``: Lee et al.'s (NeurIPS 2018) class-conditional Mahalanobis distance
  with a shared (tied) covariance, at every tap: each tap's distance is standardised by its mean
  and spread on the training images, and the score is the largest (``combine="max"``) or the sum
  of them. Unsupervised: no out-of-distribution image is used to fit or weigh it.
- ``mahalanobis``: the same distance on the last tap only.
- ``msp``: 1 - the maximum softmax probability (Hendrycks & Gimpel, ICLR 2017).
- ``energy``: -logsumexp(logits) (Liu et al., NeurIPS 2020, at T = 1).
- ``feature_norm``: minus the norm of the last tap's pooled features.

Class means and a Ledoit-Wolf-shrunk covariance of the class-centred training features are
fitted per tap. These functions are the reference the exported graph is checked against: the
graph folds each tap's statistics into one whitening projection, while ``MahalanobisFit.score``
inverts the covariance.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property

import numpy as np
from scipy.special import logsumexp
from sklearn.covariance import LedoitWolf

from btxrd.export.trust.calibration import softmax
from btxrd.runtime.labels.metrics import roc_auc
from btxrd.runtime.model.contract import OOD_METHODS

COMBINE = ("max", "sum")
_MAHALANOBIS = ("mahalanobis", "mahalanobis_multilayer")


@dataclass(frozen=True, eq=False)
class MahalanobisFit:
    """Class means (C, K), the shared covariance (k, k) of the class-centred features, and the
    basis (K, k) of the subspace it lives in (the identity when ``components`` is None)."""

    means: np.ndarray
    covariance: np.ndarray
    basis: np.ndarray
    shrinkage: float
    components: int | None

    @cached_property
    def precision(self) -> np.ndarray:
        return np.linalg.inv(self.covariance)

    def score(self, features: np.ndarray) -> np.ndarray:
        """sqrt(min_c (f - mu_c)' B inv(S) B' (f - mu_c)), in float64."""
        features = np.asarray(features, dtype=np.float64)
        precision = self.precision
        squared = []
        for mean in self.means:
            z = (features - mean) @ self.basis
            squared.append(((z @ precision) * z).sum(axis=1))
        return np.sqrt(np.maximum(np.min(squared, axis=0), 0.0))

    def whitening(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """What the graph computes with: ``z = (f - centre) @ projection`` and the class centres
        in z-space, so that the distance is ``min_c |z - centre_c|``. float64."""
        eigenvalues, eigenvectors = np.linalg.eigh(self.covariance)
        projection = self.basis @ (eigenvectors / np.sqrt(eigenvalues))
        centre = self.means.mean(axis=0)
        return centre, projection, (self.means - centre) @ projection


def fit_mahalanobis(
    features: np.ndarray, labels: np.ndarray, num_classes: int, components: int | None = None
) -> MahalanobisFit:
    """Fit class means and the tied covariance on in-distribution features with their labels."""
    features = np.asarray(features, dtype=np.float64)
    labels = np.asarray(labels)
    missing = [c for c in range(num_classes) if not (labels == c).any()]
    if missing:
        raise ValueError(f"no fitting images for class index(es) {missing}")
    means = np.stack([features[labels == c].mean(axis=0) for c in range(num_classes)])
    centred = features - means[labels]
    dims = features.shape[1]
    if components is None or components >= dims:
        basis = np.eye(dims)
        components = None
    else:
        # The principal directions of the within-class variation.
        _, _, vt = np.linalg.svd(centred, full_matrices=False)
        basis = vt[:components].T
    # Ledoit-Wolf: with 1,280 dimensions and a few thousand images the sample covariance is
    # near-singular; shrinkage keeps its inverse stable (and the graph's float32 arithmetic).
    estimator = LedoitWolf(assume_centered=True).fit(centred @ basis)
    return MahalanobisFit(
        means=means,
        covariance=estimator.covariance_,
        basis=basis,
        shrinkage=float(estimator.shrinkage_),
        components=components,
    )


@dataclass(frozen=True, eq=False)
class TapFit:
    """One tap's Mahalanobis fit and the mean and spread of its distances on the training
    images, which standardise it: ``(distance - mean) / std``."""

    fit: MahalanobisFit
    mean: float
    std: float


@dataclass(frozen=True, eq=False)
class OodScorer:
    """One of ``OOD_METHODS``: ``widths`` are the taps' channel counts (the features are their
    concatenation); ``taps`` the fitted statistics of the Mahalanobis methods, one per tap used
    (the last tap only for ``mahalanobis``)."""

    method: str
    widths: tuple[int, ...]
    taps: tuple[TapFit, ...] = ()
    combine: str = "max"

    def __post_init__(self) -> None:
        if self.method not in OOD_METHODS:
            raise ValueError(f"unknown OOD method {self.method!r}; known: {OOD_METHODS}")
        expected = {"mahalanobis": 1, "mahalanobis_multilayer": len(self.widths)}
        if len(self.taps) != expected.get(self.method, 0):
            raise ValueError(f"{self.method} needs {expected.get(self.method, 0)} tap fit(s)")
        if self.combine not in COMBINE:
            raise ValueError(f"combine must be one of {COMBINE}")

    def split(self, features: np.ndarray) -> list[np.ndarray]:
        """The concatenated pooled features, cut back into one array per tap."""
        edges = np.cumsum(self.widths)[:-1]
        return np.split(np.asarray(features, dtype=np.float64), edges, axis=1)

    def tap_scores(self, features: np.ndarray) -> np.ndarray:
        """(taps, N) standardised distances of the Mahalanobis methods."""
        parts = self.split(features)
        used = parts[-1:] if self.method == "mahalanobis" else parts
        return np.stack(
            [(t.fit.score(p) - t.mean) / t.std for t, p in zip(self.taps, used, strict=True)]
        )

    def score(self, features: np.ndarray, logits: np.ndarray) -> np.ndarray:
        """The score of every image (float64, higher = more out of distribution)."""
        logits = np.asarray(logits, dtype=np.float64)
        if self.method in _MAHALANOBIS:
            per_tap = self.tap_scores(features)
            return per_tap.max(axis=0) if self.combine == "max" else per_tap.sum(axis=0)
        if self.method == "msp":
            return 1.0 - softmax(logits).max(axis=1)
        if self.method == "energy":
            return -logsumexp(logits, axis=1)
        return -np.linalg.norm(self.split(features)[-1], axis=1)  # feature_norm

    def details(self) -> dict[str, object]:
        """What the model card and the metadata say about how the score is made."""
        out: dict[str, object] = {"score": _SCORE_TEXT[self.method]}
        if self.method in _MAHALANOBIS:
            out.update(
                feature="global average of the feature map after each stage"
                if self.method == "mahalanobis_multilayer"
                else "global average of the last feature map",
                taps=len(self.taps),
                channels=list(self.widths) if len(self.taps) > 1 else [self.widths[-1]],
                combine=self.combine if len(self.taps) > 1 else None,
                covariance="tied per tap, Ledoit-Wolf shrinkage",
                shrinkage=[round(t.fit.shrinkage, 6) for t in self.taps],
            )
        return out


_SCORE_TEXT = {
    "mahalanobis_multilayer": "largest over the taps of the standardised distance to the "
    "nearest class mean under the tap's shared covariance",
    "mahalanobis": "distance to the nearest class mean under the shared covariance",
    "msp": "1 - max softmax(logits)",
    "energy": "-logsumexp(logits)",
    "feature_norm": "-|features of the last tap|",
}


def fit_scorer(
    method: str,
    widths: Sequence[int],
    features: np.ndarray,
    labels: np.ndarray,
    num_classes: int,
    combine: str = "max",
) -> OodScorer:
    """Fit ``method`` on in-distribution features (concatenated taps) and their labels."""
    widths = tuple(int(w) for w in widths)
    if method not in _MAHALANOBIS:
        return OodScorer(method, widths)
    shell = OodScorer("feature_norm", widths)
    parts = shell.split(features)
    used = parts[-1:] if method == "mahalanobis" else parts
    taps = []
    for part in used:
        fit = fit_mahalanobis(part, labels, num_classes)
        if method == "mahalanobis":
            taps.append(TapFit(fit, 0.0, 1.0))  # the plain distance
            continue
        distances = fit.score(part)
        taps.append(TapFit(fit, float(distances.mean()), float(max(distances.std(), 1e-6))))
    return OodScorer(method, widths, tuple(taps), combine)


# Above the highest score when every score is kept: far beyond float32's rounding of it.
THRESHOLD_MARGIN = 1e-4


def threshold_at(scores: np.ndarray, retention: float) -> float:
    """A threshold that keeps the fewest of ``scores`` that is at least ``retention`` of them
    (refused means above it): halfway between the highest kept score and the next one.

    Why not the kept score itself: the exported graph computes the score in float32, a few
    parts in a million away from the numpy fit, so an image scored exactly at the threshold
    would be kept at export and refused by ``btxrd-run`` about half the time."""
    if not 0.0 < retention <= 1.0:
        raise ValueError(f"retention must be within (0, 1], got {retention}")
    ordered = np.sort(np.asarray(scores, dtype=np.float64))
    kept = float(np.quantile(ordered, retention, method="higher"))
    above = ordered[ordered > kept]
    if len(above):
        return (kept + float(above[0])) / 2
    return kept + THRESHOLD_MARGIN * max(1.0, abs(kept))


def auroc(in_scores: np.ndarray, out_scores: np.ndarray) -> float:
    """Probability that an out-of-distribution image scores above an in-distribution one."""
    is_out = np.r_[np.zeros(len(in_scores), bool), np.ones(len(out_scores), bool)]
    found = roc_auc(is_out, np.r_[in_scores, out_scores])
    if found is None:
        raise ValueError("AUROC needs in- and out-of-distribution scores")
    return found
