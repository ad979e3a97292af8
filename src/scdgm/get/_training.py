"""Per-epoch training history and summary metrics of a trained model."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd
from anndata import AnnData

from ._common import uns_entry

SPLITS = ("train", "validation")


def history(adata: AnnData, key: str = "vae", *, long: bool = False) -> pd.DataFrame:
    """Per-epoch training history of a model: loss terms on training and held-out cells.

    Parameters
    ----------
    adata
        Annotated data matrix holding a trained model, e.g. from :func:`scdgm.tl.vae`,
        :func:`scdgm.tl.ldvae_loadings` or :func:`scdgm.tl.bayes_classify`.
    key
        ``.uns`` key of the model (``key_added`` of that call).
    long
        Return the loss terms as a tidy table (one row per epoch, split and term) instead of one
        row per epoch.

    Returns
    -------
    With ``long=False``, one row per epoch with the columns of ``.uns[key]["history"]``, ``epoch``
    first: ``kl_weight``, ``epoch_seconds`` (wall time of the epoch's training steps; runs from
    scdgm 0.3 on) and ``train_<term>`` / ``validation_<term>`` (``loss``, ``elbo``, ...).

    With ``long=True``, the ``train_`` and ``validation_`` columns only, with columns

    ``epoch``
        0-based epoch.
    ``split``
        ``"train"`` or ``"validation"``.
    ``term``
        Loss term, e.g. ``"loss"`` or ``"elbo"``.
    ``value``
        Its mean over the split's cells in that epoch.

    Examples
    --------
    >>> import scdgm as dgm
    >>> adata = dgm.datasets.simulate(300, 60, seed=0)
    >>> dgm.tl.vae(adata, n_latent=4, max_epochs=20)  # doctest: +SKIP
    >>> dgm.get.history(adata)[["epoch", "train_elbo", "validation_elbo"]]  # doctest: +SKIP
    >>> dgm.get.history(adata, long=True).query("term == 'elbo'")  # doctest: +SKIP
    """
    stored = uns_entry(adata, key, tool="vae", field="history")
    columns = {name: np.asarray(values).ravel() for name, values in stored.items()}
    lengths = {name: len(values) for name, values in columns.items()}
    if len(set(lengths.values())) > 1:
        msg = f".uns[{key!r}]['history'] holds columns of different lengths: {lengths}."
        raise ValueError(msg)
    wide = pd.DataFrame(columns)
    if "epoch" not in wide:
        wide["epoch"] = np.arange(len(wide))
    wide = wide[["epoch", *(c for c in wide.columns if c != "epoch")]]
    if not long:
        return wide
    terms = [c for c in wide.columns if c.split("_", 1)[0] in SPLITS and "_" in c]
    table = wide.melt(id_vars="epoch", value_vars=terms, var_name="column", value_name="value")
    parts = table["column"].str.split("_", n=1, expand=True)
    table = table.assign(split=parts[0], term=parts[1]) if len(table) else table.assign(split=[], term=[])
    return table[["epoch", "split", "term", "value"]]


def metrics(adata: AnnData, key: str = "vae") -> pd.Series:
    """Summary metrics of a trained model (held-out ELBO, accuracy, training time, ...).

    Parameters
    ----------
    adata
        Annotated data matrix holding a trained model, e.g. from :func:`scdgm.tl.vae` or
        :func:`scdgm.tl.bayes_classify`.
    key
        ``.uns`` key of the model (``key_added`` of that call).

    Returns
    -------
    A Series named ``key``, indexed by metric name, of the scalar entries of
    ``.uns[key]["metrics"]`` (entries that are arrays or mappings are left out).

    Examples
    --------
    >>> import scdgm as dgm
    >>> adata = dgm.datasets.simulate(300, 60, seed=0)
    >>> dgm.tl.vae(adata, n_latent=4, max_epochs=20)  # doctest: +SKIP
    >>> dgm.get.metrics(adata)["validation_elbo"]  # doctest: +SKIP
    """
    stored = uns_entry(adata, key, tool="vae", field="metrics")
    scalars = {}
    for name, value in stored.items():
        if isinstance(value, Mapping) or np.ndim(value) != 0:
            continue
        scalars[name] = value.item() if isinstance(value, np.ndarray | np.generic) else value
    return pd.Series(scalars, name=key, dtype=None if scalars else float).rename_axis("metric")
