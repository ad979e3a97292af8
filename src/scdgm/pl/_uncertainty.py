"""``pl.uncertainty``: how far to trust ``tl.bayes_classify`` — a reliability diagram and the epistemic uncertainty."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
from anndata import AnnData

from .._docs import doc_params
from .._keys import ClassifierKeys
from .._models import ModelRecord
from ._utils import chosen_kinds, finish, panels

KINDS = ("reliability", "embedding")
VALUES = {
    "epistemic": "epistemic uncertainty (nats)",
    "entropy": "predictive entropy (nats)",
    "unknown_score": "unknown score",
}


def _entry(adata: AnnData, key: str) -> dict[str, Any]:
    entry = adata.uns.get(key)
    if not isinstance(entry, dict) or "classes" not in entry:
        msg = (
            f"Did not find a Bayesian classifier in .uns[{key!r}]. "
            f"Run `dgm.tl.bayes_classify(adata, labels_key, key_added={key!r})` first."
        )
        raise KeyError(msg)
    return entry


def _check_value(value: str) -> None:
    if value not in VALUES:
        msg = f"value={value!r} is not supported. Choose one of {list(VALUES)}."
        raise ValueError(msg)


def _reliability(panel: Any, entry: dict[str, Any], key: str, color: str) -> None:
    calibration = entry.get("calibration")
    if not isinstance(calibration, dict) or "accuracy" not in calibration:
        msg = (
            f".uns[{key!r}] holds no held-out calibration (was the classifier trained with validation_fraction=0?). "
            "Hold cells out (validation_fraction > 0) to draw a reliability diagram."
        )
        raise KeyError(msg)
    edges = np.asarray(calibration["edges"], dtype=float)
    accuracy = np.asarray(calibration["accuracy"], dtype=float)
    confidence = np.asarray(calibration["confidence"], dtype=float)
    count = np.asarray(calibration["count"])
    filled = count > 0
    left, width = edges[:-1][filled], np.diff(edges)[filled]
    panel.bar(left, accuracy[filled], width=width, align="edge", color=color, edgecolor="white", label="accuracy")
    # The gap between the confidence and the accuracy of each bin: what the ECE averages.
    panel.bar(
        left,
        confidence[filled] - accuracy[filled],
        bottom=accuracy[filled],
        width=width,
        align="edge",
        color="none",
        edgecolor="tab:red",
        hatch="//",
        linewidth=0.5,
        label="gap to confidence",
    )
    # How many held-out cells each bin holds: a bar of 3 cells says little about calibration.
    tops = np.maximum(accuracy[filled], confidence[filled])
    for x, top, n in zip(left + width / 2, tops, count[filled], strict=True):
        panel.text(x, top + 0.01, f"n={int(n)}", ha="center", va="bottom", fontsize="x-small", color="0.3")
    panel.plot([0, 1], [0, 1], linestyle="--", color="0.4", linewidth=1, label="perfect calibration")
    panel.set_xlim(0, 1)
    panel.set_ylim(0, 1)
    panel.set_xlabel("confidence (mean predicted probability)")
    panel.set_ylabel("accuracy")
    ece = entry.get("metrics", {}).get("ece")
    n_cells = int(count.sum())
    title = f"reliability ({n_cells} held-out cells)"
    if ece is not None:
        title = f"ECE = {float(ece):.3f} ({n_cells} held-out cells)"
    panel.set_title(title)
    panel.legend(frameon=False, fontsize="small", loc="upper left")


def _column(adata: AnnData, entry: dict[str, Any], keys: ClassifierKeys, value: str) -> str:
    column = getattr(keys, value)
    if column not in adata.obs:
        params = entry.get("params", {})
        if params.get("tool") == "bayes_predict":
            run = f"dgm.tl.bayes_predict(adata, reference, key={params.get('key')!r}, key_added={keys.stem!r})"
        else:
            run = f"dgm.tl.bayes_classify(adata, labels_key, key_added={keys.stem!r})"
        msg = f"Did not find .obs[{column!r}] (value={value!r}). Run `{run}` first."
        raise KeyError(msg)
    return column


def _title(adata: AnnData, keys: ClassifierKeys, value: str) -> str:
    if keys.unknown not in adata.obs:
        return VALUES[value]
    flagged = int(np.asarray(adata.obs[keys.unknown], dtype=bool).sum())
    return f"{VALUES[value]} ({flagged} of {adata.n_obs} flagged unknown)"


def _use_rep(entry: dict[str, Any], key: str) -> Any:
    """The input the classifier read, from its stored model record (``bayes_predict`` copies it)."""
    if "model" not in entry:
        return entry.get("params", {}).get("use_rep")
    return ModelRecord.from_uns(entry["model"], key=key).input.get("use_rep")


def _embedding(
    adata: AnnData,
    panel: Any,
    entry: dict[str, Any],
    keys: ClassifierKeys,
    *,
    value: str,
    vmax: float | None,
    basis: str | None,
    method: str,
    **kwargs: Any,
) -> Any:
    import scanpy as sc

    from ._latent import latent

    color = _column(adata, entry, keys, value)
    kwargs.setdefault("title", _title(adata, keys, value))
    kwargs.setdefault("color_map", "viridis")
    kwargs["vmax"] = float(np.nanpercentile(adata.obs[color].to_numpy(dtype=float), 99)) if vmax is None else vmax
    if basis is not None:
        if basis not in adata.obsm:
            msg = f"basis={basis!r} is not in adata.obsm (available: {list(adata.obsm.keys())})."
            raise KeyError(msg)
        return sc.pl.embedding(adata, basis=basis, color=color, ax=panel, show=False, **kwargs)
    use_rep = _use_rep(entry, keys.stem)
    if use_rep is None or not str(use_rep).startswith("X_"):
        where = "genes" if use_rep is None else f".obsm[{use_rep!r}]"
        msg = (
            f"The classifier in .uns[{keys.stem!r}] was trained on {where}, which pl.uncertainty cannot lay out by "
            "itself: pass basis= naming a 2-D embedding in .obsm (e.g. basis='X_umap' after `sc.tl.umap`)."
        )
        raise ValueError(msg)
    return latent(adata, key=str(use_rep)[2:], color=color, method=method, ax=panel, show=False, **kwargs)


@doc_params
def uncertainty(
    adata: AnnData,
    *,
    key: str = "bayes",
    kind: str | Sequence[str] = KINDS,
    value: Literal["epistemic", "entropy", "unknown_score"] = "epistemic",
    vmax: float | None = None,
    basis: str | None = None,
    method: Literal["umap", "tsne", "pca", "none"] = "umap",
    color: str = "tab:blue",
    ax: Any = None,
    show: bool | None = None,
    return_fig: bool = False,
    **kwargs: Any,
) -> Any:
    """Plot how far the predictions of :func:`scdgm.tl.bayes_classify` can be trusted.

    Two panels: a reliability diagram of the held-out cells (``"reliability"``) — bars of the accuracy
    per confidence bin from ``.uns[key]["calibration"]``, hatched up to the bin's mean confidence and
    labelled with the bin's number of cells (``"n=..."``), with the diagonal of perfect calibration and
    the expected calibration error in the title — and the embedding of the cells coloured by their
    epistemic uncertainty, ``.obs["<key>_epistemic"]`` (or another ``value``; ``"embedding"``), where
    cells of types the classifier never saw stand out; its title counts the cells flagged in
    ``.obs["<key>_unknown"]``. For a :func:`scdgm.tl.bayes_predict` result the reliability diagram is
    the reference's held-out calibration, which ``bayes_predict`` copies.

    Parameters
    ----------
    adata
        AnnData that :func:`scdgm.tl.bayes_classify` (or :func:`scdgm.tl.bayes_predict`) wrote into.
    key
        ``key_added`` of that call.
    kind
        ``"reliability"``, ``"embedding"``, or both (default), one panel each, in that order.
    value
        What colours the embedding: the ``.obs["<key>_<value>"]`` column of epistemic uncertainty
        (``"epistemic"``), total predictive entropy (``"entropy"``) or the score of cells unlike every
        training class (``"unknown_score"``).
    vmax
        Top of the colour scale; default the 99th percentile of the plotted values, so that a few
        outliers do not wash out the scale. Pass the same ``vmax`` to plots of several AnnData (e.g. a
        reference and a query) to make their colours comparable.
    basis
        ``.obsm`` key of a 2-D embedding to draw (e.g. ``"X_umap"``). By default the classifier's
        input ``use_rep`` (e.g. ``"X_vae"``, read from the stored model record) laid out by
        :func:`scdgm.pl.latent` (UMAP, cached in ``.obsm["X_vae_umap"]``); a classifier trained on
        genes needs ``basis``.
    method
        Layout of the default embedding, as in :func:`scdgm.pl.latent` (``"umap"``, ``"tsne"``,
        ``"pca"``, or ``"none"`` for the first two dimensions); unused with ``basis``.
    color
        Colour of the accuracy bars.
    ax
        Matplotlib Axes to draw into, when one ``kind`` is drawn.
    {show_doc}
    **kwargs
        Passed on to :func:`scanpy.pl.embedding` for the embedding (``color_map``, ``vmin``, ``size``, ``title``, ...).

    Returns
    -------
    The Axes of one panel or the list of Axes (reliability first), the Figure with
    ``return_fig=True``, or ``None`` when shown. Drawing the default embedding may write the cached
    2-D view of :func:`scdgm.pl.latent` (``.obsm["<use_rep>_umap"]``).

    Examples
    --------
    >>> import scdgm as dgm
    >>> adata = dgm.datasets.pbmc68k()
    >>> dgm.tl.vae(adata)  # doctest: +SKIP
    >>> dgm.tl.bayes_classify(adata, "cell_type")  # doctest: +SKIP
    >>> dgm.pl.uncertainty(adata)  # doctest: +SKIP
    >>> dgm.pl.uncertainty(adata, kind="reliability")  # doctest: +SKIP
    >>> dgm.pl.uncertainty(adata, kind="embedding", value="entropy", vmax=1.0)  # doctest: +SKIP
    """
    import matplotlib.pyplot as plt

    entry = _entry(adata, key)
    kinds = chosen_kinds(kind, KINDS)
    _check_value(value)
    fig, axes = panels(
        len(kinds), ax, what="kinds", hint="pass kind='reliability' or 'embedding',", width=4.6, height=4
    )
    keys = ClassifierKeys(key)
    try:
        for name, panel in zip(kinds, axes, strict=True):
            if name == "reliability":
                _reliability(panel, entry, key, color)
            else:
                _embedding(adata, panel, entry, keys, value=value, vmax=vmax, basis=basis, method=method, **kwargs)
    except Exception:
        if ax is None:
            plt.close(fig)
        raise
    if ax is None:
        fig.tight_layout()
    return finish(fig, axes[0] if len(axes) == 1 else axes, show=show, return_fig=return_fig)
