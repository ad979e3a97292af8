"""``pp.binarize``: 0/1 data for the Bernoulli likelihood (binarised omics, detection patterns)."""

from __future__ import annotations

import math
from numbers import Real
from typing import Any

import numpy as np
import scipy.sparse as sp
from anndata import AnnData

from .._docs import doc_params
from .._results import write_results


def _check_arguments(threshold: Any, key_added: Any) -> None:
    if isinstance(threshold, bool | np.bool_) or not isinstance(threshold, Real):
        msg = f"threshold={threshold!r} must be a real number (e.g. threshold=0.5), got {type(threshold).__name__}."
        raise TypeError(msg)
    if not math.isfinite(threshold):
        msg = f"threshold={threshold!r} must be a finite number: every entry would land on the same side of it."
        raise ValueError(msg)
    if not isinstance(key_added, str):
        msg = f"key_added={key_added!r} must be a string naming the layer to write, e.g. key_added='binary'."
        raise TypeError(msg)
    if not key_added or "/" in key_added:
        msg = (
            f"key_added={key_added!r} must be a non-empty string without '/' (h5ad files turn '/' into nested "
            "groups), e.g. key_added='binary'."
        )
        raise ValueError(msg)


def _check_in_memory(adata: AnnData, layer: str | None, copy: bool) -> None:
    if not adata.isbacked:
        return
    if layer is None:
        msg = (
            f"pp.binarize needs the data in memory: adata is backed (on disk at {str(adata.filename)!r}) and "
            "adata.X is read from the file. Load it with `adata = adata.to_memory()` or `ad.read_h5ad(path)` "
            "without backed=, or pass layer= naming a layer (layers of a backed AnnData are in memory)."
        )
        raise ValueError(msg)
    if copy:
        msg = (
            "copy=True cannot copy a backed AnnData. Leave copy=False (the layer is written into adata, in memory) "
            "or load the data first with `adata = adata.to_memory()`."
        )
        raise ValueError(msg)


def _count_nan(X: Any) -> int:
    values = X.data if sp.issparse(X) else np.asarray(X)
    if values.dtype.kind not in "fc":
        return 0
    return int(np.count_nonzero(np.isnan(values)))


@doc_params
def binarize(
    adata: AnnData,
    *,
    layer: str | None = None,
    threshold: float = 0.0,
    key_added: str = "binary",
    copy: bool = False,
) -> AnnData | None:
    """Mark each entry as detected (1) when it exceeds ``threshold``, else 0.

    Parameters
    ----------
    adata
        Cells x features, in memory (of a backed AnnData only its in-memory layers can be read).
    layer
        Layer to read instead of ``.X``.
    threshold
        Entries strictly above it become 1 (a finite real number; ``+inf`` entries become 1, ``-inf`` 0).
    key_added
        Name of the layer written (non-empty, without ``"/"``). An existing layer of that name is replaced,
        with a warning.
    {copy_doc}

    Returns
    -------
    ``None``, or a new AnnData when ``copy=True``, with this field written:

    ``.layers["<key_added>"]``
        float32 0/1 matrix, sparse when the input is sparse (only for ``threshold >= 0``).

    Raises
    ------
    TypeError
        When ``threshold`` is not a real number (a string, a bool, ...) or ``key_added`` is not a string.
    ValueError
        When ``threshold`` is not finite, ``key_added`` is empty or holds ``"/"``, the matrix read is backed
        on disk (or ``copy=True`` on a backed AnnData), ``.X`` is empty, or the matrix holds NaN (which is
        neither detected nor absent). Nothing is written then.
    KeyError
        When ``layer`` is not in ``.layers``.

    Examples
    --------
    >>> import scdgm as dgm
    >>> adata = dgm.datasets.pbmc68k()
    >>> dgm.pp.binarize(adata, layer="counts")
    >>> dgm.tl.vae(adata, layer="binary", likelihood="bernoulli", max_epochs=20)  # doctest: +SKIP
    """
    _check_arguments(threshold, key_added)
    if layer is not None and layer not in adata.layers:
        msg = f"layer={layer!r} is not in .layers; available layers: {list(adata.layers)}."
        raise KeyError(msg)
    _check_in_memory(adata, layer, copy)
    X = adata.X if layer is None else adata.layers[layer]
    source = "adata.X" if layer is None else f"adata.layers[{layer!r}]"
    if X is None:
        msg = "adata.X is empty (None); pass layer= naming a layer that holds the data."
        raise ValueError(msg)
    n_nan = _count_nan(X)
    if n_nan:
        msg = (
            f"{source} holds {n_nan} NaN entries, which are neither detected nor absent. Fill them "
            "(e.g. with 0 when NaN means not measured) or drop the cells or features holding them, then binarize."
        )
        raise ValueError(msg)
    if sp.issparse(X) and threshold >= 0:
        binary = sp.csr_matrix(X, dtype=np.float32, copy=True)
        binary.data = (binary.data > threshold).astype(np.float32)
        binary.eliminate_zeros()
    else:
        dense = X.toarray() if sp.issparse(X) else np.asarray(X)
        binary = (dense > threshold).astype(np.float32)
    adata = adata.copy() if copy else adata
    write_results(adata, layers={key_added: binary})
    return adata if copy else None
