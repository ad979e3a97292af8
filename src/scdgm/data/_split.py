"""Reproducible training / validation splits of cells, optionally stratified by label."""

from __future__ import annotations

import numpy as np


def n_validation_cells(n: int, fraction: float) -> int:
    """Validation cells out of ``n``: ``round(n * fraction)``, but at least one of each set when possible."""
    if fraction == 0 or n < 2:
        return 0
    return int(min(max(round(n * fraction), 1), n - 1))


def split_indices(
    n_obs: int,
    *,
    validation_fraction: float,
    seed: int,
    stratify: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Split cells ``0 .. n_obs - 1`` into training and validation indices.

    Parameters
    ----------
    n_obs
        Number of cells.
    validation_fraction
        Share of cells held out, in ``[0, 1)``. ``0`` gives an empty validation set; otherwise,
        with at least two cells, both sets get at least one cell.
    seed
        Seed of the :func:`numpy.random.default_rng` that draws the split; the same seed gives the same split.
    stratify
        Integer class codes per cell (e.g. ``PreparedData.covariates["labels"]``). Each class is
        split on its own so both sets keep the class proportions, and every class with at least two
        cells appears in both sets (a class of one cell goes to training). Cells with code ``-1``
        (no label) go to neither set.

    Returns
    -------
    ``(train, validation)``: sorted, disjoint ``int64`` index arrays. Without ``stratify`` they
    cover all cells; with it, all cells whose code is not ``-1``.
    """
    if isinstance(n_obs, bool) or not isinstance(n_obs, int | np.integer) or n_obs < 0:
        msg = f"n_obs must be a non-negative integer, not {n_obs!r}."
        raise ValueError(msg)
    if not isinstance(validation_fraction, int | float | np.floating | np.integer) or not 0 <= validation_fraction < 1:
        msg = (
            f"validation_fraction must lie in [0, 1), not {validation_fraction!r}: it is the share of cells "
            "held out to monitor training (0 disables validation, e.g. 0.1 holds out 10%)."
        )
        raise ValueError(msg)
    rng = np.random.default_rng(seed)
    if stratify is None:
        order = rng.permutation(n_obs)
        n_val = n_validation_cells(n_obs, float(validation_fraction))
        return np.sort(order[n_val:]).astype(np.int64), np.sort(order[:n_val]).astype(np.int64)

    codes = np.asarray(stratify)
    if codes.shape != (n_obs,):
        msg = f"stratify must hold one class code per cell, shape ({n_obs},), got shape {codes.shape}."
        raise ValueError(msg)
    if codes.dtype.kind not in "iu":
        msg = f"stratify must hold integer class codes (-1 for unlabelled cells), got dtype {codes.dtype}."
        raise ValueError(msg)
    train_parts, val_parts = [], []
    for code in np.unique(codes[codes >= 0]):
        members = rng.permutation(np.flatnonzero(codes == code))
        n_val = n_validation_cells(len(members), float(validation_fraction))
        val_parts.append(members[:n_val])
        train_parts.append(members[n_val:])
    train = np.concatenate(train_parts) if train_parts else np.empty(0, dtype=np.int64)
    validation = np.concatenate(val_parts) if val_parts else np.empty(0, dtype=np.int64)
    if validation_fraction > 0 and validation.size == 0 and train.size >= 2:
        # Only single-cell classes: still hold one cell out, as the unstratified split would.
        moved = rng.integers(train.size)
        validation = train[moved : moved + 1]
        train = np.delete(train, moved)
    return np.sort(train).astype(np.int64), np.sort(validation).astype(np.int64)
