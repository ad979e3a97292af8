"""Top genes per factor or target, and the gene loadings of a linearly decoded VAE."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal

import numpy as np
import pandas as pd
from anndata import AnnData

from .._keys import AttributionKeys, LoadingsKeys
from ._common import names, run_hint, select, uns_entry

DIRECTIONS = ("positive", "negative")


def _ranked(stored: Mapping[str, Any]) -> tuple[list[str], dict[str, np.ndarray]]:
    """Target names and the ``(n_targets, n_top)`` gene names per direction, from either layout."""
    if "targets" in stored and not isinstance(stored["targets"], Mapping):
        targets = names(stored["targets"])
        return targets, {d: np.asarray(stored[d], dtype=object).reshape(len(targets), -1) for d in DIRECTIONS}
    # scdgm 0.1 wrote {target: {"positive": genes, "negative": genes}}
    targets = list(stored)
    ranked = {d: np.array([np.asarray(stored[t][d], dtype=object) for t in targets]) for d in DIRECTIONS}
    return [str(t) for t in targets], {d: genes.reshape(len(targets), -1) for d, genes in ranked.items()}


def _values(adata: AnnData, key: str, n_targets: int) -> np.ndarray | None:
    """The ``.varm`` entry whose columns are the targets: LDVAE loadings or mean attributions."""
    for varm_key in (LoadingsKeys(key).varm, AttributionKeys(key).varm):
        if varm_key in adata.varm:
            values = np.asarray(adata.varm[varm_key], dtype=np.float64)
            if values.shape[1] != n_targets:
                msg = (
                    f".varm[{varm_key!r}] has {values.shape[1]} columns but .uns[{key!r}]['top_genes'] "
                    f"lists {n_targets} targets; they come from different runs."
                )
                raise ValueError(msg)
            return values
    return None


def top_genes(
    adata: AnnData,
    key: str,
    *,
    target: str | Sequence[str] | None = None,
    direction: Literal["positive", "negative"] | None = None,
    n_top: int | None = None,
) -> pd.DataFrame:
    """Top genes per factor or target as a tidy table.

    Reads ``.uns[key]["top_genes"]`` as written by :func:`scdgm.tl.ldvae_loadings` (genes with the
    largest and smallest loading per factor) or :func:`scdgm.tl.integrated_gradients` (largest and
    smallest mean attribution per target). Files written by scdgm 0.1, where the targets were keys
    of that mapping, are read too.

    Parameters
    ----------
    adata
        Annotated data matrix holding the result.
    key
        ``.uns`` key of the result, e.g. ``"ldvae"`` or ``"ig_vae"``.
    target
        One target (factor or class) name, or several; all when ``None``.
    direction
        ``"positive"`` or ``"negative"`` only; both when ``None``.
    n_top
        Keep the first ``n_top`` ranks; all stored ranks when ``None``.

    Returns
    -------
    A DataFrame with one row per target, direction and rank, in the stored target order, with columns

    ``target``
        Factor or target name.
    ``direction``
        ``"positive"`` or ``"negative"``.
    ``rank``
        0-based rank within the target and direction.
    ``gene``
        Gene name.
    ``value``
        The gene's loading (``.varm["<key>_loadings"]``) or mean attribution (``.varm["<key>"]``) for
        that target; NaN when that ``.varm`` entry is absent.

    Examples
    --------
    >>> import scdgm as dgm
    >>> adata = dgm.datasets.simulate(300, 60, seed=0)
    >>> dgm.tl.ldvae_loadings(adata, n_latent=4)  # doctest: +SKIP
    >>> dgm.get.top_genes(adata, "ldvae", direction="positive", n_top=5)  # doctest: +SKIP
    """
    if direction is not None and direction not in DIRECTIONS:
        msg = f"direction must be 'positive', 'negative' or None, got {direction!r}."
        raise ValueError(msg)
    if n_top is not None and n_top < 1:
        msg = f"n_top must be at least 1, got {n_top}."
        raise ValueError(msg)
    tool = "integrated_gradients" if key.startswith("ig_") else "ldvae_loadings"
    targets, ranked = _ranked(uns_entry(adata, key, tool=tool, field="top_genes"))
    chosen = select(targets, target, what="target", where=f".uns[{key!r}]['top_genes']")
    values = _values(adata, key, len(targets))
    frames = []
    for t in chosen:
        for d in DIRECTIONS if direction is None else (direction,):
            genes = ranked[d][t, :n_top].astype(str)
            rows = adata.var_names.get_indexer(genes)
            value = np.full(len(genes), np.nan) if values is None else np.where(rows >= 0, values[rows, t], np.nan)
            frames.append(
                pd.DataFrame(
                    {"target": targets[t], "direction": d, "rank": np.arange(len(genes)), "gene": genes, "value": value}
                )
            )
    columns = ["target", "direction", "rank", "gene", "value"]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=columns)


def loadings(adata: AnnData, key: str = "ldvae", *, rotated: bool = True) -> pd.DataFrame:
    """Gene loadings of a linearly decoded VAE, genes x factors.

    Parameters
    ----------
    adata
        Annotated data matrix holding the result of :func:`scdgm.tl.ldvae_loadings`.
    key
        ``key_added`` of that call.
    rotated
        The loadings after the rotation (``.varm["<key>_loadings"]``), or before it
        (``.varm["<key>_loadings_unrotated"]``).

    Returns
    -------
    A DataFrame indexed by ``adata.var_names`` with one column per factor: the factor names of
    ``.uns[key]["top_genes"]["targets"]`` for rotated loadings when stored, else ``factor_0``,
    ``factor_1``, ... Genes the model never saw hold NaN.

    Examples
    --------
    >>> import scdgm as dgm
    >>> adata = dgm.datasets.simulate(300, 60, seed=0)
    >>> dgm.tl.ldvae_loadings(adata, n_latent=4)  # doctest: +SKIP
    >>> dgm.get.loadings(adata).nlargest(5, "factor_0")  # doctest: +SKIP
    """
    keys = LoadingsKeys(key)
    varm_key = keys.varm if rotated else keys.varm_unrotated
    if varm_key not in adata.varm:
        msg = f"Did not find .varm[{varm_key!r}]. Run `{run_hint(key, 'ldvae_loadings')}` first."
        raise KeyError(msg)
    values = np.asarray(adata.varm[varm_key])
    columns = [f"factor_{k}" for k in range(values.shape[1])]
    stored = adata.uns.get(key, {}).get("top_genes", {}) if isinstance(adata.uns.get(key), Mapping) else {}
    # the rotated factors' names do not describe the unrotated columns
    if rotated and "targets" in stored and not isinstance(stored["targets"], Mapping):
        factor_names = names(stored["targets"])
        columns = factor_names if len(factor_names) == values.shape[1] else columns
    return pd.DataFrame(values, index=adata.var_names.copy(), columns=columns)
