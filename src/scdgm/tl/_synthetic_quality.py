"""``tl.synthetic_quality``: how close synthetic cells come to real ones, measured against a real-vs-real control."""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import scipy.sparse as sp
from anndata import AnnData

from .._checks import check_int, check_number
from .._keys import QualityKeys
from .._results import record_params, write_results
from .._settings import logger
from .._warnings import ScdgmWarning
from ._common import check_uns_free, resolve_device_seed

if TYPE_CHECKING:
    from ..data import PreparedData

MIN_CELLS = 10
"""Fewest cells compared on each side (and per group): below, 5-fold cross-validation and the tests mean little."""

ALL_CELLS = "all"
"""The ``group`` of the rows that compare all cells."""


@dataclass
class _Unit:
    """One comparison: a group (or all cells), its reference half A and the equal-sized samples judged against it."""

    group: str
    reference_a: np.ndarray
    reference_b: np.ndarray
    synthetic: np.ndarray


def synthetic_quality(
    adata: AnnData,
    *,
    reference: AnnData,
    layer: str | None = None,
    reference_layer: str | None = None,
    groupby: str | None = None,
    n_top_genes: int = 100,
    n_pcs: int = 30,
    binarize_threshold: float = 0.0,
    n_permutations: int = 1000,
    max_cells: int = 5000,
    device: str | None = None,
    seed: int | None = None,
    key_added: str = "synthetic_quality",
) -> pd.DataFrame:
    r"""Judge synthetic cells by how well they reproduce real ones, next to a real-vs-real control.

    The reference is split at random (seeded; within each group when ``groupby`` is given) into
    halves A and B. The ``"synthetic"`` rows compare the synthetic cells with A, the ``"control"``
    rows compare B with A, with as many synthetic cells as B cells (the larger side is subsampled), so
    every figure comes with the value it takes between two samples of the same real cells. With
    ``groupby``, each group is judged on its own as well, as if it were the whole data.

    Two choices shape the figures:

    - the top genes are the ``n_top_genes`` genes of largest variance in A's log-normalised data (per
      group), so both rows are judged on the same genes, chosen without the synthetic cells;
    - the energy test, the MMD and the classifier work in a PCA (``n_pcs`` components, at most the
      pooled cells - 1 and the genes) of the log-normalised cells of both samples of the row pooled,
      labels ignored, centred and not scaled. A PCA fitted on A alone would set A apart from any
      other sample (its own cells fill that space more, most of all in small groups), and the
      permutation test is only exact when the pooled cells are exchangeable.

    Log-normalised means: counts scaled to 10,000 per cell, then ``log1p`` (as
    ``sc.pp.normalize_total(target_sum=1e4)`` and ``sc.pp.log1p``); binary and continuous data are
    used as they are.

    Metrics (``metric`` column of the table):

    ``gene_mean_pearson``, ``gene_variance_pearson``, ``gene_cv_pearson``, ``gene_zero_fraction_pearson``
        Pearson correlation over genes of the gene's mean, variance, coefficient of variation and
        fraction of zeros, real against synthetic, all on the data as given (``log1p`` of means and
        variances for counts and binary data). 1 is best.
    ``gene_mean_ks``, ``gene_variance_ks``, ``gene_cv_ks``, ``gene_zero_fraction_ks``
        Two-sample Kolmogorov-Smirnov statistic between the distributions of those values over genes.
        0 is best.
    ``gene_expression_ks``
        The KS statistic between the real and synthetic values of each gene, averaged over genes:
        the distance between the genes' marginal distributions. 0 is best.
    ``cell_library_size_ks``, ``cell_zero_fraction_ks``
        KS statistic between the distributions of each cell's total (over the genes of ``adata``) and
        fraction of zeros. 0 is best.
    ``correlation_mae``, ``correlation_pearson``
        Gene-gene Pearson correlation matrices of the top genes (log-normalised): mean absolute
        difference of their upper triangles (diagonal left out), and the Pearson correlation between
        them. A gene that does not vary has correlation 0 with every other.
    ``covariance_mae``, ``covariance_pearson``
        The same for the covariance matrices (upper triangle with the diagonal).
    ``log_odds_ratio_mae``, ``log_odds_ratio_pearson``
        The same for the log odds ratios of every pair of top genes binarised as ``value >
        binarize_threshold`` (on the data as given), each cell of the 2 x 2 table plus 0.5.
    ``energy_statistic``, ``energy_pvalue``
        The two-sample Cramér (energy) statistic in the PCA space,
        :math:`T = \frac{mn}{m+n}\bigl(\frac{2}{mn}\sum_{i,j}\phi(\lVert X_i-\hat X_j\rVert^2)
        - \frac{1}{m^2}\sum_{i,j}\phi(\lVert X_i-X_j\rVert^2) - \frac{1}{n^2}\sum_{i,j}\phi(\lVert\hat X_i-\hat X_j\rVert^2)\bigr)`
        with :math:`\phi(z) = \sqrt{z}/2` (half the Euclidean distance, as R's ``cramer`` package), which is
        half of ``dcor.homogeneity.energy_test_statistic``; and its permutation p-value
        ``(1 + #{permuted T >= T}) / (1 + n_permutations)``. A small p-value: the samples differ.
    ``mmd2``
        Unbiased squared maximum mean discrepancy in the PCA space, Gaussian kernel whose bandwidth is
        the median distance between the pooled cells (at most 1,000 of them, drawn with ``seed``).
        About 0 when the samples agree.
    ``classifier_auroc``
        AUROC of a random forest (100 trees, seeded) telling A's cells from the other sample's in the
        PCA space, from stratified 5-fold cross-validation. 0.5: indistinguishable.
    ``n_reference_cells``, ``n_cells``
        Cells of A, and of the sample judged against it, used for the other metrics.

    Parameters
    ----------
    adata
        The synthetic cells (e.g. from :func:`scdgm.tl.generate`). Receives the result in ``.uns``.
    reference
        Real cells, ideally held out from training the model. It must hold every gene of ``adata``
        (matched by name, in any order; other genes are ignored), with unique names, and the same
        kind of values: counts, 0/1 values, or other (continuous) values.
    layer
        Layer of ``adata`` to read instead of ``.X``.
    reference_layer
        Layer of ``reference`` to read instead of ``.X``.
    groupby
        An ``.obs`` column present in both (e.g. ``"cell_type"``): each group of the reference is
        also judged on its own. Groups with fewer than 10 cells on a side are skipped, with a warning.
    n_top_genes
        Genes of largest variance in the reference whose correlations, covariances and odds ratios are
        compared (at least 2).
    n_pcs
        Principal components of the space of the energy test, the MMD and the classifier.
    binarize_threshold
        Values above it count as "on" for the odds ratios.
    n_permutations
        Permutations of the energy test; 0 computes the statistic only (``energy_pvalue`` is NaN).
    max_cells
        Most cells per side (A, and each sample judged against it), per group: larger sides are
        subsampled at random (seeded) before anything is computed.
    device
        Where the pairwise sums of the energy test and the MMD run; ``None`` follows ``dgm.settings.device``.
    seed
        Seeds the split of the reference, the subsampling, the permutations, the PCA and the classifier;
        ``None`` follows ``dgm.settings.seed``.
    key_added
        ``.uns`` key of the result in ``adata``.

    Returns
    -------
    A tidy DataFrame, one row per comparison, group and metric, with columns

    ``comparison``
        ``"synthetic"`` (synthetic cells against A) or ``"control"`` (B against A).
    ``group``
        ``"all"``, or a group of ``groupby``.
    ``metric``
        The metric's name (above).
    ``value``
        Its value.

    The same table is written to

    ``.uns[key_added]`` (``.uns["synthetic_quality"]`` by default)
        ``"comparison"``, ``"group"``, ``"metric"`` and ``"value"``: the table's columns as arrays
        (read them back with :func:`scdgm.get.synthetic_quality`), and ``"params"``: the arguments of
        this call, the seed, the kind of data and the numbers of cells.

    Examples
    --------
    >>> import scdgm as dgm
    >>> adata = dgm.datasets.simulate(600, 100, seed=0)
    >>> real, held_out = adata[:300].copy(), adata[300:].copy()
    >>> dgm.tl.vae(real)  # doctest: +SKIP
    >>> synthetic = dgm.tl.generate(real, n_obs=300)  # doctest: +SKIP
    >>> table = dgm.tl.synthetic_quality(synthetic, reference=held_out, groupby="cell_type")  # doctest: +SKIP
    >>> dgm.get.synthetic_quality(synthetic, wide=True)  # doctest: +SKIP
    """
    from .._synthetic_metrics import METRICS, compare_to_reference

    keys = QualityKeys(key_added)
    _check_arguments(adata, reference, layer, reference_layer, groupby)
    check_int("n_top_genes", n_top_genes, minimum=2)
    check_int("n_pcs", n_pcs)
    check_number("binarize_threshold", binarize_threshold)
    check_int("n_permutations", n_permutations, minimum=0)
    check_int("max_cells", max_cells, minimum=MIN_CELLS)
    check_uns_free(adata, keys.uns, tool="synthetic_quality")
    columns = _reference_columns(adata.var_names, reference.var_names)
    device, seed = resolve_device_seed(device, seed)
    synthetic_data, kind = _read(adata, layer, "adata")
    reference_data, reference_kind = _read(reference, reference_layer, "reference")
    _check_same_kind(kind, reference_kind, synthetic_data.source, reference_data.source)
    units = _plan(adata, reference, groupby, max_cells, np.random.default_rng(seed))

    records = []
    for unit in units:
        logger.info(
            f"    {unit.group}: {len(unit.synthetic)} synthetic and {len(unit.reference_b)} held-out reference cells "
            f"against {len(unit.reference_a)} reference cells"
        )
        results = compare_to_reference(
            _dense(reference_data, unit.reference_a, columns),
            {
                "synthetic": _dense(synthetic_data, unit.synthetic, None),
                "control": _dense(reference_data, unit.reference_b, columns),
            },
            kind=kind,
            n_top_genes=n_top_genes,
            n_pcs=n_pcs,
            binarize_threshold=binarize_threshold,
            n_permutations=n_permutations,
            seed=seed,
            device=device,
        )
        for comparison, values in results.items():
            records.extend((comparison, unit.group, metric, values[metric]) for metric in METRICS)
    table = pd.DataFrame(records, columns=["comparison", "group", "metric", "value"])

    params = record_params(
        "synthetic_quality",
        layer=layer,
        reference_layer=reference_layer,
        groupby=groupby,
        n_top_genes=n_top_genes,
        top_genes_by="variance of the log-normalised reference half A",
        n_pcs=n_pcs,
        binarize_threshold=binarize_threshold,
        n_permutations=n_permutations,
        max_cells=max_cells,
        seed=seed,
        data_kind=kind,
        n_obs=adata.n_obs,
        n_obs_reference=reference.n_obs,
        n_vars=adata.n_vars,
    )
    stored = {name: table[name].to_numpy(dtype=object) for name in ("comparison", "group", "metric")}
    write_results(
        adata, uns={keys.uns: {**stored, "value": table["value"].to_numpy(dtype=np.float64), "params": params}}
    )
    return table


def _check_arguments(
    adata: AnnData, reference: AnnData, layer: str | None, reference_layer: str | None, groupby: str | None
) -> None:
    """The two AnnData objects, their layers, names, sizes and groups, checked before any data is read."""
    for name, value, what in (("adata", adata, "synthetic"), ("reference", reference, "real")):
        if not isinstance(value, AnnData):
            msg = f"{name} must be an AnnData (the {what} cells), not a {type(value).__name__}."
            raise TypeError(msg)
    for name, data, key in (("adata", adata, layer), ("reference", reference, reference_layer)):
        argument = "layer" if name == "adata" else "reference_layer"
        if key is not None and key not in data.layers:
            msg = f"{argument}={key!r} is not in {name}.layers. Available layers: {list(data.layers.keys())}."
            raise KeyError(msg)
        if not data.var_names.is_unique:
            repeated = list(data.var_names[data.var_names.duplicated()].unique()[:5])
            msg = (
                f"{name}.var_names repeats gene names (first: {repeated}): genes are matched by name. "
                f"Run `{name}.var_names_make_unique()` first."
            )
            raise ValueError(msg)
    if adata.n_obs < MIN_CELLS:
        msg = f"adata holds {adata.n_obs} synthetic cells; at least {MIN_CELLS} are needed to judge them."
        raise ValueError(msg)
    if reference.n_obs < 2 * MIN_CELLS:
        msg = (
            f"reference holds {reference.n_obs} cells; at least {2 * MIN_CELLS} are needed, split into two halves "
            f"of at least {MIN_CELLS} (one to compare against, one for the real-vs-real control)."
        )
        raise ValueError(msg)
    if groupby is not None:
        lacking = [name for name, data in (("adata", adata), ("reference", reference)) if groupby not in data.obs]
        if lacking:
            msg = (
                f"groupby={groupby!r} must be an .obs column of both adata and reference; it is not in "
                f"{' and '.join(f'{name}.obs' for name in lacking)}."
            )
            raise KeyError(msg)
        if (reference.obs[groupby].astype(str) == ALL_CELLS).any():
            msg = f"reference.obs[{groupby!r}] has a group named {ALL_CELLS!r}, the name of the rows of all cells. Rename it."
            raise ValueError(msg)


def _read(adata: AnnData, layer: str | None, name: str) -> tuple[PreparedData, str]:
    """The validated input matrix of ``adata`` (see :func:`scdgm.data.prepare_data`) and the kind of its values."""
    from .._synthetic_metrics import value_kind
    from ..data import prepare_data

    with warnings.catch_warnings():
        # Genes that are zero in every cell are data to judge here, not a problem to warn about.
        warnings.filterwarnings("ignore", message=".*are zero in every cell", category=ScdgmWarning)
        data = prepare_data(adata, layer=layer, feature_filter_advice=False)
    data.source = re.sub(r"^adata", name, data.source)
    kind = value_kind(block.data if sp.issparse(block) else block for _, _, block in data.iter_chunks())
    return data, kind


def _check_same_kind(kind: str, reference_kind: str, source: str, reference_source: str) -> None:
    if kind == reference_kind:
        return
    advice = (
        " Binarise the counts first (`dgm.pp.binarize`) or point both at counts."
        if {kind, reference_kind} == {"binary", "counts"}
        else ""
    )
    msg = (
        f"{source} holds {kind} values but {reference_source} holds {reference_kind} values: synthetic and real "
        "cells must be the same kind of data (counts, binary 0/1, or continuous) to be compared. Point layer= and "
        f"reference_layer= at matching data.{advice}"
    )
    raise ValueError(msg)


def _reference_columns(genes: np.ndarray, reference_genes: np.ndarray) -> np.ndarray | None:
    """Positions in the reference of each gene of ``adata``, ``None`` when they are the same genes in the same order."""
    genes, reference_genes = np.asarray(genes).astype(str), np.asarray(reference_genes).astype(str)
    if np.array_equal(genes, reference_genes):
        return None
    position = {gene: i for i, gene in enumerate(reference_genes)}
    missing = [gene for gene in genes if gene not in position]
    if missing:
        shown = ", ".join(missing[:10]) + (", ..." if len(missing) > 10 else "")
        msg = (
            f"reference lacks {len(missing)} of the {len(genes)} genes of adata: {shown}. Every gene of the synthetic "
            "cells must be in the reference (matched by name); subset adata to the genes the two share first."
        )
        raise ValueError(msg)
    return np.array([position[gene] for gene in genes])


def _dense(data: PreparedData, rows: np.ndarray, columns: np.ndarray | None) -> np.ndarray:
    block = data.read_row_index(rows)
    block = block.toarray() if sp.issparse(block) else np.asarray(block)
    block = block if columns is None else block[:, columns]
    # One memory layout whatever the gene order was, so that reductions round alike.
    return np.ascontiguousarray(block, dtype=np.float64)


def _group_labels(adata: AnnData, groupby: str | None) -> tuple[np.ndarray, list[str]]:
    """Each cell's group as a string (``""`` for a missing one) and the groups in order (categories first)."""
    if groupby is None:
        return np.full(adata.n_obs, "", dtype=object), []
    column = adata.obs[groupby]
    labels = np.where(column.isna(), "", column.astype(str)).astype(object)
    if isinstance(column.dtype, pd.CategoricalDtype):
        order = [str(c) for c in column.cat.categories]
    else:
        order = sorted({str(v) for v in column.dropna()})
    return labels, order


def _plan(
    adata: AnnData, reference: AnnData, groupby: str | None, max_cells: int, rng: np.random.Generator
) -> list[_Unit]:
    """Split the reference into halves A and B (within each group) and draw the cells of every comparison."""
    reference_labels, groups = _group_labels(reference, groupby)
    synthetic_labels, synthetic_groups = _group_labels(adata, groupby)
    in_a = np.zeros(reference.n_obs, dtype=bool)
    shuffled = rng.permutation(reference.n_obs)
    for label in np.unique(reference_labels):
        members = shuffled[reference_labels[shuffled] == label]
        in_a[members[: (len(members) + 1) // 2]] = True

    def draw(cells: np.ndarray, n: int) -> np.ndarray:
        return np.sort(rng.choice(cells, n, replace=False)) if len(cells) > n else cells

    def unit(group: str, a: np.ndarray, b: np.ndarray, synthetic: np.ndarray) -> _Unit:
        n = min(len(b), len(synthetic), max_cells)
        return _Unit(group, draw(a, max_cells), draw(b, n), draw(synthetic, n))

    units = [unit(ALL_CELLS, np.flatnonzero(in_a), np.flatnonzero(~in_a), np.arange(adata.n_obs))]
    skipped = []
    for group in groups:
        member = reference_labels == group
        a, b = np.flatnonzero(member & in_a), np.flatnonzero(member & ~in_a)
        synthetic = np.flatnonzero(synthetic_labels == group)
        if min(len(a), len(b), len(synthetic)) < MIN_CELLS:
            skipped.append(f"{group!r} ({len(a) + len(b)} reference, {len(synthetic)} synthetic)")
            continue
        units.append(unit(group, a, b, synthetic))
    if skipped:
        logger.warning(
            f"    skipped groups with fewer than {MIN_CELLS} cells in a reference half or in adata: {', '.join(skipped)}"
        )
    unknown = sorted(set(synthetic_groups) - set(groups))
    if unknown:
        logger.warning(
            f"    groups of adata.obs[{groupby!r}] absent from the reference, not judged on their own: {unknown}"
        )
    return units
