"""The gene patterns :func:`scdgm.tl.pattern_extractor` found, as tidy tables."""

from __future__ import annotations

from typing import Literal

import numpy as np
import pandas as pd
from anndata import AnnData

from ._common import names, uns_entry

_FIELDS = ("genes", "deviance", "hidden_units", "patterns", "labels", "frequency", "frequency_observed", "coordinates")


def patterns(
    adata: AnnData, key: str = "patterns", *, table: Literal["patterns", "genes"] = "patterns"
) -> pd.DataFrame:
    """The patterns a model learned (one row per pattern), or the genes selected to form them (one row per gene).

    Parameters
    ----------
    adata
        Annotated data matrix holding the result of :func:`scdgm.tl.pattern_extractor`.
    key
        ``key_added`` of that call.
    table
        ``"patterns"`` or ``"genes"``.

    Returns
    -------
    With ``table="patterns"``, most frequent pattern first, columns

    ``pattern``
        The pattern as a string of 0/1 states, one per selected gene, in selection order.
    ``frequency``
        Share of the synthetic observations showing it.
    ``frequency_observed``
        Share of the cells of ``adata`` showing it.
    ``x``, ``y``
        Its coordinates (classical MDS of the square-root Jensen-Shannon distances).
    ``<gene>``
        One column per selected gene: its state (0/1) in the pattern.

    With ``table="genes"``, in selection order, columns

    ``step``
        0-based step at which the gene joined.
    ``gene``
        Gene name.
    ``deviance``
        ``G^2`` of the model without the gene's association, at that step.
    ``hidden_unit``
        The hidden unit whose table gave that deviance.

    Examples
    --------
    >>> import scdgm as dgm
    >>> adata = dgm.datasets.pbmc68k()
    >>> dgm.tl.pattern_extractor(adata, model_key="dbm")  # doctest: +SKIP
    >>> dgm.get.patterns(adata).head()  # doctest: +SKIP
    >>> dgm.get.patterns(adata, table="genes")  # doctest: +SKIP
    """
    entry = uns_entry(adata, key, tool="pattern_extractor")
    lacking = [field for field in _FIELDS if field not in entry]
    if lacking:
        msg = f".uns[{key!r}] lacks {lacking}: it was not written by `dgm.tl.pattern_extractor`."
        raise KeyError(msg)
    genes = names(entry["genes"])
    if table == "genes":
        return pd.DataFrame(
            {
                "step": np.arange(len(genes)),
                "gene": genes,
                "deviance": np.asarray(entry["deviance"], dtype=np.float64),
                "hidden_unit": np.asarray(entry["hidden_units"], dtype=np.int64),
            }
        )
    if table != "patterns":
        msg = f"table={table!r} is not supported. Choose 'patterns' or 'genes'."
        raise ValueError(msg)
    states = np.asarray(entry["patterns"], dtype=np.int8).reshape(-1, len(genes))
    coordinates = np.asarray(entry["coordinates"], dtype=np.float64).reshape(len(states), -1)
    out = pd.DataFrame(
        {
            "pattern": names(entry["labels"]),
            "frequency": np.asarray(entry["frequency"], dtype=np.float64),
            "frequency_observed": np.asarray(entry["frequency_observed"], dtype=np.float64),
            "x": coordinates[:, 0],
            "y": coordinates[:, 1],
        }
    )
    for i, gene in enumerate(genes):
        out[gene] = states[:, i]
    return out
