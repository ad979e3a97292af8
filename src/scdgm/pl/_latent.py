"""``pl.latent``: a 2-D view of a learned latent space, drawn with scanpy's embedding plot."""

from __future__ import annotations

import hashlib
from typing import Any, Literal

import numpy as np
from anndata import AnnData

from .._docs import doc_params
from .._keys import ModelKeys
from .._settings import logger
from ._utils import finish

METHODS = ("umap", "tsne", "pca", "none")


def _fingerprint(latent: np.ndarray, method: str, n_neighbors: int, seed: int) -> str:
    digest = hashlib.blake2b(np.ascontiguousarray(latent, dtype=np.float32).tobytes(), digest_size=16)
    digest.update(f"{method}|{n_neighbors}|{seed}".encode())
    return digest.hexdigest()


def _project(latent: np.ndarray, method: str, *, n_neighbors: int, seed: int) -> np.ndarray:
    import scanpy as sc

    view = AnnData(np.zeros((latent.shape[0], 0), dtype=np.float32))
    view.obsm["X_latent"] = latent
    if method == "pca":
        centred = latent - latent.mean(axis=0)
        _, _, vt = np.linalg.svd(centred, full_matrices=False)
        return centred @ vt[:2].T
    sc.pp.neighbors(view, use_rep="X_latent", n_neighbors=n_neighbors, random_state=seed)
    if method == "umap":
        sc.tl.umap(view, random_state=seed)
        return view.obsm["X_umap"]
    sc.tl.tsne(view, use_rep="X_latent", random_state=seed)
    return view.obsm["X_tsne"]


@doc_params
def latent(
    adata: AnnData,
    *,
    key: str = "vae",
    color: str | list[str] | None = None,
    method: Literal["umap", "tsne", "pca", "none"] = "umap",
    n_neighbors: int = 15,
    seed: int = 0,
    ax: Any = None,
    show: bool | None = None,
    return_fig: bool = False,
    **kwargs: Any,
) -> Any:
    """Plot the latent space of a trained model in two dimensions, coloured by ``.obs`` or genes.

    The 2-D view is computed with scanpy from ``.obsm["X_<key>"]`` and cached in
    ``.obsm["X_<key>_<method>"]``; it is recomputed only when the latent space (or the view's settings)
    changed since, which a fingerprint in ``.uns["<key>"]["views"]`` records. An ``.obsm["X_<key>_<method>"]``
    without that record (made by something else) is refused rather than overwritten.

    Parameters
    ----------
    adata
        AnnData with ``.obsm["X_<key>"]``.
    key
        ``key_added`` of the model (``"vae"``, ``"ldvae"``, ...).
    color
        ``.obs`` columns or genes to colour by, as in :func:`scanpy.pl.embedding`.
    method
        ``"umap"`` and ``"tsne"`` on a neighbour graph of the latent space, ``"pca"`` of the latent
        space, or ``"none"`` to plot its first two dimensions as they are.
    n_neighbors
        Neighbours of the graph under UMAP / t-SNE.
    seed
        Seed of the UMAP / t-SNE layout.
    ax
        Matplotlib Axes to draw into (one ``color`` only).
    {show_doc}
    **kwargs
        Passed on to :func:`scanpy.pl.embedding` (``palette``, ``legend_loc``, ``frameon``, ...), except
        ``basis``, which ``key`` and ``method`` choose.

    Returns
    -------
    The Axes (or list of Axes), the Figure with ``return_fig=True``, or ``None`` when shown. Writes
    ``.obsm["X_<key>_<method>"]`` and ``.uns["<key>"]["views"]["<method>"]`` when it computes a view.

    Raises
    ------
    KeyError
        When ``.obsm["X_<key>"]`` is missing.
    ValueError
        When ``method`` is unknown, ``ax`` is given with several colours, or ``.obsm["X_<key>_<method>"]``
        exists but was not written by ``pl.latent`` (it is never overwritten then).
    TypeError
        When ``basis`` is passed.

    Examples
    --------
    >>> import scdgm as dgm
    >>> adata = dgm.datasets.pbmc68k()
    >>> dgm.tl.vae(adata, max_epochs=50)  # doctest: +SKIP
    >>> dgm.pl.latent(adata, color="cell_type", method="umap")  # doctest: +SKIP
    """
    import matplotlib.pyplot as plt
    import scanpy as sc

    keys = ModelKeys(key)
    if keys.obsm not in adata.obsm:
        msg = f"Did not find .obsm[{keys.obsm!r}]. Run `dgm.tl.vae(adata, key_added={key!r})` first."
        raise KeyError(msg)
    if method not in METHODS:
        msg = f"method={method!r} is not supported. Choose one of {list(METHODS)}."
        raise ValueError(msg)
    if ax is not None and isinstance(color, list) and len(color) > 1:
        msg = "ax= takes one panel: pass a single color, or leave ax=None for one panel per color."
        raise ValueError(msg)
    if "basis" in kwargs:
        msg = (
            f"pl.latent takes no basis= (got basis={kwargs['basis']!r}): the basis is chosen by key= and method= "
            "(.obsm['X_<key>_<method>']). To plot any other basis, use `sc.pl.embedding(adata, basis=...)`."
        )
        raise TypeError(msg)
    latent_values = np.asarray(adata.obsm[keys.obsm])
    if method == "none":
        basis = keys.obsm
    else:
        basis = keys.embedding(method)
        fingerprint = _fingerprint(latent_values, method, n_neighbors, seed)
        views = adata.uns.get(keys.uns, {}).get("views", {}) if isinstance(adata.uns.get(keys.uns), dict) else {}
        cached = views.get(method, {}).get("fingerprint") if isinstance(views.get(method), dict) else None
        if basis in adata.obsm and cached is None:
            msg = (
                f".obsm[{basis!r}] already exists but was not computed by dgm.pl.latent (no record in "
                f".uns[{keys.uns!r}]['views'][{method!r}]; retraining the model under the same key also drops "
                f"that record), so it is not overwritten. Delete it (`del adata.obsm[{basis!r}]`) or rename it, "
                f"then call pl.latent again; to plot it as it is, use `sc.pl.embedding(adata, basis={basis!r})`."
            )
            raise ValueError(msg)
        if basis not in adata.obsm or cached != fingerprint:
            logger.info(f"computing the {method} view of .obsm[{keys.obsm!r}]")
            adata.obsm[basis] = _project(latent_values, method, n_neighbors=n_neighbors, seed=seed).astype(np.float32)
            adata.uns.setdefault(keys.uns, {}).setdefault("views", {})[method] = {
                "fingerprint": fingerprint,
                "n_neighbors": n_neighbors,
                "seed": seed,
            }
    axes = sc.pl.embedding(adata, basis=basis, color=color, ax=ax, show=False, **kwargs)
    first = axes[0] if isinstance(axes, list) else axes
    return finish(first.figure if first is not None else plt.gcf(), axes, show=show, return_fig=return_fig)
