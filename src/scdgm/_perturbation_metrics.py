"""Kernels that judge a predicted perturbation against real perturbed cells: per-gene means and their R².

Pure functions on numpy / scipy arrays (cells x genes); no AnnData here. ``tl.predict_perturbation``,
``pl.perturbation`` and ``benchmarks/perturbation.py`` read their figures from these, so they agree.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.sparse as sp

from ._synthetic_metrics import log_normalize, pearson

N_TOP_GENES = 100
"""Genes of largest real change on which the "top" R² is computed (scGen's evaluation: top 100 DEGs)."""

_BLOCK_ROWS = 4096


def mean_log_expression(X: Any, kind: str = "counts") -> np.ndarray:
    """Per-gene mean of ``log1p`` counts per 10,000 (``kind="counts"``), or of the values as they are.

    ``X`` is a dense array or a sparse matrix (read in row blocks, so it is never densified whole).
    NaN for every gene when ``X`` has no rows.
    """
    n_obs, n_vars = X.shape
    if n_obs == 0:
        return np.full(n_vars, np.nan)
    total = np.zeros(n_vars)
    for start in range(0, n_obs, _BLOCK_ROWS):
        block = X[start : start + _BLOCK_ROWS]
        block = block.toarray() if sp.issparse(block) else np.asarray(block)
        total += log_normalize(block, kind).sum(0)
    return total / n_obs


def r_squared(a: np.ndarray, b: np.ndarray) -> float:
    """Squared Pearson correlation of ``a`` and ``b`` (scGen's R² of per-gene means); NaN when undefined."""
    r = pearson(a, b)
    return r * r if np.isfinite(r) else float("nan")


def top_changed_genes(change: np.ndarray, n_top: int = N_TOP_GENES) -> np.ndarray:
    """Positions of the ``n_top`` genes of largest ``|change|`` (all genes when there are fewer), largest first."""
    change = np.nan_to_num(np.asarray(change, dtype=np.float64), nan=0.0)
    return np.argsort(-np.abs(change), kind="stable")[: min(n_top, len(change))]


def perturbation_scores(
    predicted: np.ndarray, real: np.ndarray, control: np.ndarray, n_top: int = N_TOP_GENES
) -> dict[str, float]:
    """R² of a prediction against the real perturbed cells, from per-gene mean log expression.

    Parameters
    ----------
    predicted, real, control
        Per-gene means (:func:`mean_log_expression`) of the predicted cells, the real perturbed cells
        and the real control cells of the same group, in the same gene order.
    n_top
        Genes of largest real change ``|real - control|`` for the ``*_top`` scores.

    Returns
    -------
    ``r2_mean`` and ``r2_mean_top``: R² of predicted against real means, on all genes and on the top
    genes; ``r2_change`` and ``r2_change_top``: R² of the predicted change (``predicted - control``)
    against the real one (``real - control``), which a prediction that leaves the cells unchanged
    cannot score on.
    """
    predicted, real, control = (np.asarray(v, dtype=np.float64) for v in (predicted, real, control))
    top = top_changed_genes(real - control, n_top)
    return {
        "r2_mean": r_squared(predicted, real),
        "r2_mean_top": r_squared(predicted[top], real[top]),
        "r2_change": r_squared(predicted - control, real - control),
        "r2_change_top": r_squared(predicted[top] - control[top], real[top] - control[top]),
    }
