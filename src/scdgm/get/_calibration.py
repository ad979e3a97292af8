"""Held-out calibration of a Bayesian classifier: accuracy against confidence per bin."""

from __future__ import annotations

import numpy as np
import pandas as pd
from anndata import AnnData

from ._common import run_hint, uns_entry


def calibration(adata: AnnData, key: str = "bayes") -> pd.DataFrame:
    """Reliability table of a classifier's held-out cells, one row per confidence bin.

    Parameters
    ----------
    adata
        Annotated data matrix holding the result of :func:`scdgm.tl.bayes_classify`.
    key
        ``key_added`` of that call.

    Returns
    -------
    A DataFrame with one row per bin of the predicted label's probability, with columns

    ``bin_lower``, ``bin_upper``
        Bin edges (a bin holds confidences in ``(lower, upper]``, the first also ``lower``).
    ``confidence``
        Mean confidence of the held-out cells in the bin; NaN for an empty bin.
    ``accuracy``
        Fraction of them predicted correctly; NaN for an empty bin.
    ``count``
        Number of held-out cells in the bin.

    Examples
    --------
    >>> import scdgm as dgm
    >>> adata = dgm.datasets.simulate(300, 60, seed=0)
    >>> dgm.tl.vae(adata, n_latent=4)  # doctest: +SKIP
    >>> dgm.tl.bayes_classify(adata, "cell_type")  # doctest: +SKIP
    >>> table = dgm.get.calibration(adata)  # doctest: +SKIP
    >>> (table["count"] * (table["accuracy"] - table["confidence"]).abs()).sum() / table[
    ...     "count"
    ... ].sum()  # doctest: +SKIP
    """
    stored = uns_entry(adata, key, tool="bayes_classify", field="calibration")
    if len(stored) == 0:
        msg = (
            f".uns[{key!r}]['calibration'] is empty: the classifier held out no cells to calibrate on. "
            f"Run `{run_hint(key, 'bayes_classify', 'validation_fraction=0.2')}` to hold some out."
        )
        raise ValueError(msg)
    edges = np.asarray(stored["edges"], dtype=np.float64)
    return pd.DataFrame(
        {
            "bin_lower": edges[:-1],
            "bin_upper": edges[1:],
            "confidence": np.asarray(stored["confidence"], dtype=np.float64),
            "accuracy": np.asarray(stored["accuracy"], dtype=np.float64),
            "count": np.asarray(stored["count"], dtype=np.int64),
        }
    )
