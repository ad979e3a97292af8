"""Kernels that judge synthetic cells against real ones: marginals, gene-gene structure and two-sample tests.

Pure functions on numpy arrays (cells x genes), torch for the pairwise sums; no AnnData here. The
AnnData-facing side is :func:`scdgm.tl.synthetic_quality`, which hands :func:`compare_to_reference`
a reference sample and the samples to judge against it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import torch

TARGET_SUM = 1e4
"""Counts are scaled to this total per cell before ``log1p`` (``sc.pp.normalize_total(target_sum=1e4)``)."""

MEDIAN_POINTS = 1000
"""Most cells whose pairwise distances set the MMD bandwidth (median heuristic)."""

_BLOCK_ELEMENTS = 4_000_000
"""Pairwise entries held at once per row block of the pairwise sums (32 MB in float64)."""

_RF_TREES = 100
_CV_FOLDS = 5

METRICS = (
    "n_reference_cells",
    "n_cells",
    "gene_mean_pearson",
    "gene_mean_ks",
    "gene_variance_pearson",
    "gene_variance_ks",
    "gene_cv_pearson",
    "gene_cv_ks",
    "gene_zero_fraction_pearson",
    "gene_zero_fraction_ks",
    "gene_expression_ks",
    "cell_library_size_ks",
    "cell_zero_fraction_ks",
    "correlation_mae",
    "correlation_pearson",
    "covariance_mae",
    "covariance_pearson",
    "log_odds_ratio_mae",
    "log_odds_ratio_pearson",
    "energy_statistic",
    "energy_pvalue",
    "mmd2",
    "classifier_auroc",
)
"""Every metric :func:`compare_to_reference` returns, in table order."""

KINDS = ("counts", "binary", "continuous")


# ---------------------------------------------------------------------------------------------- data


def value_kind(blocks: Iterable[np.ndarray]) -> str:
    """``"binary"`` (only 0 and 1), ``"counts"`` (non-negative integers) or ``"continuous"`` (anything else).

    ``blocks`` are the stored values of a matrix, piece by piece (dense row blocks, or the ``.data``
    of sparse ones: the zeros they leave out fit every kind).
    """
    binary, integer = True, True
    for block in blocks:
        values = np.asarray(block)
        if not values.size:
            continue
        if values.dtype.kind == "b":
            continue
        if binary:
            binary = bool(np.all((values == 0) | (values == 1)))
        if not binary and values.dtype.kind == "f":
            integer = bool(np.all(values >= 0) and np.all(values == np.rint(values)))
        elif not binary:
            integer = bool(np.all(values >= 0))
        if not integer:
            return "continuous"
    return "binary" if binary else "counts"


def log_normalize(X: np.ndarray, kind: str) -> np.ndarray:
    """Counts scaled to :data:`TARGET_SUM` per cell and ``log1p``-transformed; binary and continuous data as they are.

    Cells without counts stay zero.
    """
    X = np.asarray(X, dtype=np.float64)
    if kind != "counts":
        return X
    total = X.sum(axis=1, keepdims=True)
    scale = np.divide(TARGET_SUM, total, out=np.zeros_like(total), where=total > 0)
    return np.log1p(X * scale)


def top_variable_genes(X: np.ndarray, n_top: int) -> np.ndarray:
    """Positions of the ``n_top`` columns of largest variance (fewer when fewer vary), largest first."""
    variance = np.var(X, axis=0)
    ranked = np.argsort(-variance, kind="stable")
    return ranked[: min(n_top, int(np.count_nonzero(variance > 0)))]


def fit_pca(X: np.ndarray, n_components: int, *, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Mean ``(genes,)`` and principal axes ``(genes, k)`` of ``X``, centred but not scaled (as ``sc.pp.pca``).

    ``k`` is ``n_components`` at most, and at most ``min(cells - 1, genes)``.
    """
    from sklearn.decomposition import PCA

    k = max(1, min(n_components, X.shape[0] - 1, X.shape[1]))
    pca = PCA(n_components=k, random_state=seed).fit(X)
    return pca.mean_, pca.components_.T


# -------------------------------------------------------------------------------------------- marginals


def pearson(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation over the positions where both are finite; NaN with fewer than 2 or no variation."""
    a, b = np.asarray(a, dtype=np.float64).ravel(), np.asarray(b, dtype=np.float64).ravel()
    finite = np.isfinite(a) & np.isfinite(b)
    if np.count_nonzero(finite) < 2:
        return float("nan")
    a, b = a[finite] - a[finite].mean(), b[finite] - b[finite].mean()
    denominator = np.sqrt((a * a).sum() * (b * b).sum())
    if denominator == 0:
        return float("nan")
    return float((a * b).sum() / denominator)


def ks_statistic_columns(x: np.ndarray, y: np.ndarray, *, block_columns: int = 512) -> np.ndarray:
    """Two-sample Kolmogorov-Smirnov statistic of every column of ``x`` ``(m, p)`` against the same column of ``y``.

    The largest gap between the two empirical distribution functions, evaluated where the pooled
    values change (ties handled as :func:`scipy.stats.ks_2samp` does). Columns are done in blocks.
    """
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    m, n = x.shape[0], y.shape[0]
    out = np.empty(x.shape[1])
    for start in range(0, x.shape[1], block_columns):
        stop = min(start + block_columns, x.shape[1])
        pooled = np.concatenate([x[:, start:stop], y[:, start:stop]])
        order = np.argsort(pooled, axis=0, kind="stable")
        ordered = np.take_along_axis(pooled, order, axis=0)
        gap = np.cumsum(np.where(order < m, 1.0 / m, -1.0 / n), axis=0)
        # Only the last of tied values is a point where both distribution functions have taken their step.
        end_of_ties = np.ones(ordered.shape, dtype=bool)
        end_of_ties[:-1] = ordered[1:] != ordered[:-1]
        out[start:stop] = np.abs(np.where(end_of_ties, gap, 0.0)).max(axis=0)
    return out


def ks_statistic(x: np.ndarray, y: np.ndarray) -> float:
    """Two-sample Kolmogorov-Smirnov statistic of the finite values of ``x`` and ``y``; NaN when one has none."""
    x, y = np.asarray(x, dtype=np.float64).ravel(), np.asarray(y, dtype=np.float64).ravel()
    x, y = x[np.isfinite(x)], y[np.isfinite(y)]
    if not x.size or not y.size:
        return float("nan")
    return float(ks_statistic_columns(x[:, None], y[:, None])[0])


def gene_statistics(X: np.ndarray) -> dict[str, np.ndarray]:
    """Per gene: ``mean``, ``variance`` (``ddof=1``), ``cv`` (sd / mean; NaN where the mean is 0) and ``zero_fraction``."""
    X = np.asarray(X, dtype=np.float64)
    mean = X.mean(axis=0)
    variance = X.var(axis=0, ddof=1)
    cv = np.divide(np.sqrt(variance), np.abs(mean), out=np.full_like(mean, np.nan), where=mean != 0)
    return {"mean": mean, "variance": variance, "cv": cv, "zero_fraction": (X == 0).mean(axis=0)}


def cell_statistics(X: np.ndarray) -> dict[str, np.ndarray]:
    """Per cell: ``library_size`` (sum over genes) and ``zero_fraction``."""
    X = np.asarray(X, dtype=np.float64)
    return {"library_size": X.sum(axis=1), "zero_fraction": (X == 0).mean(axis=1)}


# ------------------------------------------------------------------------------------ gene-gene structure


def upper_triangle(matrix: np.ndarray, *, diagonal: bool = False) -> np.ndarray:
    """Entries above (with ``diagonal``: on and above) the diagonal of a square matrix, row by row."""
    return matrix[np.triu_indices(matrix.shape[0], k=0 if diagonal else 1)]


def correlation_matrix(X: np.ndarray) -> np.ndarray:
    """Pearson correlation between the columns of ``X``; 0 for a column that does not vary (correlation undefined)."""
    centred = np.asarray(X, dtype=np.float64) - X.mean(axis=0)
    sd = np.sqrt((centred**2).sum(axis=0))
    z = np.divide(centred, sd, out=np.zeros_like(centred), where=sd > 0)
    return z.T @ z


def covariance_matrix(X: np.ndarray) -> np.ndarray:
    """Sample covariance (``ddof=1``) between the columns of ``X``."""
    centred = np.asarray(X, dtype=np.float64) - X.mean(axis=0)
    return centred.T @ centred / max(X.shape[0] - 1, 1)


def log_odds_ratios(X: np.ndarray, threshold: float) -> np.ndarray:
    """Log odds ratio of every pair of columns of ``X > threshold``, with 0.5 added to each cell of the 2 x 2 table.

    ``log((n11 + .5)(n00 + .5) / ((n10 + .5)(n01 + .5)))``, all pairs at once from one matrix product.
    """
    on = (np.asarray(X) > threshold).astype(np.float64)
    n_cells = on.shape[0]
    n11 = on.T @ on
    count = on.sum(axis=0)
    n10 = count[:, None] - n11
    n01 = count[None, :] - n11
    n00 = n_cells - n11 - n10 - n01
    return np.log(n11 + 0.5) + np.log(n00 + 0.5) - np.log(n10 + 0.5) - np.log(n01 + 0.5)


# ---------------------------------------------------------------------------------- two-sample tests


def _pair_sums(
    z: torch.Tensor, labels: torch.Tensor, transform: Callable[[torch.Tensor], torch.Tensor], *, block_rows: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``s^T K s`` and ``1^T K s`` for every label column ``s`` of ``labels`` ``(N, L)``, and ``1^T K 1``.

    ``K = transform(squared distances)`` between the rows of ``z`` is never held whole: each block of
    rows gets its kernel values to the points from its own first row on (the upper block triangle;
    ``K`` is symmetric), which are multiplied by the labels and dropped. That halves the work of the
    product, which dominates: ``N^2 L / 2`` multiply-adds.
    """
    import torch

    n = z.shape[0]
    squares = (z * z).sum(dim=1)
    # The expansion |a|^2 + |b|^2 - 2 a.b leaves rounding error of about 1e-16 |z|^2, which the square
    # root of the energy kernel would blow up to 1e-8 |z| between identical cells (common in binary
    # data): squared distances below 1e-12 of the largest squared norm are taken as 0.
    tolerance = 1e-12 * float(squares.max()) if n else 0.0
    quadratic = torch.zeros(labels.shape[1], dtype=z.dtype, device=z.device)
    row_sums = torch.zeros(n, dtype=z.dtype, device=z.device)
    for start in range(0, n, block_rows):
        stop = min(start + block_rows, n)
        squared = squares[start:stop, None] + squares[None, start:] - 2.0 * (z[start:stop] @ z[start:].T)
        squared.masked_fill_(squared < tolerance, 0.0)
        kernel = transform(squared)
        own = labels[start:stop]
        # Off-diagonal blocks stand for themselves and their mirror image; the diagonal block only once.
        upper = (own * (kernel @ labels[start:])).sum(dim=0)
        diagonal = (own * (kernel[:, : stop - start] @ own)).sum(dim=0)
        quadratic += 2.0 * upper - diagonal
        row_sums[start:stop] += kernel.sum(dim=1) - kernel[:, : stop - start].sum(dim=0)
        row_sums[start:] += kernel.sum(dim=0)
    return quadratic, row_sums @ labels, row_sums.sum()


def _block_rows(n: int, block_rows: int | None) -> int:
    return block_rows if block_rows is not None else max(16, _BLOCK_ELEMENTS // max(n, 1))


def _pooled(x: np.ndarray, y: np.ndarray, device: str) -> torch.Tensor:
    """The rows of ``x`` then ``y`` as one float64 tensor, centred (smaller norms, smaller rounding error)."""
    import torch

    pooled = np.concatenate([np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)])
    return torch.as_tensor(pooled - pooled.mean(axis=0), device=device)


def permutations(n_total: int, n_permutations: int, seed: int) -> np.ndarray:
    """``(n_permutations, n_total)`` random orderings of the pooled points, from a seeded CPU ``torch.Generator``.

    Drawn on the CPU so that every device tests the same permutations; in each, the first points form
    the first sample.
    """
    import torch

    generator = torch.Generator().manual_seed(int(seed))
    out = np.empty((n_permutations, n_total), dtype=np.int64)
    for p in range(n_permutations):
        out[p] = torch.randperm(n_total, generator=generator).numpy()
    return out


def energy_test(
    x: np.ndarray,
    y: np.ndarray,
    *,
    n_permutations: int,
    seed: int,
    device: str = "cpu",
    block_rows: int | None = None,
) -> tuple[float, float]:
    r"""Two-sample Cramér (energy) statistic of ``x`` ``(m, d)`` and ``y`` ``(n, d)``, with a permutation p-value.

    .. math::

        T = \frac{mn}{m+n}\Bigl(\frac{2}{mn}\sum_{i,j}\phi(\lVert x_i-y_j\rVert^2)
            - \frac{1}{m^2}\sum_{i,j}\phi(\lVert x_i-x_j\rVert^2)
            - \frac{1}{n^2}\sum_{i,j}\phi(\lVert y_i-y_j\rVert^2)\Bigr),
        \qquad \phi(z) = \sqrt{z}/2,

    the kernel of R's ``cramer`` package (half the Euclidean distance), with V-statistics (every pair
    including ``i = j``). It is exactly half of ``dcor.homogeneity.energy_test_statistic(x, y)``.

    The distances are computed once. All permutations are labellings of the pooled points, stacked as
    the columns of a 0/1 matrix ``S`` (1 = first sample); with ``Phi`` the matrix of kernel values, the
    three sums of each are ``s^T Phi (1 - s)``, ``s^T Phi s`` and ``(1 - s)^T Phi (1 - s)``, all read from
    ``Phi S``, computed in row blocks (on ``device``) without ever holding ``Phi`` whole.

    Parameters
    ----------
    x, y
        The two samples, cells x dimensions.
    n_permutations
        Random relabellings (drawn by :func:`permutations`); 0 computes the statistic only.
    seed
        Seed of the permutations.
    device
        Torch device of the pairwise sums.
    block_rows
        Rows of the kernel matrix computed at a time; default: about 4 million entries per block.

    Returns
    -------
    ``(statistic, p_value)``; the p-value is ``(1 + #{T_perm >= T}) / (1 + n_permutations)`` (NaN without permutations).
    """
    import torch

    m, n = len(x), len(y)
    z = _pooled(x, y, device)
    columns = np.zeros((m + n, 1 + n_permutations))
    columns[:m, 0] = 1.0
    if n_permutations:
        order = permutations(m + n, n_permutations, seed)
        columns[order[:, :m].T, np.arange(1, 1 + n_permutations)[None, :]] = 1.0
    labels = torch.as_tensor(columns, device=device)
    within_first, first_to_all, total = _pair_sums(
        z, labels, lambda squared: squared.sqrt_().mul_(0.5), block_rows=_block_rows(m + n, block_rows)
    )
    between = first_to_all - within_first
    within_second = total - 2.0 * first_to_all + within_first
    statistic = (m * n / (m + n)) * (2.0 * between / (m * n) - within_first / m**2 - within_second / n**2)
    statistic = statistic.cpu().numpy()
    observed = float(statistic[0])
    if not n_permutations:
        return observed, float("nan")
    # A relabelling that gives the observed split back must count as "as extreme" despite rounding.
    extreme = np.count_nonzero(statistic[1:] >= observed - 1e-9 * abs(observed))
    return observed, float((1 + extreme) / (1 + n_permutations))


def median_distance(x: np.ndarray, *, seed: int, max_points: int = MEDIAN_POINTS) -> float:
    """Median Euclidean distance between distinct rows of ``x`` (of at most ``max_points`` rows drawn with ``seed``)."""
    from scipy.spatial.distance import pdist

    x = np.asarray(x, dtype=np.float64)
    if len(x) > max_points:
        x = x[np.random.default_rng(seed).choice(len(x), max_points, replace=False)]
    return float(np.median(pdist(x))) if len(x) > 1 else 0.0


def mmd2_unbiased(
    x: np.ndarray, y: np.ndarray, *, bandwidth: float, device: str = "cpu", block_rows: int | None = None
) -> float:
    r"""Unbiased squared maximum mean discrepancy with the Gaussian kernel :math:`k(a, b) = \exp(-\lVert a-b\rVert^2 / 2\sigma^2)`.

    .. math::

        \mathrm{MMD}^2_u = \frac{1}{m(m-1)}\sum_{i\ne j}k(x_i,x_j) + \frac{1}{n(n-1)}\sum_{i\ne j}k(y_i,y_j)
            - \frac{2}{mn}\sum_{i,j}k(x_i,y_j),

    with :math:`\sigma` = ``bandwidth`` (a non-positive bandwidth is replaced by 1). Can be slightly
    negative when the two samples come from one distribution.
    """
    import torch

    m, n = len(x), len(y)
    z = _pooled(x, y, device)
    sigma = bandwidth if bandwidth > 0 else 1.0
    labels = torch.zeros((m + n, 1), dtype=torch.float64, device=device)
    labels[:m] = 1.0
    within_first, first_to_all, total = _pair_sums(
        z, labels, lambda squared: squared.mul_(-0.5 / sigma**2).exp_(), block_rows=_block_rows(m + n, block_rows)
    )
    within_first, first_to_all, total = float(within_first[0]), float(first_to_all[0]), float(total)
    between = first_to_all - within_first
    within_second = total - 2.0 * first_to_all + within_first
    # k(a, a) = 1: the diagonal contributes m and n to the within-sample sums.
    return (within_first - m) / (m * (m - 1)) + (within_second - n) / (n * (n - 1)) - 2.0 * between / (m * n)


def classifier_auroc(x: np.ndarray, y: np.ndarray, *, seed: int) -> float:
    """Cross-validated AUROC of a random forest telling the rows of ``x`` from those of ``y``.

    100 trees (seeded), stratified 5-fold cross-validation (shuffled, seeded); the AUROC of the pooled
    out-of-fold probabilities. 0.5: indistinguishable; 1: perfectly separated.
    """
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    features = np.concatenate([x, y])
    target = np.r_[np.zeros(len(x), dtype=np.int64), np.ones(len(y), dtype=np.int64)]
    forest = RandomForestClassifier(n_estimators=_RF_TREES, random_state=seed)
    folds = StratifiedKFold(n_splits=_CV_FOLDS, shuffle=True, random_state=seed)
    proba = cross_val_predict(forest, features, target, cv=folds, method="predict_proba")[:, 1]
    return float(roc_auc_score(target, proba))


# ------------------------------------------------------------------------------------------ all of it


def compare_to_reference(
    reference: np.ndarray,
    samples: Mapping[str, np.ndarray],
    *,
    kind: str,
    n_top_genes: int,
    n_pcs: int,
    binarize_threshold: float,
    n_permutations: int,
    seed: int,
    device: str = "cpu",
) -> dict[str, dict[str, float]]:
    """Every metric of :data:`METRICS` for each sample of ``samples`` against ``reference`` (cells x genes, raw values).

    The top genes (largest variance of the log-normalised reference) are chosen on ``reference`` alone,
    once, so every sample is judged on the same genes. The space of the energy test, the MMD and the
    classifier is a PCA of the log-normalised cells of both samples pooled, labels ignored, fitted for
    each comparison: a space fitted on one sample would set that sample apart from any other (its
    own cells fill it more), and the permutation test is only exact when the pooled cells are
    exchangeable. Marginals and odds ratios read the raw values; correlations, covariances and the
    PCA read log-normalised ones (:func:`log_normalize`).

    Returns
    -------
    ``{sample name: {metric: value}}``, metrics in the order of :data:`METRICS`.
    """
    nonnegative = kind != "continuous"
    normalized = log_normalize(reference, kind)
    top = top_variable_genes(normalized, n_top_genes)
    reference_genes = gene_statistics(reference)
    reference_cells = cell_statistics(reference)
    reference_structure = _structure(normalized[:, top], np.asarray(reference)[:, top], binarize_threshold)

    results = {}
    for name, sample in samples.items():
        sample_normalized = log_normalize(sample, kind)
        pooled = np.concatenate([normalized, sample_normalized])
        mean, axes = fit_pca(pooled, n_pcs, seed=seed)
        pcs = (pooled - mean) @ axes
        reference_pcs, sample_pcs = pcs[: len(reference)], pcs[len(reference) :]
        values: dict[str, float] = {"n_reference_cells": float(len(reference)), "n_cells": float(len(sample))}
        genes = gene_statistics(sample)
        for stat in ("mean", "variance", "cv", "zero_fraction"):
            a, b = reference_genes[stat], genes[stat]
            scaled = nonnegative and stat in {"mean", "variance"}
            values[f"gene_{stat}_pearson"] = pearson(np.log1p(a), np.log1p(b)) if scaled else pearson(a, b)
            values[f"gene_{stat}_ks"] = ks_statistic(a, b)
        values["gene_expression_ks"] = float(np.mean(ks_statistic_columns(reference, sample)))
        cells = cell_statistics(sample)
        for stat in ("library_size", "zero_fraction"):
            values[f"cell_{stat}_ks"] = ks_statistic(reference_cells[stat], cells[stat])
        structure = _structure(sample_normalized[:, top], np.asarray(sample)[:, top], binarize_threshold)
        for stat in ("correlation", "covariance", "log_odds_ratio"):
            a, b = reference_structure[stat], structure[stat]
            values[f"{stat}_mae"] = float(np.mean(np.abs(a - b))) if a.size else float("nan")
            values[f"{stat}_pearson"] = pearson(a, b)
        statistic, p_value = energy_test(
            reference_pcs, sample_pcs, n_permutations=n_permutations, seed=seed, device=device
        )
        values["energy_statistic"], values["energy_pvalue"] = statistic, p_value
        bandwidth = median_distance(pcs, seed=seed)
        values["mmd2"] = mmd2_unbiased(reference_pcs, sample_pcs, bandwidth=bandwidth, device=device)
        values["classifier_auroc"] = classifier_auroc(reference_pcs, sample_pcs, seed=seed)
        results[name] = {metric: float(values[metric]) for metric in METRICS}
    return results


def _structure(normalized: np.ndarray, raw: np.ndarray, threshold: float) -> dict[str, Any]:
    """Upper triangles of the correlation (without diagonal), covariance (with) and log odds ratios (without)."""
    return {
        "correlation": upper_triangle(correlation_matrix(normalized)),
        "covariance": upper_triangle(covariance_matrix(normalized), diagonal=True),
        "log_odds_ratio": upper_triangle(log_odds_ratios(raw, threshold)),
    }
