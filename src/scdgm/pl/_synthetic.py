"""``pl.synthetic``: synthetic cells beside real ones — marginals, gene-gene structure and a joint embedding."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from anndata import AnnData

from .._docs import doc_params
from ._utils import chosen_kinds, finish, panels

KINDS = ("correlation", "mean", "variance", "zero_fraction", "embedding", "log_odds")
"""Panels, in drawing order; ``"correlation"`` takes two (real, then synthetic), side by side in the first row."""

_REAL, _SYNTHETIC = "tab:blue", "tab:orange"


@dataclass
class _Pair:
    """The cells drawn: real and synthetic, same genes in the same order, as they are and log-normalised."""

    real: np.ndarray
    synthetic: np.ndarray
    real_normalized: np.ndarray
    synthetic_normalized: np.ndarray
    kind: str


def _cells(
    adata: AnnData, reference: AnnData, layer: str | None, reference_layer: str | None, max_cells: int, seed: int
) -> _Pair:
    """At most ``max_cells`` cells of each side, read and checked as :func:`scdgm.tl.synthetic_quality` reads them."""
    from .._synthetic_metrics import log_normalize
    from ..tl._synthetic_quality import _check_arguments, _check_same_kind, _dense, _read, _reference_columns

    _check_arguments(adata, reference, layer, reference_layer, None)
    synthetic, kind = _read(adata, layer, "adata")
    real, reference_kind = _read(reference, reference_layer, "reference")
    _check_same_kind(kind, reference_kind, synthetic.source, real.source)
    columns = _reference_columns(synthetic.var_names, real.var_names)
    rng = np.random.default_rng(seed)

    def draw(n: int) -> np.ndarray:
        return np.sort(rng.choice(n, max_cells, replace=False)) if n > max_cells else np.arange(n)

    x_synthetic = _dense(synthetic, draw(synthetic.n_obs), None)
    x_real = _dense(real, draw(real.n_obs), columns)
    return _Pair(x_real, x_synthetic, log_normalize(x_real, kind), log_normalize(x_synthetic, kind), kind)


def _identity_scatter(ax: Any, real: np.ndarray, synthetic: np.ndarray, label: str) -> None:
    from .._synthetic_metrics import pearson

    finite = np.isfinite(real) & np.isfinite(synthetic)
    ax.scatter(real[finite], synthetic[finite], s=6, alpha=0.6, color=_SYNTHETIC, linewidths=0)
    low = float(min(real[finite].min(), synthetic[finite].min()))
    high = float(max(real[finite].max(), synthetic[finite].max()))
    ax.plot([low, high], [low, high], color="0.3", lw=0.8, ls="--")
    ax.set_xlabel(f"real {label}")
    ax.set_ylabel(f"synthetic {label}")
    ax.set_title(f"{label} per gene (r = {pearson(real[finite], synthetic[finite]):.2f})")


def _marginal(ax: Any, pair: _Pair, statistic: str) -> None:
    from .._synthetic_metrics import gene_statistics

    real, synthetic = gene_statistics(pair.real)[statistic], gene_statistics(pair.synthetic)[statistic]
    label = statistic.replace("_", " ")
    if statistic != "zero_fraction" and pair.kind != "continuous":
        real, synthetic, label = np.log1p(real), np.log1p(synthetic), f"log1p {label}"
    _identity_scatter(ax, real, synthetic, label)


def _heatmaps(axes: list[Any], pair: _Pair, genes: np.ndarray, var_names: np.ndarray) -> Any:
    from .._synthetic_metrics import correlation_matrix, pearson, upper_triangle

    real = correlation_matrix(pair.real_normalized[:, genes])
    synthetic = correlation_matrix(pair.synthetic_normalized[:, genes])
    agreement = pearson(upper_triangle(real), upper_triangle(synthetic))
    image = None
    for ax, matrix, title in zip(axes, (real, synthetic), ("real", "synthetic"), strict=True):
        image = ax.imshow(matrix, cmap="RdBu_r", vmin=-1, vmax=1, interpolation="nearest")
        ax.set_title(f"{title}: correlation of top {len(genes)} genes")
        ticks = np.arange(len(genes)) if len(genes) <= 30 else []
        ax.set_xticks(ticks, var_names[genes][ticks] if len(ticks) else [], rotation=90, fontsize=6)
        ax.set_yticks(ticks, var_names[genes][ticks] if len(ticks) else [], fontsize=6)
    axes[1].set_xlabel(f"agreement with real: r = {agreement:.2f}")
    return image


def _embedding(ax: Any, pair: _Pair, n_pcs: int, seed: int) -> None:
    from .._synthetic_metrics import fit_pca

    pooled = np.vstack([pair.real_normalized, pair.synthetic_normalized])
    mean, axes = fit_pca(pooled, max(2, n_pcs), seed=seed)
    coordinates = (pooled - mean) @ axes[:, :2]
    n_real = len(pair.real_normalized)
    order = np.random.default_rng(seed).permutation(len(pooled))  # neither side drawn on top of the other
    colors = np.where(np.arange(len(pooled)) < n_real, _REAL, _SYNTHETIC)
    ax.scatter(coordinates[order, 0], coordinates[order, 1], c=colors[order], s=5, alpha=0.6, linewidths=0)
    for color, label in ((_REAL, "real"), (_SYNTHETIC, "synthetic")):
        ax.scatter([], [], color=color, s=12, label=label)
    ax.legend(frameon=False, loc="best")
    ax.set_xlabel("PC1")
    ax.set_ylabel("PC2")
    ax.set_title("PCA of real and synthetic cells, pooled")


def _log_odds(ax: Any, pair: _Pair, genes: np.ndarray, threshold: float) -> None:
    from .._synthetic_metrics import log_odds_ratios, upper_triangle

    real = upper_triangle(log_odds_ratios(pair.real[:, genes], threshold))
    synthetic = upper_triangle(log_odds_ratios(pair.synthetic[:, genes], threshold))
    _identity_scatter(ax, real, synthetic, "log odds ratio")
    ax.set_title(ax.get_title().replace("per gene", "per gene pair"))


@doc_params
def synthetic(
    adata: AnnData,
    *,
    reference: AnnData,
    layer: str | None = None,
    reference_layer: str | None = None,
    kind: str | Sequence[str] = KINDS,
    n_top_genes: int = 30,
    n_pcs: int = 30,
    binarize_threshold: float = 0.0,
    max_cells: int = 2000,
    seed: int = 0,
    ax: Any = None,
    show: bool | None = None,
    return_fig: bool = False,
) -> Any:
    """Plot synthetic cells (:func:`scdgm.tl.generate`) against real ones, as :func:`scdgm.tl.synthetic_quality` judges them.

    Panels (``kind``): per-gene ``"mean"``, ``"variance"`` (``log1p`` for counts and binary data) and
    ``"zero_fraction"`` of real against synthetic cells, with the identity line and their correlation;
    ``"correlation"``: the gene-gene correlation matrices of the ``n_top_genes`` most variable real
    genes (log-normalised), real and synthetic side by side (two panels); ``"embedding"``: the first
    two principal components of both sets of cells pooled, coloured by origin; ``"log_odds"``: log odds
    ratios of the top genes' pairs after binarising (``> binarize_threshold``), real against synthetic.

    Parameters
    ----------
    adata
        The synthetic cells.
    reference
        Real cells holding every gene of ``adata`` (matched by name), ideally held out from training.
    layer, reference_layer
        Layers of ``adata`` and ``reference`` to read instead of ``.X``.
    kind
        One panel name or several, drawn in the order given, four to a row; default all, as
        ``"correlation"``, ``"mean"``, ``"variance"``, ``"zero_fraction"``, ``"embedding"``, ``"log_odds"``.
    n_top_genes
        Genes of the correlation heatmaps and log odds ratios: the most variable in the real cells.
    n_pcs
        Principal components fitted for the embedding (two are drawn).
    binarize_threshold
        Values above it count as detected, for the log odds ratios.
    max_cells
        Cells drawn at random (seeded) from each side.
    seed
        Seeds the cells drawn and the PCA.
    ax
        Matplotlib Axes to draw into, for one panel (not ``"correlation"``, which takes two).
    {show_doc}

    Returns
    -------
    The Axes of one panel or the list of Axes in drawing order, the Figure with ``return_fig=True``,
    or ``None`` when shown. Nothing is written into ``adata`` or ``reference``.

    Examples
    --------
    >>> import scdgm as dgm
    >>> adata = dgm.datasets.pbmc68k()
    >>> dgm.tl.vae(adata)  # doctest: +SKIP
    >>> fake = dgm.tl.generate(adata, n_cells=500)  # doctest: +SKIP
    >>> dgm.pl.synthetic(fake, reference=adata)  # doctest: +SKIP
    >>> dgm.pl.synthetic(fake, reference=adata, kind="correlation")  # doctest: +SKIP
    """
    import matplotlib.pyplot as plt

    from .._checks import check_int, check_number

    kinds = chosen_kinds(kind, KINDS)
    check_int("n_top_genes", n_top_genes, minimum=2)
    check_int("n_pcs", n_pcs, minimum=2)
    check_int("max_cells", max_cells, minimum=10)
    check_number("binarize_threshold", binarize_threshold)
    n_panels = len(kinds) + kinds.count("correlation")
    if ax is not None and "correlation" in kinds:
        msg = "kind='correlation' draws two heatmaps, so it takes no ax=; pass ax=None."
        raise ValueError(msg)
    pair = _cells(adata, reference, layer, reference_layer, max_cells, seed)

    from .._synthetic_metrics import top_variable_genes

    genes = top_variable_genes(pair.real_normalized, n_top_genes)
    var_names = np.asarray(adata.var_names).astype(str)
    fig, axes = panels(n_panels, ax, what="panels", hint="pass one kind", width=4.2, height=4, ncols=4)
    if ax is None:
        fig.set_layout_engine("constrained")  # room for the heatmaps' shared colour bar
    remaining = list(axes)
    try:
        for name in kinds:
            if name == "correlation":
                pair_axes, remaining = remaining[:2], remaining[2:]
                image = _heatmaps(pair_axes, pair, genes, var_names)
                fig.colorbar(image, ax=pair_axes, shrink=0.7, label="Pearson r")
                continue
            panel, remaining = remaining[0], remaining[1:]
            if name in ("mean", "variance", "zero_fraction"):
                _marginal(panel, pair, name)
            elif name == "embedding":
                _embedding(panel, pair, n_pcs, seed)
            else:
                _log_odds(panel, pair, genes, binarize_threshold)
    except Exception:
        if ax is None:
            plt.close(fig)
        raise
    return finish(fig, axes[0] if len(axes) == 1 else axes, show=show, return_fig=return_fig)
