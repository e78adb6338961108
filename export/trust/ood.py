"""Out-of-distribution scores on the network's pooled features and logits (numpy).

Every score is oriented so that higher means more unlike the training data:

- ``mahalanobis``: class-conditional Mahalanobis distance with one shared (tied) covariance
  (Lee et al., NeurIPS 2018): class means and a Ledoit-Wolf-shrunk covariance of the
  class-centred training features, optionally in the subspace of their top principal
  components; the score is the distance to the nearest class mean.
- ``msp``: 1 - the maximum softmax probability (Hendrycks & Gimpel, ICLR 2017).
- ``energy``: -logsumexp(logits) (Liu et al., NeurIPS 2020, at T = 1).
- ``feature_norm``: minus the Euclidean norm of the pooled features (in-distribution images
  drive the features harder).

These functions are the reference the exported graph is checked against: the graph folds the
statistics into one whitening projection, while ``MahalanobisFit.score`` inverts the covariance.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.special import logsumexp
from sklearn.covariance import LedoitWolf
from sklearn.metrics import roc_auc_score

from btxrd.export.trust.calibration import softmax
from btxrd.runtime.contract import OOD_METHODS


@dataclass(frozen=True, eq=False)
class MahalanobisFit:
    """Class means (C, K), the shared covariance (k, k) of the class-centred features, and the
    basis (K, k) of the subspace it lives in (the identity when ``components`` is None)."""

    means: np.ndarray
    covariance: np.ndarray
    basis: np.ndarray
    shrinkage: float
    components: int | None

    def score(self, features: np.ndarray) -> np.ndarray:
        """sqrt(min_c (f - mu_c)' B inv(S) B' (f - mu_c)), in float64."""
        features = np.asarray(features, dtype=np.float64)
        precision = np.linalg.inv(self.covariance)
        squared = []
        for mean in self.means:
            z = (features - mean) @ self.basis
            squared.append(np.einsum("ni,ij,nj->n", z, precision, z))
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
class OodScorer:
    """One of ``OOD_METHODS``, with its fitted statistics where it has any."""

    method: str
    mahalanobis: MahalanobisFit | None = None

    def __post_init__(self) -> None:
        if self.method not in OOD_METHODS:
            raise ValueError(f"unknown OOD method {self.method!r}; known: {OOD_METHODS}")
        if (self.method == "mahalanobis") != (self.mahalanobis is not None):
            raise ValueError("the mahalanobis method needs its fit, and only it has one")

    def score(self, features: np.ndarray, logits: np.ndarray) -> np.ndarray:
        return candidate_scores(features, logits, self.mahalanobis, (self.method,))[self.method]

    def details(self) -> dict[str, object]:
        """What the model card and the metadata say about how the score is made."""
        base: dict[str, object] = {"feature": "global average of the last feature map"}
        if self.mahalanobis is None:
            return {**base, "score": _SCORE_TEXT[self.method]}
        fit = self.mahalanobis
        return {
            **base,
            "score": _SCORE_TEXT["mahalanobis"],
            "covariance": "tied, Ledoit-Wolf shrinkage",
            "shrinkage": round(fit.shrinkage, 6),
            "feature_dim": int(fit.means.shape[1]),
            "components": fit.components,
        }


_SCORE_TEXT = {
    "mahalanobis": "distance to the nearest class mean under the shared covariance",
    "msp": "1 - max softmax(logits)",
    "energy": "-logsumexp(logits)",
    "feature_norm": "-|features|",
}


def candidate_scores(
    features: np.ndarray,
    logits: np.ndarray,
    mahalanobis: MahalanobisFit | None,
    methods: tuple[str, ...] = OOD_METHODS,
) -> dict[str, np.ndarray]:
    """Each requested score for every image (float64, higher = more out of distribution)."""
    logits = np.asarray(logits, dtype=np.float64)
    out: dict[str, np.ndarray] = {}
    for method in methods:
        if method == "mahalanobis":
            if mahalanobis is None:
                raise ValueError("the mahalanobis score needs a fit")
            out[method] = mahalanobis.score(features)
        elif method == "msp":
            out[method] = 1.0 - softmax(logits).max(axis=1)
        elif method == "energy":
            out[method] = -logsumexp(logits, axis=1)
        elif method == "feature_norm":
            out[method] = -np.linalg.norm(np.asarray(features, dtype=np.float64), axis=1)
        else:
            raise ValueError(f"unknown OOD method {method!r}")
    return out


def threshold_at(scores: np.ndarray, retention: float) -> float:
    """The smallest observed score that keeps at least ``retention`` of ``scores`` (refused
    means above it)."""
    if not 0.0 < retention <= 1.0:
        raise ValueError(f"retention must be within (0, 1], got {retention}")
    return float(np.quantile(np.asarray(scores, dtype=np.float64), retention, method="higher"))


def auroc(in_scores: np.ndarray, out_scores: np.ndarray) -> float:
    """Probability that an out-of-distribution image scores above an in-distribution one."""
    y = np.r_[np.zeros(len(in_scores)), np.ones(len(out_scores))]
    return float(roc_auc_score(y, np.r_[in_scores, out_scores]))
