"""``pl.attributions``: the genes with the largest integrated-gradients attributions, per target."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
from anndata import AnnData

from .._docs import doc_params
from .._keys import AttributionKeys
from ._utils import finish


def _chosen_targets(targets: Sequence[int | str] | None, names: list[str]) -> list[int]:
    if targets is None:
        return list(range(len(names)))
    out = []
    for t in [targets] if isinstance(targets, str | int | np.integer) else targets:
        if isinstance(t, str):
            if t not in names:
                msg = f"target {t!r} is not one of {names}."
                raise KeyError(msg)
            out.append(names.index(t))
        elif 0 <= int(t) < len(names):
            out.append(int(t))
        else:
            msg = f"target index {t} is out of range: there are {len(names)} targets (0 to {len(names) - 1})."
            raise IndexError(msg)
    return out


def _top_genes(values: np.ndarray, magnitude: np.ndarray, n_top: int, rank_by: str) -> list[int]:
    """Union, in order of first appearance, of each column's ``n_top`` genes.

    Not :func:`scdgm.tl._common.top_genes_entry`: a plot needs one gene axis for all targets and a
    choice of score (``rank_by``), and ties keep the lower gene index first.
    """
    genes: list[int] = []
    for k in range(values.shape[1]):
        score = {"absolute": magnitude[:, k], "positive": values[:, k], "negative": -values[:, k]}[rank_by]
        for g in np.argsort(-score, kind="stable")[:n_top]:
            if g not in genes:
                genes.append(int(g))
    return genes


@doc_params
def attributions(
    adata: AnnData,
    *,
    key: str = "ig_vae",
    targets: Sequence[int | str] | None = None,
    n_top: int = 10,
    kind: Literal["heatmap", "dotplot"] = "heatmap",
    rank_by: Literal["absolute", "positive", "negative"] = "absolute",
    group: str | None = None,
    groupby: str | None = None,
    cmap: str = "RdBu_r",
    ax: Any = None,
    show: bool | None = None,
    return_fig: bool = False,
) -> Any:
    """Top genes per target of :func:`scdgm.tl.integrated_gradients`, as a heatmap or a dot plot.

    Rows are targets (latent factors or classes), columns the union of each target's ``n_top``
    genes. The colour is the mean attribution (red raises the target, blue lowers it); in the dot
    plot the dot area is the mean absolute attribution. With ``groupby``, each class is averaged over
    its own cells: the row of class ``t`` holds the mean attribution to ``t`` of the cells of group
    ``t``, the question "which genes make these cells this class".

    Parameters
    ----------
    adata
        AnnData with the results of :func:`scdgm.tl.integrated_gradients`.
    key
        ``key_added`` of that call (``"ig_<model_key>"`` by default).
    targets
        Targets (indices or names) to show; default all.
    n_top
        Genes per target.
    kind
        ``"heatmap"`` or ``"dotplot"``.
    rank_by
        Pick each target's genes by mean absolute attribution, or by the most positive or most
        negative mean attribution.
    group
        Show the mean attributions of the cells of this group (the call needs ``groupby=``) instead
        of all cells; the dot sizes stay those of all cells.
    groupby
        The ``groupby`` column the call was given: one row per class, averaged over the cells of the
        group of the same name (see :func:`scdgm.get.attributions`); genes are picked per row from
        those means, and the dot area is their absolute value. Rows are the targets that name a group
        with attributed cells (all of ``targets`` must). Not with ``group``.
    cmap
        Diverging colormap, centred at zero.
    ax
        Axes to draw into.
    {show_doc}

    Returns
    -------
    The Axes, the Figure with ``return_fig=True``, or ``None`` when shown.

    Examples
    --------
    >>> import scdgm as dgm
    >>> adata = dgm.datasets.simulate(500, 100, seed=0)
    >>> dgm.tl.vae(adata, n_latent=5, max_epochs=20)  # doctest: +SKIP
    >>> dgm.tl.integrated_gradients(adata)  # doctest: +SKIP
    >>> dgm.pl.attributions(adata, key="ig_vae", n_top=5, kind="dotplot")  # doctest: +SKIP
    >>> dgm.tl.bayes_classify(adata, "cell_type")  # doctest: +SKIP
    >>> dgm.tl.integrated_gradients(adata, model_key="bayes", groupby="cell_type")  # doctest: +SKIP
    >>> dgm.pl.attributions(adata, key="ig_bayes", groupby="cell_type", rank_by="positive")  # doctest: +SKIP
    """
    import matplotlib.pyplot as plt
    from matplotlib.colors import TwoSlopeNorm

    keys = AttributionKeys(key)
    if keys.varm not in adata.varm or keys.uns not in adata.uns:
        msg = f"Did not find .varm[{keys.varm!r}]. Run `dgm.tl.integrated_gradients(adata, key_added={key!r})` first."
        raise KeyError(msg)
    if kind not in {"heatmap", "dotplot"}:
        msg = f"kind={kind!r} is not supported. Choose 'heatmap' or 'dotplot'."
        raise ValueError(msg)
    if rank_by not in {"absolute", "positive", "negative"}:
        msg = f"rank_by={rank_by!r} is not supported. Choose 'absolute', 'positive' or 'negative'."
        raise ValueError(msg)
    if isinstance(n_top, bool) or not isinstance(n_top, int | np.integer) or n_top < 1:
        msg = f"n_top must be an integer >= 1, not {n_top!r}."
        raise ValueError(msg)
    if group is not None and groupby is not None:
        msg = "Pass group= (one group, every target) or groupby= (each class over its own cells), not both."
        raise ValueError(msg)
    entry = adata.uns[keys.uns]
    names = [str(n) for n in np.asarray(entry["targets"]).tolist()]
    chosen = _chosen_targets(targets, names)
    values = np.nan_to_num(np.asarray(adata.varm[keys.varm], dtype=np.float64))
    if groupby is not None:
        from ..get._attributions import own_group_means

        paired, own = own_group_means(adata, key, groupby, None if targets is None else [names[t] for t in chosen])
        chosen = [names.index(t) for t in paired]
        values = np.zeros_like(values)
        values[:, chosen] = np.nan_to_num(own)
    elif group is not None:
        group_means = dict(entry.get("group_means", {}))
        if "groups" not in group_means:
            msg = f"{key!r} has no group means; run `dgm.tl.integrated_gradients(adata, groupby=...)` first."
            raise KeyError(msg)
        groups = [str(g) for g in np.asarray(group_means["groups"]).tolist()]
        if str(group) not in groups:
            msg = f"group {group!r} is not one of {groups}."
            raise KeyError(msg)
        values = np.nan_to_num(np.asarray(group_means["values"][groups.index(str(group))], dtype=np.float64))
    magnitude = np.nan_to_num(np.asarray(adata.varm.get(keys.varm_abs, np.abs(values)), dtype=np.float64))
    values, magnitude = values[:, chosen], magnitude[:, chosen]
    by_groups = group is not None or groupby is not None
    genes = _top_genes(values, np.abs(values) if by_groups else magnitude, n_top, rank_by)
    shown = values[genes].T  # targets x genes
    gene_names = np.asarray(adata.var_names)[genes]
    target_names = [names[t] for t in chosen]

    if ax is None:
        fig, ax = plt.subplots(figsize=(max(4.0, 0.28 * len(genes) + 2.0), max(2.0, 0.35 * len(chosen) + 1.5)))
    else:
        fig = ax.figure
    limit = float(np.abs(shown).max()) or 1.0
    norm = TwoSlopeNorm(vcenter=0.0, vmin=-limit, vmax=limit)
    if kind == "heatmap":
        image = ax.imshow(shown, aspect="auto", cmap=cmap, norm=norm, interpolation="nearest")
    else:
        sizes = np.abs(shown) if groupby is not None else magnitude[genes].T
        area = 300.0 * sizes / (float(sizes.max()) or 1.0)
        rows, cols = np.meshgrid(np.arange(len(chosen)), np.arange(len(genes)), indexing="ij")
        image = ax.scatter(
            cols.ravel(), rows.ravel(), s=area.ravel(), c=shown.ravel(), cmap=cmap, norm=norm, edgecolors="0.3"
        )
        ax.set_xlim(-0.5, len(genes) - 0.5)
        ax.set_ylim(len(chosen) - 0.5, -0.5)
        ax.grid(True, color="0.92", zorder=0)
        ax.set_axisbelow(True)
    ax.set_xticks(np.arange(len(genes)), gene_names, rotation=90, fontsize="small")
    ax.set_yticks(np.arange(len(chosen)), target_names)
    title = f"integrated gradients ({key})" + (f", {group}" if group is not None else "")
    if groupby is not None:
        title += f", each class in its own cells ({groupby})"
    ax.set_title(title)
    fig.colorbar(image, ax=ax, label="mean attribution", shrink=0.8)
    fig.tight_layout()
    return finish(fig, ax, show=show, return_fig=return_fig)
