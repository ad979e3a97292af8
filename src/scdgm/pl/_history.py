"""``pl.history``: training and validation curves of every loss term of a trained model."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from anndata import AnnData

from .._docs import doc_params
from ._utils import finish, panels

_LABELS = {
    "elbo": "negative ELBO per cell",
    "reconstruction": "reconstruction (−log p(x|z)) per cell",
    "kl": "KL(q(z|x) ‖ p(z)) per cell",
    "loss": "training objective per cell",
    "penalty": "penalty on the parameters per cell",
    "pseudo_nll": "negative pseudo-log-likelihood per cell",
}
# A Bayesian classifier's KL is between the weights' guide and prior, spread over the training cells.
_CLASSIFIER_LABELS = {
    **_LABELS,
    "nll": "label NLL per cell",
    "kl": "KL(q(w) ‖ p(w)) / n_train",
}


def _labels(entry: dict[str, Any]) -> dict[str, str]:
    model = entry.get("model")
    class_name = model.get("class_name") if isinstance(model, Mapping) else None
    tool = entry.get("params", {}).get("tool")
    if class_name == "BayesianClassifierModule" or tool == "bayes_classify":
        return _CLASSIFIER_LABELS
    return _LABELS


@doc_params
def history(
    adata: AnnData,
    *,
    key: str = "vae",
    terms: list[str] | None = None,
    log: bool = False,
    ax: Any = None,
    show: bool | None = None,
    return_fig: bool = False,
) -> Any:
    """Plot the per-epoch training and validation curves stored by a ``tl`` model.

    Parameters
    ----------
    adata
        AnnData with ``.uns["<key>"]["history"]``.
    key
        ``key_added`` of the model.
    terms
        Loss terms to draw, one panel each; default every term recorded (``elbo``, ``reconstruction``,
        ``kl``, ...).
    log
        Logarithmic y axis.
    ax
        Axes to draw into when a single term is drawn.
    {show_doc}

    Returns
    -------
    The list of Axes (one per term), the Figure with ``return_fig=True``, or ``None`` when shown.
    The kept epoch is marked with a dotted line, the KL warm-up shaded. The y labels name each term;
    for :func:`scdgm.tl.bayes_classify` the KL is that of the weights, divided by the training cells.

    Examples
    --------
    >>> import scdgm as dgm
    >>> adata = dgm.datasets.pbmc68k()
    >>> dgm.tl.vae(adata, max_epochs=50)  # doctest: +SKIP
    >>> dgm.pl.history(adata, terms=["elbo", "kl"])  # doctest: +SKIP
    """
    entry = adata.uns.get(key)
    if not isinstance(entry, dict) or "history" not in entry:
        msg = (
            f"Did not find .uns[{key!r}]['history']. Train a model first, e.g. `dgm.tl.vae(adata, key_added={key!r})`."
        )
        raise KeyError(msg)
    hist = {name: np.asarray(values) for name, values in entry["history"].items()}
    available = sorted({name.split("_", 1)[1] for name in hist if name.startswith("train_")})
    terms = available if terms is None else list(terms)
    unknown = [t for t in terms if t not in available]
    if unknown:
        msg = f"No history for terms {unknown} in .uns[{key!r}]; recorded terms: {available}."
        raise ValueError(msg)
    fig, axes = panels(len(terms), ax, what="terms", hint="pass terms=[one term]", width=4, height=3.2)
    epochs = hist.get("epoch", np.arange(len(hist[f"train_{terms[0]}"])))
    metrics = entry.get("metrics", {})
    best = metrics.get("best_epoch")
    warm = entry.get("params", {}).get("kl_warmup_epochs", 0) or 0
    labels = _labels(entry)
    for term, panel in zip(terms, axes, strict=True):
        panel.plot(epochs, hist[f"train_{term}"], label="train")
        if f"validation_{term}" in hist:
            panel.plot(epochs, hist[f"validation_{term}"], label="validation")
        if warm:
            panel.axvspan(epochs[0], min(warm, len(epochs)) - 1, color="0.9", zorder=0, label="KL warm-up")
        if best is not None:
            panel.axvline(int(best), color="0.3", linestyle=":", label="kept epoch")
        panel.set_xlabel("epoch")
        panel.set_ylabel(labels.get(term, term))
        if log:
            panel.set_yscale("log")
        panel.set_title(term)
    axes[0].legend(frameon=False, fontsize="small")
    fig.tight_layout()
    return finish(fig, axes, show=show, return_fig=return_fig)
