"""Factor rotations that make loadings interpretable, as in factor analysis."""

from __future__ import annotations

import numpy as np


def varimax(loadings: np.ndarray, *, max_iter: int = 500, tol: float = 1e-8) -> np.ndarray:
    """Orthogonal rotation ``R`` maximising the variance of the squared loadings of ``loadings @ R``.

    Kaiser's varimax criterion, solved by the usual SVD iteration: each step takes the polar factor of
    the criterion's gradient. A rotation concentrates every gene on few factors, so each factor
    collects one program instead of a mixture — the latent space of an isotropic prior is only defined
    up to such a rotation.

    Parameters
    ----------
    loadings
        Features x factors.
    max_iter, tol
        Iteration limit and relative change of the criterion at which to stop.

    Returns
    -------
    The ``factors x factors`` orthogonal matrix ``R``.
    """
    L = np.asarray(loadings, dtype=np.float64)
    n_features, n_factors = L.shape
    rotation = np.eye(n_factors)
    if n_factors < 2:
        return rotation
    criterion = 0.0
    for _ in range(max_iter):
        rotated = L @ rotation
        gradient = L.T @ (rotated**3 - rotated * (rotated**2).sum(axis=0) / n_features)
        u, s, vt = np.linalg.svd(gradient)
        rotation = u @ vt
        new_criterion = s.sum()
        if new_criterion - criterion <= tol * max(new_criterion, 1e-12):
            break
        criterion = new_criterion
    return rotation


def orient_and_order(loadings: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Signs and order that make factors comparable across runs.

    Each factor is turned so that its largest loadings are positive (positive sum of cubed loadings),
    and factors are ordered by decreasing sum of squared loadings.

    Returns
    -------
    ``(order, signs)``: apply as ``loadings[:, order] * signs`` (and the same to latent values).
    """
    signs = np.where((loadings**3).sum(axis=0) < 0, -1.0, 1.0)
    order = np.argsort(-(loadings**2).sum(axis=0), kind="stable")
    return order, signs[order]
