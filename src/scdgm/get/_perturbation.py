"""The latent delta of a predicted perturbation and the groups it was learnt from, as :func:`scdgm.tl.predict_perturbation` stored them."""

from __future__ import annotations

import numpy as np
import pandas as pd
from anndata import AnnData

from ._common import names, uns_entry

_FIELDS = ("delta", "groups", "group_deltas", "n_control", "n_perturbed")


def perturbation(adata: AnnData, key: str = "perturbation") -> pd.DataFrame:
    """The latent shift of a predicted perturbation: each group's own, and the one applied.

    Parameters
    ----------
    adata
        The predicted cells, as :func:`scdgm.tl.predict_perturbation` returned them.
    key
        ``key_added`` of that call.

    Returns
    -------
    One row per group the delta was learnt from, then a last row whose ``group`` is ``"delta"``: the
    delta applied (the groups' mean, each weighted equally). Columns:

    ``group``
        The group, or ``"delta"``.
    ``n_control``, ``n_perturbed``
        Its control and perturbed cells (totals on the last row).
    ``norm``
        Euclidean length of its latent shift.
    ``cosine``
        Cosine similarity of its shift with the delta applied: near 1 when the groups respond alike in
        the latent space, the assumption of the prediction.
    ``latent_0``, ``latent_1``, ...
        The shift per latent dimension.

    Examples
    --------
    >>> import scdgm as dgm
    >>> adata = dgm.datasets.simulate(1000, 100, n_cell_types=3, n_conditions=2, seed=0)
    >>> train = adata[~((adata.obs["cell_type"] == "type_0") & (adata.obs["condition"] == "condition_1"))].copy()
    >>> dgm.tl.vae(train)  # doctest: +SKIP
    >>> predicted = dgm.tl.predict_perturbation(
    ...     train,
    ...     condition_key="condition",
    ...     control="control",
    ...     perturbed="condition_1",
    ...     groupby="cell_type",
    ...     group="type_0",
    ... )  # doctest: +SKIP
    >>> dgm.get.perturbation(predicted)[["group", "n_control", "n_perturbed", "cosine"]]  # doctest: +SKIP
    """
    entry = uns_entry(adata, key, tool="predict_perturbation", extra=("condition_key=...", "group=..."))
    lacking = [field for field in _FIELDS if field not in entry]
    if lacking:
        msg = f".uns[{key!r}] lacks {lacking}: it was not written by `dgm.tl.predict_perturbation`."
        raise KeyError(msg)
    delta = np.asarray(entry["delta"], dtype=np.float64).ravel()
    shifts = np.vstack([np.asarray(entry["group_deltas"], dtype=np.float64).reshape(-1, delta.size), delta])
    n_control = np.asarray(entry["n_control"], dtype=np.int64)
    n_perturbed = np.asarray(entry["n_perturbed"], dtype=np.int64)
    norm = np.linalg.norm(shifts, axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        cosine = shifts @ delta / (norm * np.linalg.norm(delta))
    table = pd.DataFrame(
        {
            "group": [*names(entry["groups"]), "delta"],
            "n_control": [*n_control, n_control.sum()],
            "n_perturbed": [*n_perturbed, n_perturbed.sum()],
            "norm": norm,
            "cosine": cosine,
        }
    )
    latent = pd.DataFrame(shifts, columns=[f"latent_{i}" for i in range(delta.size)])
    return pd.concat([table, latent], axis=1)
