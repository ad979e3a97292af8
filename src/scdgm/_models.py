"""Trained models stored inside AnnData: serialise to h5ad-safe arrays and rebuild the torch module."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
from anndata import AnnData

if TYPE_CHECKING:
    import torch


def _module_classes() -> dict[str, type]:
    from .modules import MODULE_CLASSES

    return MODULE_CLASSES


def serialize_module(module: torch.nn.Module, **extra: Any) -> dict[str, Any]:
    """Architecture arguments and weights of ``module`` as numpy arrays, for ``.uns[key]["model"]``."""
    state = {name: tensor.detach().cpu().numpy() for name, tensor in module.state_dict().items()}
    return {
        "class_name": type(module).__name__,
        "init_kwargs": dict(module.init_kwargs),
        "state_dict": state,
        **extra,
    }


def stored_model(adata: AnnData, key: str) -> dict[str, Any]:
    """The ``.uns[key]["model"]`` record, with an error that says what to run when it is missing."""
    if key not in adata.uns:
        msg = f"Did not find .uns[{key!r}]. Train a model first, e.g. `dgm.tl.vae(adata, key_added={key!r})`."
        raise KeyError(msg)
    entry = adata.uns[key]
    if not isinstance(entry, dict) or "model" not in entry:
        msg = f".uns[{key!r}] holds no trained model. Train one first, e.g. `dgm.tl.vae(adata, key_added={key!r})`."
        raise KeyError(msg)
    return entry["model"]


def rebuild_module(record: dict[str, Any], device: str = "cpu") -> torch.nn.Module:
    """Rebuild the torch module described by a stored model record, in eval mode."""
    import torch

    classes = _module_classes()
    name = str(record["class_name"])
    if name not in classes:
        msg = f"Stored model class {name!r} is unknown to this scdgm version (known: {sorted(classes)})."
        raise ValueError(msg)
    kwargs = {k: (v.item() if isinstance(v, np.generic) else v) for k, v in dict(record["init_kwargs"]).items()}
    module = classes[name](**kwargs)
    state = {k: torch.as_tensor(np.asarray(v)) for k, v in record["state_dict"].items()}
    module.load_state_dict(state)
    return module.to(device).eval()


def get_model(adata: AnnData, key: str = "vae", *, device: str = "cpu") -> torch.nn.Module:
    """Rebuild the trained torch module stored in ``adata.uns[key]``.

    Parameters
    ----------
    adata
        An AnnData that a ``dgm.tl`` model was trained on (also after ``write_h5ad`` / ``read_h5ad``).
    key
        The ``key_added`` of the training call.
    device
        Torch device to place the module on.

    Returns
    -------
    The module, in eval mode, with the trained weights.

    Examples
    --------
    >>> import scdgm as dgm
    >>> adata = dgm.datasets.simulate(200, 50, seed=0)
    >>> dgm.tl.vae(adata, max_epochs=2)  # doctest: +SKIP
    >>> module = dgm.get_model(adata, "vae")  # doctest: +SKIP
    """
    return rebuild_module(stored_model(adata, key), device=device)
