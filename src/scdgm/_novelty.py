"""How unlike every training class a cell is: a distance-aware score with conformal p-values.

A mean-field Bayesian network's epistemic uncertainty is high between classes but can stay low far
from all training cells. The score here takes the larger of two ratios, each to its typical value on
held-out cells of known types: the mean distance to the ``k`` nearest training cells in the space the
classifier reads (standardised inputs along their principal axes), and the epistemic uncertainty.
The training cells cannot set these scales: the network fits them, so their epistemic uncertainty is
lower than any new cell's. Other held-out cells of known types calibrate the score: a cell's conformal
p-value is the share of them scoring at least as high, so flagging ``p <= alpha`` flags at most a share
``alpha`` of new cells of known types (Vovk et al., *Algorithmic learning in a random world*; the
guarantee holds for cells exchangeable with the held-out ones). Pure numpy and scikit-learn; never
sees AnnData.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

N_NEIGHBORS = 10
"""Training cells each distance is averaged over."""
SCALE_QUANTILE = 0.95
"""Quantile of the training cells' distances and epistemic uncertainties each is divided by."""
MAX_AXES = 50
"""Principal axes the distances are measured along, at most: the leading ones carry the cells' variation."""


def conformal_pvalues(calibration: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """``(1 + #{calibration >= score}) / (n + 1)`` for every score: small when a score exceeds most of the calibration."""
    calibration = np.sort(np.asarray(calibration, dtype=np.float64))
    n = len(calibration)
    if n == 0:
        return np.full(np.shape(scores), np.nan)
    at_least = n - np.searchsorted(calibration, np.asarray(scores, dtype=np.float64), side="left")
    return (1.0 + at_least) / (n + 1.0)


def conformal_threshold(calibration: np.ndarray, alpha: float) -> float:
    """The score above which the conformal p-value is at most ``alpha``; ``inf`` when too few calibration cells.

    With ``n`` calibration scores, ``p <= alpha`` for a score above all but ``m = floor(alpha (n + 1)) - 1``
    of them: above the ``(n - m)``-th smallest.
    """
    calibration = np.sort(np.asarray(calibration, dtype=np.float64))
    n = len(calibration)
    m = int(np.floor(alpha * (n + 1))) - 1
    if n == 0 or m < 0:
        return float("inf")
    return float(calibration[n - m - 1])


@dataclass
class NoveltyScorer:
    """The training cells' coordinates, the two scales, and the held-out calibration scores.

    Attributes
    ----------
    reference
        Training cells x axes, the space distances are measured in.
    distance_scale, epistemic_scale
        The ``SCALE_QUANTILE`` quantiles of held-out known cells' neighbour distance and epistemic
        uncertainty.
    calibration
        Scores of held-out cells of known types, sorted (empty before :meth:`calibrate`).
    n_neighbors
        Neighbours per distance.
    """

    reference: np.ndarray
    distance_scale: float
    epistemic_scale: float
    calibration: np.ndarray = field(default_factory=lambda: np.empty(0))
    n_neighbors: int = N_NEIGHBORS
    _neighbors: Any = field(default=None, init=False, repr=False, compare=False)

    @classmethod
    def fit(
        cls,
        reference: np.ndarray,
        coordinates: np.ndarray,
        epistemic: np.ndarray,
        *,
        n_neighbors: int = N_NEIGHBORS,
    ) -> NoveltyScorer:
        """A scorer measuring distances to ``reference`` (training cells), scaled on held-out cells.

        Parameters
        ----------
        reference
            Training cells x axes.
        coordinates, epistemic
            Held-out cells of known types (not those that calibrate the p-values): their coordinates and
            epistemic uncertainty set the two scales.
        n_neighbors
            Training cells each distance is averaged over (at most the training cells less one).
        """
        reference = np.ascontiguousarray(reference, dtype=np.float32)
        n_neighbors = int(max(1, min(n_neighbors, len(reference) - 1)))
        scorer = cls(reference, 1.0, 1.0, n_neighbors=n_neighbors)
        scorer.distance_scale = _positive_quantile(scorer.distances(coordinates))
        scorer.epistemic_scale = _positive_quantile(np.asarray(epistemic, dtype=np.float64))
        return scorer

    def distances(self, coordinates: np.ndarray, *, exclude_self: bool = False) -> np.ndarray:
        """Mean Euclidean distance of each row to its ``n_neighbors`` nearest training cells."""
        k = self.n_neighbors + int(exclude_self)
        found, _ = self._index().kneighbors(np.asarray(coordinates, dtype=np.float32), n_neighbors=k)
        return found[:, int(exclude_self) :].mean(axis=1)

    def _index(self) -> Any:
        """The neighbour index of the training cells, built once per scorer."""
        if self._neighbors is None:
            from sklearn.neighbors import NearestNeighbors

            self._neighbors = NearestNeighbors().fit(self.reference)
        return self._neighbors

    def score(self, distances: np.ndarray, epistemic: np.ndarray) -> np.ndarray:
        """The larger of the two ratios to their training scales (1: as unusual as the 95 % quantile)."""
        return np.maximum(np.asarray(distances) / self.distance_scale, np.asarray(epistemic) / self.epistemic_scale)

    def calibrate(self, scores: np.ndarray) -> None:
        """Keep the held-out known cells' scores as the calibration set."""
        self.calibration = np.sort(np.asarray(scores, dtype=np.float64))

    def pvalues(self, scores: np.ndarray) -> np.ndarray:
        """Conformal p-values of ``scores`` against the calibration set (NaN without one)."""
        return conformal_pvalues(self.calibration, scores)

    def threshold(self, alpha: float) -> float:
        """The score above which a cell is flagged at level ``alpha``."""
        return conformal_threshold(self.calibration, alpha)

    def to_uns(self) -> dict[str, Any]:
        """h5ad-safe record, stored with the classifier."""
        return {
            "reference": self.reference,
            "distance_scale": self.distance_scale,
            "epistemic_scale": self.epistemic_scale,
            "calibration": self.calibration,
            "n_neighbors": self.n_neighbors,
        }

    @classmethod
    def from_uns(cls, value: Any) -> NoveltyScorer:
        """Read the record written by :meth:`to_uns`."""
        return cls(
            reference=np.asarray(value["reference"], dtype=np.float32),
            distance_scale=float(value["distance_scale"]),
            epistemic_scale=float(value["epistemic_scale"]),
            calibration=np.asarray(value.get("calibration", np.empty(0)), dtype=np.float64),
            n_neighbors=int(value["n_neighbors"]),
        )


def _positive_quantile(values: np.ndarray) -> float:
    """The scale a ratio divides by: the quantile, or the largest value, or 1, whichever is first positive."""
    for candidate in (np.quantile(values, SCALE_QUANTILE) if len(values) else 0.0, np.max(values, initial=0.0)):
        if candidate > 0:
            return float(candidate)
    return 1.0
