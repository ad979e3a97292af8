"""``pl.perturbation``: predicted perturbed cells against real ones, per-gene means and changes with their R²."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from anndata import AnnData

from .._docs import doc_params
from ._utils import chosen_kinds, finish, panels

KINDS = ("mean", "change")
"""Panels with real perturbed cells: per-gene means, and changes from the control cells."""

_ALL, _TOP = "0.6", "tab:orange"


def _matrix(adata: AnnData, layer: str | None, where: str) -> Any:
    if layer is None:
        return adata.X
    if layer not in adata.layers:
        msg = f"{where} has no .layers[{layer!r}] (layers: {list(adata.layers)})."
        raise KeyError(msg)
    return adata.layers[layer]


def _provenance(adata: AnnData, key: str) -> dict[str, Any]:
    from ..get._common import uns_entry

    entry = uns_entry(adata, key, tool="predict_perturbation")
    if "control_mean" not in entry:
        msg = f".uns[{key!r}] holds no 'control_mean': it was not written by `dgm.tl.predict_perturbation`."
        raise KeyError(msg)
    return entry


def _reference_means(adata: AnnData, reference: AnnData, layer: str | None, kind: str) -> np.ndarray:
    import pandas as pd

    from .._perturbation_metrics import mean_log_expression

    order = pd.Index(reference.var_names).get_indexer(adata.var_names)
    if (order < 0).any():
        missing = list(adata.var_names[order < 0][:5])
        msg = f"reference lacks {int((order < 0).sum())} of the predicted genes (first: {missing})."
        raise ValueError(msg)
    X = _matrix(reference, layer, "reference")
    if not np.array_equal(order, np.arange(reference.n_vars)):
        X = X[:, order]
    if reference.n_obs == 0:
        msg = "reference holds no cells: pass the real perturbed cells of the predicted group."
        raise ValueError(msg)
    return mean_log_expression(X, kind)


def _scatter(ax: Any, x: np.ndarray, y: np.ndarray, top: np.ndarray, labels: tuple[str, str], title: str) -> None:
    from .._perturbation_metrics import r_squared

    is_top = np.zeros(len(x), dtype=bool)
    is_top[top] = True
    ax.scatter(x[~is_top], y[~is_top], s=8, color=_ALL, alpha=0.6, linewidths=0, label="other genes")
    ax.scatter(x[is_top], y[is_top], s=10, color=_TOP, alpha=0.8, linewidths=0, label=f"top {len(top)} changed")
    finite = np.isfinite(x) & np.isfinite(y)
    low = float(min(x[finite].min(), y[finite].min()))
    high = float(max(x[finite].max(), y[finite].max()))
    ax.plot([low, high], [low, high], color="0.3", lw=0.8, ls="--")
    ax.set_xlabel(labels[0])
    ax.set_ylabel(labels[1])
    if title:
        r2, r2_top = r_squared(x, y), r_squared(x[top], y[top])
        ax.set_title(f"{title}: R² = {r2:.2f} (all), {r2_top:.2f} (top {len(top)})")
    ax.legend(frameon=False, loc="best", fontsize="small")


@doc_params
def perturbation(
    adata: AnnData,
    reference: AnnData | None = None,
    *,
    key: str = "perturbation",
    layer: str | None = None,
    reference_layer: str | None = None,
    kind: str | Sequence[str] = KINDS,
    n_top_genes: int = 100,
    ax: Any = None,
    show: bool | None = None,
    return_fig: bool = False,
) -> Any:
    """Plot predicted perturbed cells (:func:`scdgm.tl.predict_perturbation`) against real perturbed cells.

    Per gene, the mean ``log1p`` counts per 10,000 (values as they are for non-count models) of the
    predicted cells against those of the real perturbed cells of the same group (``"mean"``), and the
    change from the group's real control cells, predicted against real (``"change"``). Each panel
    gives R² (the squared Pearson correlation, as scGen reports it) on all genes and on the
    ``n_top_genes`` genes of largest real change, drawn in orange. Means are dominated by the genes'
    baseline expression, so leaving the cells unchanged already scores high on them; the change is
    the harder test. Without ``reference``, one panel shows the predicted means against the control
    cells' means, the top genes being those of largest predicted change.

    Parameters
    ----------
    adata
        The predicted cells, as :func:`scdgm.tl.predict_perturbation` returned them.
    reference
        The real perturbed cells of the predicted group (held out from the model), holding every gene
        of ``adata`` (matched by name).
    key
        ``key_added`` of the :func:`scdgm.tl.predict_perturbation` call (its ``.uns`` entry holds the
        control cells' means).
    layer, reference_layer
        Layers of ``adata`` and ``reference`` to read instead of ``.X``.
    kind
        ``"mean"``, ``"change"`` or both, in the order given (with ``reference`` only).
    n_top_genes
        Genes of largest change highlighted and scored apart (scGen's evaluation uses 100).
    ax
        Matplotlib Axes to draw into, for one panel.
    {show_doc}

    Returns
    -------
    The Axes of one panel or the list of Axes, the Figure with ``return_fig=True``, or ``None`` when
    shown. Nothing is written into ``adata`` or ``reference``.

    Examples
    --------
    >>> import scdgm as dgm
    >>> adata = dgm.datasets.simulate(1000, 100, n_cell_types=3, n_conditions=2, seed=0)
    >>> held_out = (adata.obs["cell_type"] == "type_0") & (adata.obs["condition"] == "condition_1")
    >>> train = adata[~held_out].copy()
    >>> dgm.tl.vae(train)  # doctest: +SKIP
    >>> predicted = dgm.tl.predict_perturbation(
    ...     train,
    ...     condition_key="condition",
    ...     control="control",
    ...     perturbed="condition_1",
    ...     groupby="cell_type",
    ...     group="type_0",
    ... )  # doctest: +SKIP
    >>> dgm.pl.perturbation(predicted, adata[held_out])  # doctest: +SKIP
    """
    import matplotlib.pyplot as plt

    from .._checks import check_int
    from .._perturbation_metrics import mean_log_expression, top_changed_genes

    kinds = chosen_kinds(kind, KINDS) if reference is not None else ["control"]
    n_top_genes = check_int("n_top_genes", n_top_genes)
    entry = _provenance(adata, key)
    value_kind = "counts" if bool(entry.get("counts", True)) else "continuous"
    control = np.asarray(entry["control_mean"], dtype=np.float64)
    if control.shape != (adata.n_vars,):
        msg = f".uns[{key!r}]['control_mean'] has {control.size} genes, adata {adata.n_vars}: it is another result."
        raise ValueError(msg)
    predicted = mean_log_expression(_matrix(adata, layer, "adata"), value_kind)
    real = None if reference is None else _reference_means(adata, reference, reference_layer, value_kind)

    fig, axes = panels(len(kinds), ax, what="panels", hint="pass one kind", width=4.5, height=4.2)
    try:
        if real is None:
            top = top_changed_genes(predicted - control, n_top_genes)
            _scatter(axes[0], control, predicted, top, ("control mean", "predicted mean"), "")
            axes[0].set_title("predicted against control (no real perturbed cells)")
        else:
            top = top_changed_genes(real - control, n_top_genes)
            for panel, name in zip(axes, kinds, strict=True):
                if name == "mean":
                    _scatter(panel, real, predicted, top, ("real mean", "predicted mean"), "mean")
                else:
                    labels = ("real change (real - control)", "predicted change")
                    _scatter(panel, real - control, predicted - control, top, labels, "change")
    except Exception:
        if ax is None:
            plt.close(fig)
        raise
    return finish(fig, axes[0] if len(axes) == 1 else axes, show=show, return_fig=return_fig)
