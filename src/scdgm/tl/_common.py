"""Shared steps of the ``tl`` functions: argument checks and bringing a stored model back to data."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import numpy as np
from anndata import AnnData

from .._models import rebuild_module, stored_model

if TYPE_CHECKING:
    import torch

    from ..data import PreparedData


def check_choice(name: str, value: Any, allowed: Iterable[Any]) -> None:
    """Raise a ValueError naming the allowed values when ``value`` is not one of them."""
    allowed = list(allowed)
    if value not in allowed:
        msg = f"{name}={value!r} is not supported. Choose one of {allowed}."
        raise ValueError(msg)


def check_positive_int(name: str, value: Any, *, minimum: int = 1) -> None:
    """Raise a ValueError unless ``value`` is an integer >= ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
        msg = f"{name} must be an integer >= {minimum}, not {value!r}."
        raise ValueError(msg)


def check_fraction(name: str, value: float, *, upper_inclusive: bool = False) -> None:
    """Raise a ValueError unless ``0 <= value < 1`` (or ``<= 1``)."""
    ok = 0 <= value <= 1 if upper_inclusive else 0 <= value < 1
    if not ok:
        bound = "1]" if upper_inclusive else "1)"
        msg = f"{name} must lie in [0, {bound}, not {value!r}."
        raise ValueError(msg)


def encodings_of(record: dict[str, Any]) -> dict[str, Any]:
    """Category encodings (batch, labels) a stored model was trained with."""
    from ..data import CategoryEncoding

    return {name: CategoryEncoding.from_dict(d) for name, d in dict(record.get("encodings", {})).items()}


def check_same_features(
    adata_names: np.ndarray, model_names: np.ndarray, *, source: str, key: str
) -> np.ndarray | None:
    """Column order that maps the data onto the model's features, or ``None`` when already identical.

    Raises when features of the model are missing from the data.
    """
    adata_names = np.asarray(adata_names).astype(str)
    model_names = np.asarray(model_names).astype(str)
    if adata_names.shape == model_names.shape and np.array_equal(adata_names, model_names):
        return None
    position = {name: i for i, name in enumerate(adata_names)}
    missing = [name for name in model_names if name not in position]
    if missing:
        msg = (
            f"The model in .uns[{key!r}] was trained on {len(model_names)} features; {len(missing)} of them "
            f"are missing from {source} (first: {missing[:5]}). Subset or reorder the AnnData to the model's "
            f"features, e.g. `adata = adata[:, model_var_names]`."
        )
        raise ValueError(msg)
    return np.array([position[name] for name in model_names])


def model_for(adata: AnnData, key: str, device: str) -> tuple[torch.nn.Module, dict[str, Any]]:
    """The stored model of ``.uns[key]`` rebuilt on ``device``, and its record."""
    record = stored_model(adata, key)
    return rebuild_module(record, device=device), record


def prepare_for_model(
    adata: AnnData,
    record: dict[str, Any],
    *,
    key: str,
    layer: str | None = None,
    batch_key: str | None = None,
    default_input: bool = True,
) -> PreparedData:
    """Read ``adata`` the way the stored model expects: same input slot, features and categories.

    ``layer``/``batch_key`` default to what the model was trained with (``default_input``).
    """
    from ..data import prepare_data

    data_spec = dict(record.get("data", {}))
    if default_input:
        layer = layer if layer is not None else data_spec.get("layer")
        use_rep = data_spec.get("use_rep")
        batch_key = batch_key if batch_key is not None else data_spec.get("batch_key")
    else:
        use_rep = None
    encodings = encodings_of(record)
    if "batch" in encodings and batch_key is None:
        msg = (
            f"The model in .uns[{key!r}] was trained with batch covariates ({encodings['batch'].key!r}); "
            "pass batch_key= naming the .obs column that holds the batches of these cells."
        )
        raise ValueError(msg)
    data = prepare_data(
        adata,
        layer=layer,
        use_rep=use_rep,
        counts=bool(data_spec.get("counts", False)),
        batch_key=batch_key if "batch" in encodings else None,
        encodings={"batch": encodings["batch"]} if "batch" in encodings else None,
    )
    order = check_same_features(data.var_names, record["var_names"], source=data.source, key=key)
    if order is not None:
        data = data.select_features(order)
    return data
