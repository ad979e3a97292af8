"""Fetching a stored result with an error that says which ``dgm.tl`` call writes it."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from anndata import AnnData

# The .uns key each tool writes by default, to know when a hint needs ``key_added=``.
_DEFAULT_KEYS = {
    "vae": "vae",
    "ldvae_loadings": "ldvae",
    "bayes_classify": "bayes",
    "synthetic_quality": "synthetic_quality",
    "dbm": "dbm",
    "pattern_extractor": "patterns",
    "predict_perturbation": "perturbation",
    "differential_expression": "rank_genes_groups_vae",
}


def run_hint(key: str, tool: str, *extra: str) -> str:
    """The ``dgm.tl`` call that writes ``.uns[key]``: guessed from the key's stem, else ``tool``."""
    if key.startswith("ig_"):
        args = [f"model_key={key[3:]!r}"]
        tool = "integrated_gradients"
    else:
        tool = {"ldvae": "ldvae_loadings", "bayes": "bayes_classify", "vae": "vae"}.get(key, tool)
        args = {"bayes_classify": ["labels_key"], "integrated_gradients": ["model_key=..."]}.get(tool, [])
        if key != _DEFAULT_KEYS.get(tool):
            args.append(f"key_added={key!r}")
    return f"dgm.tl.{tool}({', '.join(['adata', *args, *extra])})"


def uns_entry(adata: AnnData, key: str, *, tool: str, field: str | None = None, extra: Sequence[str] = ()) -> Any:
    """``.uns[key]`` (or ``.uns[key][field]``), with a ``KeyError`` that names the tool to run first."""
    hint = run_hint(key, tool, *extra)
    if key not in adata.uns:
        msg = f"Did not find .uns[{key!r}]. Run `{hint}` first."
        raise KeyError(msg)
    entry = adata.uns[key]
    if not isinstance(entry, Mapping):
        msg = f".uns[{key!r}] is a {type(entry).__name__}, not a result of `{hint}`."
        raise ValueError(msg)
    if field is None:
        return entry
    if field not in entry:
        msg = f"Did not find .uns[{key!r}][{field!r}]. Run `{hint}` first."
        raise KeyError(msg)
    return entry[field]


def names(values: Any) -> list[str]:
    """Stored names (an array, or a list after some readers) as Python strings."""
    return [str(v) for v in np.asarray(values, dtype=object).ravel()]


def select(available: Sequence[str], wanted: str | Sequence[str] | None, *, what: str, where: str) -> list[int]:
    """Positions of ``wanted`` (one name or several; ``None`` for all) in ``available``."""
    if wanted is None:
        return list(range(len(available)))
    wanted = [wanted] if isinstance(wanted, str) else list(wanted)
    position = {name: i for i, name in enumerate(available)}
    unknown = [name for name in wanted if name not in position]
    if unknown:
        msg = f"{what} {unknown[0]!r} is not in {where}; the {what}s there are {list(available)}."
        raise KeyError(msg)
    return [position[name] for name in wanted]
