"""Statistics of the input features over chosen cells, read chunk by chunk (standardisation, principal axes)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import scipy.sparse as sp

from .._settings import logger
from ._prepare import PreparedData

MAX_ROTATED_FEATURES = 4096
"""Most features whose principal axes are computed: beyond, a dense features x features decomposition is too large."""
_AXIS_TOLERANCE = 1e-6


def row_blocks(data: PreparedData, rows: np.ndarray) -> Iterator[Any]:
    """The inputs of ``rows``, chunk by chunk (sparse or dense as stored), in the data's order."""
    wanted = np.zeros(data.n_obs, dtype=bool)
    wanted[rows] = True
    for start, stop, block in data.iter_chunks():
        pick = np.flatnonzero(wanted[start:stop])
        if pick.size:
            yield block[pick]


def feature_stats(data: PreparedData, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and standard deviation of every feature over ``rows``, read chunk by chunk."""
    total = np.zeros(data.n_vars)
    squares = np.zeros(data.n_vars)
    for block in row_blocks(data, rows):
        if sp.issparse(block):
            total += np.asarray(block.sum(axis=0), dtype=np.float64).ravel()
            squares += np.asarray(block.multiply(block).sum(axis=0), dtype=np.float64).ravel()
        else:
            block = np.asarray(block, dtype=np.float64)
            total += block.sum(axis=0)
            squares += (block**2).sum(axis=0)
    n = max(len(rows), 1)
    mean = total / n
    sd = np.sqrt(np.clip(squares / n - mean**2, 0.0, None))
    return mean, sd


def principal_axes(
    data: PreparedData, rows: np.ndarray, mean: np.ndarray, sd: np.ndarray, *, sd_floor: float
) -> np.ndarray | None:
    """Orthonormal principal axes ``(features, k)`` of the standardised inputs of ``rows``, or ``None``.

    Features are standardised with ``mean`` and ``sd`` floored at ``sd_floor`` (as the model that reads
    them does). Only the axes along which the cells vary are kept (eigenvalue above ``1e-6`` of the largest): in
    the others the training cells carry no information, and new cells' components there would only
    meet weights drawn from the prior. Beyond ``MAX_ROTATED_FEATURES`` features the covariance matrix
    gets too large to decompose, and ``None`` keeps the features' own basis (as it does for inputs
    that do not vary at all).
    """
    if data.n_vars > MAX_ROTATED_FEATURES:
        logger.info(
            f"{data.n_vars} features exceed {MAX_ROTATED_FEATURES}: the guide stays independent per feature "
            "(for a better-calibrated classifier, pass a lower-dimensional use_rep such as 'X_vae' or 'X_pca')"
        )
        return None
    scatter = np.zeros((data.n_vars, data.n_vars))
    for block in row_blocks(data, rows):
        dense = block.toarray() if sp.issparse(block) else np.asarray(block)
        z = (dense.astype(np.float64) - mean) / np.maximum(sd, sd_floor)
        scatter += z.T @ z
    eigenvalues, eigenvectors = np.linalg.eigh(scatter)
    largest = eigenvalues.max()
    if largest <= 0:
        return None
    keep = eigenvalues > _AXIS_TOLERANCE * largest
    # Largest first, so the kept axes read like principal components.
    return np.ascontiguousarray(eigenvectors[:, keep][:, ::-1], dtype=np.float32)


def dense_rows(data: PreparedData, rows: np.ndarray) -> np.ndarray:
    block = data.read_row_index(rows)
    return np.asarray(block.toarray() if sp.issparse(block) else block, dtype=np.float32)


def count_non_binary(data: PreparedData) -> int:
    """Number of entries of ``data`` that are neither 0 nor 1, read chunk by chunk (backed data too)."""
    n_bad = 0
    for _, _, block in data.iter_chunks():
        values = block.data if sp.issparse(block) else np.asarray(block).ravel()
        n_bad += int(np.count_nonzero((values != 0) & (values != 1)))
    return n_bad
