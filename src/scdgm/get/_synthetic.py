"""The quality table of synthetic cells, as :func:`scdgm.tl.synthetic_quality` stored it."""

from __future__ import annotations

import numpy as np
import pandas as pd
from anndata import AnnData

from ._common import names, uns_entry

_COLUMNS = ("comparison", "group", "metric", "value")


def synthetic_quality(adata: AnnData, key: str = "synthetic_quality", *, wide: bool = False) -> pd.DataFrame:
    """Quality metrics of synthetic cells next to their real-vs-real control, one row per metric or per comparison.

    Parameters
    ----------
    adata
        The synthetic cells, holding the result of :func:`scdgm.tl.synthetic_quality`.
    key
        ``key_added`` of that call.
    wide
        One row per comparison and group, one column per metric, instead of one row per metric.

    Returns
    -------
    With ``wide=False``, the tidy table the tool returned, with columns

    ``comparison``
        ``"synthetic"`` (synthetic cells against half A of the reference) or ``"control"`` (half B against A).
    ``group``
        ``"all"``, or a group of the ``groupby`` column.
    ``metric``
        The metric's name (see :func:`scdgm.tl.synthetic_quality`).
    ``value``
        Its value.

    With ``wide=True``, columns ``comparison``, ``group`` and then one per metric, in the stored order.

    Examples
    --------
    >>> import scdgm as dgm
    >>> real = dgm.datasets.simulate(400, 50, seed=0)
    >>> synthetic, held_out = real[::2].copy(), real[1::2].copy()
    >>> _ = dgm.tl.synthetic_quality(synthetic, reference=held_out, n_permutations=99)  # doctest: +SKIP
    >>> dgm.get.synthetic_quality(synthetic, wide=True)[["comparison", "classifier_auroc"]]  # doctest: +SKIP
    """
    entry = uns_entry(adata, key, tool="synthetic_quality", extra=("reference=real_cells",))
    lacking = [column for column in _COLUMNS if column not in entry]
    if lacking:
        msg = f".uns[{key!r}] lacks {lacking}: it was not written by `dgm.tl.synthetic_quality`."
        raise KeyError(msg)
    table = pd.DataFrame(
        {
            "comparison": names(entry["comparison"]),
            "group": names(entry["group"]),
            "metric": names(entry["metric"]),
            "value": np.asarray(entry["value"], dtype=np.float64),
        }
    )
    if not wide:
        return table
    wide_table = table.pivot(index=["comparison", "group"], columns="metric", values="value")
    rows = table[["comparison", "group"]].drop_duplicates()
    wide_table = wide_table.loc[list(rows.itertuples(index=False, name=None)), list(dict.fromkeys(table["metric"]))]
    wide_table.columns.name = None
    return wide_table.reset_index()
