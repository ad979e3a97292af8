"""The one writer of results: every tool hands its outputs here, so keys, params and logs stay uniform."""

from __future__ import annotations

from collections.abc import Mapping
from importlib.metadata import PackageNotFoundError, version
from typing import Any

import numpy as np
import pandas as pd
from anndata import AnnData

from ._settings import logger


def package_version(distribution: str = "scdgm") -> str:
    """Installed version of ``distribution`` (``"unknown"`` when it runs without package metadata)."""
    try:
        return version(distribution)
    except PackageNotFoundError:  # pragma: no cover - only outside an install
        return "unknown"


def h5ad_safe(value: Any) -> Any:
    """Turn ``value`` into something ``write_h5ad`` stores and reads back unchanged.

    ``None`` entries of mappings are dropped (h5ad cannot store them; readers use ``.get``),
    tuples become lists, numpy scalars become Python scalars.
    """
    if isinstance(value, Mapping):
        return {str(k): h5ad_safe(v) for k, v in value.items() if v is not None}
    if isinstance(value, tuple | list):
        items = [h5ad_safe(v) for v in value if v is not None]
        if items and all(isinstance(v, str) for v in items):
            return np.asarray(items, dtype=object)
        return np.asarray(items) if items and all(np.isscalar(v) for v in items) else items
    if isinstance(value, np.generic):
        return value.item()
    return value


def record_params(tool: str, **params: Any) -> dict[str, Any]:
    """Arguments that shape a result, with the tool's name and the package version, for ``.uns[key]["params"]``."""
    return h5ad_safe({"tool": tool, **params, "scdgm_version": package_version()})


def write_results(
    adata: AnnData,
    *,
    obs: Mapping[str, Any] | None = None,
    obsm: Mapping[str, Any] | None = None,
    varm: Mapping[str, Any] | None = None,
    layers: Mapping[str, Any] | None = None,
    uns: Mapping[str, Any] | None = None,
) -> None:
    """Write every output of one tool call into ``adata`` and log what was added.

    All values are computed before this is called, so a failing tool never leaves half its results.
    Replacing an existing key is logged as a warning, never done silently. An ``.uns`` entry that is
    replaced keeps its ``"views"`` (the 2-D views ``pl.latent`` cached, with the fingerprint of the
    latent space they were computed from), so ``pl.latent`` recomputes its own views after a rerun.
    """
    slots = {"obs": obs, "obsm": obsm, "varm": varm, "layers": layers, "uns": uns}
    added: list[str] = []
    for slot, values in slots.items():
        if not values:
            continue
        target = getattr(adata, slot)
        for key, value in values.items():
            if key in target:
                logger.warning(f"    replacing .{slot}[{key!r}]")
            if slot == "obs":
                target[key] = value if isinstance(value, pd.Series | pd.Categorical) else np.asarray(value)
            elif slot == "uns":
                old = target.get(key)
                if isinstance(old, Mapping) and "views" in old and isinstance(value, Mapping) and "views" not in value:
                    value = {**value, "views": old["views"]}
                target[key] = h5ad_safe(value)
            else:
                target[key] = value
            added.append(f".{slot}[{key!r}]")
    if added:
        logger.info("    added " + ", ".join(added))
