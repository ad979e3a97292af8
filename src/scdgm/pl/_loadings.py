"""``pl.loadings``: the genes that weigh most on each factor of a linearly decoded VAE."""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
from anndata import AnnData

from .._docs import doc_params
from .._keys import LoadingsKeys
from ._utils import finish, panels


@doc_params
def loadings(
    adata: AnnData,
    *,
    key: str = "ldvae",
    factors: list[int] | None = None,
    n_top: int = 10,
    direction: Literal["positive", "negative", "both"] = "both",
    ncols: int = 4,
    ax: Any = None,
    show: bool | None = None,
    return_fig: bool = False,
) -> Any:
    """Bar plots of the genes with the largest loadings on each factor.

    Parameters
    ----------
    adata
        AnnData with ``.varm["<key>_loadings"]`` from :func:`scdgm.tl.ldvae_loadings`.
    key
        ``key_added`` of that call.
    factors
        Factor indices to draw; default all.
    n_top
        Genes per factor and direction.
    direction
        Largest positive loadings, most negative ones, or both.
    ncols
        Panels per row.
    ax
        Axes to draw into when one factor is drawn.
    {show_doc}

    Returns
    -------
    The list of Axes (one per factor), the Figure with ``return_fig=True``, or ``None`` when shown.

    Examples
    --------
    >>> import scdgm as dgm
    >>> adata = dgm.datasets.pbmc68k()
    >>> dgm.tl.ldvae_loadings(adata, max_epochs=100)  # doctest: +SKIP
    >>> dgm.pl.loadings(adata, factors=[0, 1, 2], n_top=8)  # doctest: +SKIP
    """
    keys = LoadingsKeys(key)
    if keys.varm not in adata.varm:
        msg = f"Did not find .varm[{keys.varm!r}]. Run `dgm.tl.ldvae_loadings(adata, key_added={key!r})` first."
        raise KeyError(msg)
    if direction not in {"positive", "negative", "both"}:
        msg = f"direction={direction!r} is not supported. Choose 'positive', 'negative' or 'both'."
        raise ValueError(msg)
    values = np.nan_to_num(np.asarray(adata.varm[keys.varm]))
    n_factors = values.shape[1]
    factors = list(range(n_factors)) if factors is None else list(factors)
    bad = [f for f in factors if not 0 <= f < n_factors]
    if bad:
        msg = f"factors {bad} are out of range: the loadings have {n_factors} factors (0 to {n_factors - 1})."
        raise ValueError(msg)
    per_panel = n_top * (2 if direction == "both" else 1)
    fig, axes = panels(
        len(factors),
        ax,
        what="factors",
        hint="pass factors=[k]",
        width=3.2,
        height=0.22 * per_panel,
        ncols=ncols,
        extra_height=1,
    )
    names = np.asarray(adata.var_names)
    for factor, panel in zip(factors, axes, strict=True):
        order = np.argsort(values[:, factor], kind="stable")
        chosen = []
        if direction in {"negative", "both"}:
            chosen.extend(order[:n_top])
        if direction in {"positive", "both"}:
            chosen.extend(order[::-1][:n_top][::-1])
        chosen = np.asarray(chosen)
        heights = values[chosen, factor]
        panel.barh(np.arange(len(chosen)), heights, color=np.where(heights >= 0, "#c0392b", "#2e6fa7"))
        panel.set_yticks(np.arange(len(chosen)), names[chosen], fontsize="small")
        panel.axvline(0, color="0.3", linewidth=0.8)
        panel.set_title(f"factor {factor}")
        panel.set_xlabel("loading")
    fig.tight_layout()
    return finish(fig, axes, show=show, return_fig=return_fig)
