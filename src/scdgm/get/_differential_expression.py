"""Every field of :func:`scdgm.tl.differential_expression` as one table, like ``sc.get.rank_genes_groups_df``."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from anndata import AnnData

from ._common import select, uns_entry

_COLUMNS = (
    "names",
    "scores",
    "logfoldchanges",
    "pvals",
    "pvals_adj",
    "lfc_median",
    "lfc_sd",
    "proba_de",
    "expression_group",
    "expression_reference",
)


def differential_expression(
    adata: AnnData, group: str | Sequence[str] | None = None, *, key: str = "rank_genes_groups_vae"
) -> pd.DataFrame:
    """The results of :func:`scdgm.tl.differential_expression`, with the fields scanpy's reader leaves out.

    Parameters
    ----------
    adata
        The AnnData holding the results.
    group
        One group or several; ``None`` for every compared group.
    key
        ``key_added`` of the call (``"rank_genes_groups_<model_key>"`` by default).

    Returns
    -------
    One row per gene and group, in ranked order within each group, with columns

    ``group``
        The group (left out when one group name is given, as ``sc.get.rank_genes_groups_df`` does).
    ``names``, ``scores``, ``logfoldchanges``, ``pvals``, ``pvals_adj``
        As ``sc.get.rank_genes_groups_df`` returns them (their meaning here is in
        :func:`scdgm.tl.differential_expression`).
    ``lfc_median``, ``lfc_sd``
        Posterior median and standard deviation of the log2 fold change.
    ``proba_de``
        Posterior probability that ``|LFC| > delta``.
    ``expression_group``, ``expression_reference``
        Posterior mean normalised expression (counts per 10,000) of the group and of the reference.
    ``is_de``
        Whether the gene is called at the call's ``fdr`` (``pvals_adj <= fdr``).

    Examples
    --------
    >>> import scdgm as dgm
    >>> adata = dgm.datasets.pbmc68k()
    >>> dgm.tl.vae(adata)  # doctest: +SKIP
    >>> dgm.tl.differential_expression(adata, groupby="cell_type")  # doctest: +SKIP
    >>> table = dgm.get.differential_expression(adata, "CD19+ B")  # doctest: +SKIP
    >>> table[table["is_de"]].head()  # doctest: +SKIP
    """
    entry = uns_entry(adata, key, tool="differential_expression", extra=("groupby=...",))
    lacking = [column for column in (*_COLUMNS, "params") if column not in entry]
    if lacking:
        msg = f".uns[{key!r}] lacks {lacking}: it was not written by `dgm.tl.differential_expression`."
        raise KeyError(msg)
    available = [str(name) for name in entry["names"].dtype.names]
    chosen = [available[i] for i in select(available, group, what="group", where=f".uns[{key!r}]")]
    fdr = float(entry["params"].get("fdr", 0.05))
    tables = []
    for name in chosen:
        table = pd.DataFrame({column: np.asarray(entry[column][name]) for column in _COLUMNS})
        table["names"] = table["names"].astype(str)
        table["is_de"] = table["pvals_adj"].to_numpy() <= fdr
        table.insert(0, "group", name)
        tables.append(table)
    out = pd.concat(tables, ignore_index=True)
    out["group"] = pd.Categorical(out["group"], categories=chosen)
    if isinstance(group, str):
        out = out.drop(columns="group")
    return out
