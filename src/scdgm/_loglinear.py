"""Log-linear models of binary contingency tables and the PatternExtractor's steps, as pure numpy kernels.

Hess, Hackenberg & Binder (Bioinformatics 2020) read what a generative model learned from synthetic
observations and their hidden states: genes are selected greedily by the deviance of a log-linear
model, the most frequent joint patterns of the selected genes are found, and the patterns are placed
by how differently the hidden states are distributed among the observations that show them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

MAX_PATTERN_GENES = 12
"""Most genes a pattern may hold: their tables have ``2 ** (genes + 2)`` cells per hidden unit and candidate."""

_TABLE_ENTRIES = 2**22
"""Table cells fitted at once (hidden units x candidates x cells), to bound memory."""


def ipf(
    table: np.ndarray,
    margins: Sequence[Sequence[int]],
    *,
    batch_dims: int = 0,
    max_iter: int = 100,
    tol: float = 1e-8,
) -> np.ndarray:
    """Fitted counts of a hierarchical log-linear model by iterative proportional fitting.

    The model is given by its generators, the margins it reproduces (``[(0, 1), (2,)]`` is the model
    ``[AB][C]`` of a three-way table: ``C`` independent of ``A`` and ``B`` jointly). Starting from a
    table of ones, each cycle scales the fitted table to every observed margin in turn (Deming &
    Stephan, 1940); the fit is the maximum-likelihood estimate under Poisson or multinomial sampling.
    Decomposable models are fitted exactly in one cycle; the others converge geometrically.

    Parameters
    ----------
    table
        Observed counts: ``batch_dims`` leading axes of independent tables, then one axis per variable.
    margins
        Generators of the model, as tuples of variable positions (0 = the first variable axis).
    batch_dims
        Leading axes that index separate tables, all fitted at once.
    max_iter
        Most cycles over the margins.
    tol
        Stop once every fitted margin is within ``tol`` of the observed one.

    Returns
    -------
    Fitted counts of the shape of ``table``.
    """
    table = np.asarray(table, dtype=np.float64)
    n_variables = table.ndim - batch_dims
    variables = set(range(n_variables))
    sums = []
    for margin in margins:
        unknown = set(margin) - variables
        if unknown:
            msg = f"margins name variables {sorted(unknown)}, but the table has {n_variables} (0 to {n_variables - 1})."
            raise ValueError(msg)
        sums.append(tuple(batch_dims + v for v in sorted(variables - set(margin))))
    observed = [table.sum(axis=axes, keepdims=True) for axes in sums]
    fitted = np.ones_like(table)
    for _ in range(max_iter):
        deviation = 0.0
        for axes, target in zip(sums, observed, strict=True):
            current = fitted.sum(axis=axes, keepdims=True)
            deviation = max(deviation, float(np.abs(current - target).max()))
            with np.errstate(divide="ignore", invalid="ignore"):
                fitted = fitted * np.where(current > 0, target / current, 0.0)
        if deviation < tol:
            break
    return fitted


def g_squared(observed: np.ndarray, fitted: np.ndarray, *, batch_dims: int = 0) -> np.ndarray:
    """The deviance ``G^2 = 2 sum n log(n / m)`` of fitted against observed counts, per table (cells with ``n = 0`` add 0)."""
    observed = np.asarray(observed, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(observed > 0, observed * np.log(observed / fitted), 0.0)
    return 2.0 * terms.reshape(*observed.shape[:batch_dims], -1).sum(-1)


@dataclass
class Selection:
    """Genes selected greedily, in order.

    Attributes
    ----------
    genes
        Column positions of the selected genes.
    deviance
        ``G^2`` of the model without the candidate's association at the step each gene was chosen.
    hidden_units
        The hidden unit whose table gave that deviance.
    """

    genes: list[int]
    deviance: list[float]
    hidden_units: list[int]


def _codes(binary: np.ndarray) -> np.ndarray:
    """Each row of a 0/1 matrix as the integer whose bits are its columns (first column the highest bit)."""
    binary = np.asarray(binary, dtype=np.int64)
    if binary.shape[1] == 0:
        return np.zeros(binary.shape[0], dtype=np.int64)
    return binary @ (2 ** np.arange(binary.shape[1] - 1, -1, -1, dtype=np.int64))


def contingency_tables(
    visible: np.ndarray, hidden: np.ndarray, selected: Sequence[int], candidates: np.ndarray
) -> np.ndarray:
    """Counts of the [hidden unit, selected genes, candidate] tables, for every hidden unit and candidate.

    Parameters
    ----------
    visible
        Observations x genes, 0/1.
    hidden
        Observations x hidden units, 0/1.
    selected
        Positions of the genes already selected.
    candidates
        Positions of the candidate genes.

    Returns
    -------
    Shape ``(hidden units, candidates, 2, 2, ..., 2)``: axes hidden unit's state, each selected gene's
    state in order, candidate's state.
    """
    visible = np.asarray(visible, dtype=np.float64)
    n_obs, n_units = hidden.shape
    n_selected = len(selected)
    n_cells = 2 ** (n_selected + 1)
    # each observation's cell of (hidden unit, selected genes), per unit, offset by the unit
    cell = np.asarray(hidden, dtype=np.int64) * 2**n_selected + _codes(visible[:, list(selected)])[:, None]
    rows = (cell + np.arange(n_units) * n_cells).ravel()
    columns = np.repeat(np.arange(n_obs), n_units)
    onehot = sp.csr_matrix((np.ones(rows.size), (rows, columns)), shape=(n_units * n_cells, n_obs))
    on = np.asarray(onehot @ visible[:, candidates])
    total = np.asarray(onehot.sum(1)).reshape(-1, 1)
    tables = np.stack([total - on, on], axis=-1)
    tables = tables.reshape(n_units, n_cells, len(candidates), 2).transpose(0, 2, 1, 3)
    return tables.reshape(n_units, len(candidates), *([2] * (n_selected + 1)), 2)


def select_genes(visible: np.ndarray, hidden: np.ndarray, n_genes: int) -> Selection:
    """Greedy forward selection of the genes most associated with the hidden units and the genes chosen before.

    At each step every candidate gene and hidden unit gets the table [hidden unit, selected genes,
    candidate] and the log-linear model ``[H S][C]`` (the candidate independent of the hidden unit
    and the selected genes jointly), fitted by :func:`ipf`. Its deviance ``G^2`` against the saturated
    model measures how strongly the candidate is associated with them; the candidate with the largest
    deviance over all hidden units joins (PatternsByLogLin.jl; Hess et al. 2020). All candidates of a
    step have the same degrees of freedom, so their deviances compare directly.

    Parameters
    ----------
    visible
        Observations x genes, 0/1.
    hidden
        Observations x hidden units, 0/1.
    n_genes
        Genes to select.

    Returns
    -------
    :class:`Selection`.
    """
    n_units = hidden.shape[1]
    selected: list[int] = []
    deviances: list[float] = []
    units: list[int] = []
    for _ in range(n_genes):
        candidates = np.setdiff1d(np.arange(visible.shape[1]), selected)
        n_selected = len(selected)
        margins = [tuple(range(n_selected + 1)), (n_selected + 1,)]
        per_chunk = max(1, _TABLE_ENTRIES // (n_units * 2 ** (n_selected + 2)))
        best = (-np.inf, -1, -1)
        for start in range(0, len(candidates), per_chunk):
            chunk = candidates[start : start + per_chunk]
            tables = contingency_tables(visible, hidden, selected, chunk)
            deviance = g_squared(tables, ipf(tables, margins, batch_dims=2), batch_dims=2)
            unit, position = np.unravel_index(np.argmax(deviance), deviance.shape)
            if deviance[unit, position] > best[0]:
                best = (float(deviance[unit, position]), int(chunk[position]), int(unit))
        deviances.append(best[0])
        selected.append(best[1])
        units.append(best[2])
    return Selection(selected, deviances, units)


def top_patterns(visible: np.ndarray, n_patterns: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``n_patterns`` most frequent rows of a 0/1 matrix (fewer when fewer occur).

    Returns
    -------
    ``(patterns, counts)``: patterns x columns (int8), most frequent first (ties by pattern code), and
    how many rows show each.
    """
    codes = _codes(visible)
    unique, counts = np.unique(codes, return_counts=True)
    order = np.lexsort((unique, -counts))[:n_patterns]
    n_columns = visible.shape[1]
    bits = (unique[order][:, None] >> np.arange(n_columns - 1, -1, -1)) & 1
    return bits.astype(np.int8), counts[order]


def pattern_frequencies(visible: np.ndarray, patterns: np.ndarray) -> np.ndarray:
    """Share of the rows of ``visible`` (0/1, the pattern's columns) equal to each pattern."""
    codes = _codes(visible)
    return np.asarray([np.mean(codes == code) for code in _codes(patterns)]) if len(codes) else np.zeros(len(patterns))


def js_divergence(p: np.ndarray, q: np.ndarray) -> float:
    """Jensen-Shannon divergence of two distributions (natural logarithm; at most ``log 2``)."""
    m = (p + q) / 2

    def kl(a: np.ndarray) -> float:
        keep = a > 0
        return float((a[keep] * np.log(a[keep] / m[keep])).sum())

    return 0.5 * kl(p) + 0.5 * kl(q)


def hidden_distributions(visible: np.ndarray, hidden: np.ndarray, patterns: np.ndarray) -> np.ndarray:
    """Per pattern, the distribution of the hidden layer's joint states among the observations showing it.

    Returns
    -------
    Patterns x distinct hidden states seen, each row summing to 1 (all zeros for a pattern no row shows).
    """
    codes = _codes(visible)
    states, state_of_row = np.unique(np.asarray(hidden, dtype=np.int8), axis=0, return_inverse=True)
    state_of_row = state_of_row.reshape(-1)
    out = np.zeros((len(patterns), len(states)))
    for i, code in enumerate(_codes(patterns)):
        counts = np.bincount(state_of_row[codes == code], minlength=len(states))
        if counts.sum():
            out[i] = counts / counts.sum()
    return out


def classical_mds(distances: np.ndarray, n_components: int = 2) -> np.ndarray:
    """Classical (Torgerson) multidimensional scaling: coordinates whose distances approximate ``distances``.

    Double-centres the squared distances and takes the leading eigenvectors scaled by the square
    roots of their eigenvalues (negative ones, from non-Euclidean distances, count as 0).

    Returns
    -------
    Points x ``n_components``.
    """
    n = distances.shape[0]
    centring = np.eye(n) - 1.0 / n
    gram = -0.5 * centring @ (distances**2) @ centring
    values, vectors = np.linalg.eigh(gram)
    order = np.argsort(values)[::-1][:n_components]
    coordinates = vectors[:, order] * np.sqrt(np.clip(values[order], 0.0, None))
    if coordinates.shape[1] < n_components:
        coordinates = np.pad(coordinates, ((0, 0), (0, n_components - coordinates.shape[1])))
    # a sign per axis, fixed so that results do not depend on the eigen solver's choice
    signs = np.sign(coordinates[np.argmax(np.abs(coordinates), axis=0), np.arange(n_components)])
    return coordinates * np.where(signs == 0, 1.0, signs)


def pattern_coordinates(visible: np.ndarray, hidden: np.ndarray, patterns: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Square-root Jensen-Shannon distances between the patterns' hidden-state distributions, and their 2-D MDS.

    Returns
    -------
    ``(distances, coordinates)``: patterns x patterns, and patterns x 2.
    """
    distributions = hidden_distributions(visible, hidden, patterns)
    n = len(patterns)
    distances = np.zeros((n, n))
    for i in range(n):
        for j in range(i + 1, n):
            distances[i, j] = distances[j, i] = np.sqrt(max(js_divergence(distributions[i], distributions[j]), 0.0))
    return distances, classical_mds(distances, 2)
