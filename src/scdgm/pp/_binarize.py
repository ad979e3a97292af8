"""``pp.binarize``: 0/1 data for the Bernoulli likelihood (binarised omics, detection patterns)."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from anndata import AnnData

from .._results import write_results


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
        Cells x features.
    layer
        Layer to read instead of ``.X``.
    threshold
        Entries strictly above it become 1.
    key_added
        Name of the layer written.
    copy
        Return a new AnnData instead of writing into ``adata``.

    Returns
    -------
    ``None``, or a new AnnData when ``copy=True``, with this field written:

    ``.layers["<key_added>"]``
        float32 0/1 matrix, sparse when the input is sparse (only for ``threshold >= 0``).

    Examples
    --------
    >>> import scdgm as dgm
    >>> adata = dgm.datasets.pbmc68k()
    >>> dgm.pp.binarize(adata, layer="counts")
    >>> dgm.tl.vae(adata, layer="binary", likelihood="bernoulli", max_epochs=20)  # doctest: +SKIP
    """
    if layer is not None and layer not in adata.layers:
        msg = f"layer={layer!r} is not in .layers; available layers: {list(adata.layers)}."
        raise KeyError(msg)
    X = adata.X if layer is None else adata.layers[layer]
    if X is None:
        msg = "adata.X is empty (None); pass layer= naming a layer that holds the data."
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
