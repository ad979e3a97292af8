"""Mean integrated-gradients attributions per gene and target, overall or per group."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from anndata import AnnData

from .._keys import AttributionKeys
from ._common import names, run_hint, select, uns_entry

TOOL = "integrated_gradients"


def _overall(adata: AnnData, key: str, targets: list[str], *, absolute: bool) -> pd.DataFrame:
    keys = AttributionKeys(key)
    varm_key = keys.varm_abs if absolute else keys.varm
    if varm_key not in adata.varm:
        msg = f"Did not find .varm[{varm_key!r}]. Run `{run_hint(key, TOOL)}` first."
        raise KeyError(msg)
    values = np.asarray(adata.varm[varm_key], dtype=np.float64)
    return _long(values, np.asarray(adata.var_names).astype(str), targets)


def _group_means(adata: AnnData, key: str, groupby: str = "...") -> dict:
    """``.uns[key]["group_means"]`` in the current layout, with errors that say which call writes it."""
    stored = uns_entry(adata, key, tool=TOOL, field="group_means", extra=[f"groupby={groupby}"])
    if not {"groups", "sizes", "values"} <= set(stored):
        msg = (
            f".uns[{key!r}]['group_means'] is in the layout of scdgm 0.1 (one entry per group). "
            f"Run `{run_hint(key, TOOL, f'groupby={groupby}')}` again to read it."
        )
        raise ValueError(msg)
    return stored


def own_group_means(
    adata: AnnData, key: str, groupby: str, targets: Sequence[str] | None = None
) -> tuple[list[str], np.ndarray]:
    """Each target averaged over the cells of the group of the same name (a class over its own cells).

    Parameters
    ----------
    adata
        Holds the result of :func:`scdgm.tl.integrated_gradients` called with ``groupby``.
    key
        ``.uns`` key of that result.
    groupby
        The ``.obs`` column of groups that call was given.
    targets
        Targets to pair, in this order; each must name a group. ``None``: every target that names a
        group with attributed cells, in the order of the targets.

    Returns
    -------
    The paired target names, and their mean attributions, genes x those targets.
    """
    all_targets = names(uns_entry(adata, key, tool=TOOL, field="targets"))
    stored = _group_means(adata, key, repr(groupby))
    used = adata.uns[key].get("groupby")
    if used is not None and str(used) != groupby:
        msg = (
            f"The group means of .uns[{key!r}] are over {str(used)!r}, not groupby={groupby!r}. "
            f"Run `{run_hint(key, TOOL, f'groupby={groupby!r}')}` to average over those groups."
        )
        raise ValueError(msg)
    groups = names(stored["groups"])
    if targets is None:
        chosen = [t for t in all_targets if t in groups]
        if not chosen:
            msg = (
                f"groupby={groupby!r} averages each target over the cells of the group of the same name, but no "
                f"target of .uns[{key!r}] ({all_targets}) names a group of {groupby!r} ({groups}); it suits "
                "classifiers whose classes are the groups. For other targets pass group= instead."
            )
            raise ValueError(msg)
    else:
        chosen = [str(t) for t in targets]
        unpaired = [t for t in chosen if t not in groups]
        if unpaired:
            msg = (
                f"target {unpaired[0]!r} names no group of {groupby!r} with attributed cells; the groups are {groups}."
            )
            raise KeyError(msg)
    values = np.asarray(stored["values"], dtype=np.float64)  # groups x genes x targets
    columns = [values[groups.index(t), :, all_targets.index(t)] for t in chosen]
    return chosen, np.stack(columns, axis=1)


def _per_group(adata: AnnData, key: str, targets: list[str], group: str | Sequence[str]) -> pd.DataFrame:
    stored = _group_means(adata, key)
    groups = names(stored["groups"])
    groupby = adata.uns[key].get("groupby", "the groupby column")
    # a group literally called "all" is still reachable as ["all"]
    chosen = select(
        groups, None if group == "all" else group, what="group", where=f".uns[{key!r}]['group_means'] ({groupby})"
    )
    values = np.asarray(stored["values"], dtype=np.float64)
    var_names = np.asarray(adata.var_names).astype(str)
    frames = [_long(values[g], var_names, targets).assign(group=groups[g]) for g in chosen]
    table = pd.concat(frames, ignore_index=True)
    return table[["group", "gene", "target", "attribution"]]


def _long(values: np.ndarray, var_names: np.ndarray, targets: list[str]) -> pd.DataFrame:
    """Genes x targets -> one row per gene and target, gene-major."""
    if values.shape != (len(var_names), len(targets)):
        msg = f"Attributions of shape {values.shape} do not match {len(var_names)} genes x {len(targets)} targets."
        raise ValueError(msg)
    return pd.DataFrame(
        {
            "gene": np.repeat(var_names, len(targets)),
            "target": np.tile(np.asarray(targets, dtype=object), len(var_names)),
            "attribution": values.ravel(),
        }
    )


def attributions(
    adata: AnnData,
    key: str = "ig_vae",
    *,
    group: str | Sequence[str] | None = None,
    groupby: str | None = None,
    absolute: bool = False,
) -> pd.DataFrame:
    """Mean integrated-gradients attribution of every gene to every target, as a tidy table.

    Parameters
    ----------
    adata
        Annotated data matrix holding the result of :func:`scdgm.tl.integrated_gradients`.
    key
        ``.uns`` key of that result (``key_added``, by default ``ig_<model_key>``).
    group
        Means within groups of the ``groupby`` column that call was given: one group name, several,
        or ``"all"``. ``None`` for the mean over all attributed cells (``.varm[key]``).
    groupby
        The ``groupby`` column that call was given: each target averaged over the cells of the group of
        the same name, i.e. each class over its own cells, for a classifier of those groups (targets
        that name no group are left out). Not with ``group``.
    absolute
        Mean absolute attribution (``.varm["<key>_abs"]``) instead of the signed mean; only without
        ``group`` and ``groupby``, as group means are stored signed.

    Returns
    -------
    A DataFrame with one row per gene and target (and group), with columns

    ``group``
        Group name; only when ``group`` or ``groupby`` is given (with ``groupby`` it equals ``target``).
    ``gene``
        Gene name, in the order of ``adata.var_names``.
    ``target``
        Target name (latent factor or class), from ``.uns[key]["targets"]``.
    ``attribution``
        Mean attribution; NaN for genes the model never saw.

    Examples
    --------
    >>> import scdgm as dgm
    >>> adata = dgm.datasets.simulate(300, 60, seed=0)
    >>> dgm.tl.vae(adata, n_latent=4)  # doctest: +SKIP
    >>> dgm.tl.integrated_gradients(adata, model_key="vae", groupby="cell_type")  # doctest: +SKIP
    >>> dgm.get.attributions(adata, "ig_vae", group="all")  # doctest: +SKIP
    >>> dgm.tl.bayes_classify(adata, "cell_type")  # doctest: +SKIP
    >>> dgm.tl.integrated_gradients(adata, model_key="bayes", groupby="cell_type")  # doctest: +SKIP
    >>> dgm.get.attributions(adata, "ig_bayes", groupby="cell_type")  # doctest: +SKIP
    """
    targets = names(uns_entry(adata, key, tool=TOOL, field="targets"))
    if group is not None and groupby is not None:
        msg = "Pass group= (chosen groups, every target) or groupby= (each class over its own cells), not both."
        raise ValueError(msg)
    if group is None and groupby is None:
        return _overall(adata, key, targets, absolute=absolute)
    if absolute:
        msg = (
            f"Group means in .uns[{key!r}]['group_means'] are stored signed only: "
            "pass absolute=False with group= or groupby=."
        )
        raise ValueError(msg)
    if group is not None:
        return _per_group(adata, key, targets, group)
    paired, values = own_group_means(adata, key, groupby)
    table = _long(values, np.asarray(adata.var_names).astype(str), paired)
    table.insert(0, "group", table["target"])
    return table
