"""The shared steps around :func:`fit`: train a module on prepared data and a split, apply a module to every cell.

Every ``tl`` tool that trains goes through :func:`train_module`, every tool that applies a model goes
through :func:`predict_cells`, so that the batches, the schedule and the held-out metrics are made
the same way for all of them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from .._checks import check_int, check_number
from ._fit import evaluate, fit, predict
from ._schedule import default_kl_warmup_epochs, default_max_epochs

if TYPE_CHECKING:
    import torch

    from ..data import PreparedData

INFERENCE_BATCH_SIZE = 1024
"""Cells per batch when a trained module is applied (no gradients, so larger than training batches)."""

PRECISIONS = ("32-true", "bf16-mixed", "16-mixed")


@dataclass
class Schedule:
    """How long a run trains and how the KL weight rises, as resolved from the user's arguments."""

    max_epochs: int
    kl_warmup_epochs: int


def resolve_schedule(
    n_train: int, max_epochs: int | None, kl_warmup_epochs: int | None, *, variational: bool = True
) -> Schedule:
    """Fill in the default run length and warm-up, and refuse a warm-up longer than the run."""
    epochs = default_max_epochs(n_train) if max_epochs is None else check_int("max_epochs", max_epochs)
    if kl_warmup_epochs is None:
        warmup = default_kl_warmup_epochs(epochs) if variational else 0
    else:
        warmup = check_int("kl_warmup_epochs", kl_warmup_epochs, minimum=0)
    if warmup > epochs:
        msg = f"kl_warmup_epochs={warmup} exceeds max_epochs={epochs}: the KL weight would never reach beta."
        raise ValueError(msg)
    return Schedule(epochs, warmup)


def check_training_options(
    *,
    batch_size: Any,
    lr: Any,
    weight_decay: Any = 0.0,
    beta: Any = 1.0,
    patience: Any = 1,
    max_epochs: Any = None,
    kl_warmup_epochs: Any = None,
    early_stopping: Any = True,
    precision: str = "32-true",
    devices: Any = 1,
) -> None:
    """Check the arguments every training tool shares, before any data is read."""
    from .._checks import check_bool, check_choice

    check_int("batch_size", batch_size, minimum=2)  # BatchNorm needs two cells per batch
    check_number("lr", lr, minimum=0.0, exclusive_minimum=True)
    check_number("weight_decay", weight_decay, minimum=0.0)
    check_number("beta", beta, minimum=0.0)
    check_int("patience", patience)
    check_bool("early_stopping", early_stopping)
    check_choice("precision", precision, PRECISIONS)
    check_int("devices", devices)
    if max_epochs is not None:
        check_int("max_epochs", max_epochs)
    if kl_warmup_epochs is not None:
        check_int("kl_warmup_epochs", kl_warmup_epochs, minimum=0)


def check_precision(precision: str, device: str) -> None:
    """Refuse half precision where the device cannot run it, rather than train in another one silently."""
    if precision == "16-mixed" and not device.startswith("cuda"):
        msg = f"precision='16-mixed' needs a CUDA GPU, but the model runs on {device!r}. Use '32-true' or 'bf16-mixed'."
        raise ValueError(msg)


def check_split(n_train: int, batch_size: int, validation_fraction: float) -> None:
    """Refuse a training set too small for the batches (and for BatchNorm, which needs two cells)."""
    if n_train < 2:
        msg = (
            f"Only {n_train} cell(s) are left to train on after holding out validation_fraction="
            f"{validation_fraction}: a model needs at least 2. Pass more cells or a lower validation_fraction."
        )
        raise ValueError(msg)
    if batch_size > n_train:
        msg = (
            f"batch_size={batch_size} is larger than the training set ({n_train} cells after holding out "
            f"validation_fraction={validation_fraction}). Lower batch_size."
        )
        raise ValueError(msg)


@dataclass
class TrainedModule:
    """What :func:`train_module` produced: the module holds the kept weights.

    Attributes
    ----------
    module
        The trained module, in eval mode, on the training device.
    history
        Per-epoch loss terms (numpy arrays), as :attr:`scdgm.train.TrainResult.history`.
    metrics
        ``validation_<term>`` and ``train_<term>`` per-cell means of the kept model at full KL
        weight, ``n_train``, ``n_validation`` and the run summary (epochs, seconds, speed).
    schedule
        The resolved run length and warm-up.
    """

    module: Any
    history: dict[str, np.ndarray] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    schedule: Schedule | None = None


def train_module(
    module: torch.nn.Module,
    data: PreparedData,
    train_idx: np.ndarray,
    validation_idx: np.ndarray,
    *,
    device: str,
    batch_size: int,
    max_epochs: int | None,
    kl_warmup_epochs: int | None,
    lr: float,
    weight_decay: float = 0.0,
    beta: float = 1.0,
    early_stopping: bool = True,
    patience: int = 30,
    devices: int = 1,
    precision: str = "32-true",
    seed: int = 0,
    variational: bool = True,
    description: str = "training",
) -> TrainedModule:
    """Train ``module`` on the ``train_idx`` cells of ``data``, stop early on ``validation_idx``, measure both.

    Call inside :func:`~scdgm.train.seeded` for a reproducible run. The held-out metrics are the
    engine's own epoch means (:func:`~scdgm.train.evaluate`) of the kept weights at full KL weight.

    Parameters
    ----------
    module
        Any module whose forward returns a :class:`~scdgm.modules.LossOutput`.
    data
        The prepared input.
    train_idx, validation_idx
        Rows of ``data`` to train on and to hold out (may be empty).
    device
        Resolved torch device.
    batch_size, max_epochs, kl_warmup_epochs, lr, weight_decay, beta, early_stopping, patience, devices, precision, seed
        As in :func:`~scdgm.train.fit`; ``max_epochs`` and ``kl_warmup_epochs`` default through
        :func:`resolve_schedule`.
    variational
        Whether the module has a KL term to warm up (default warm-up length) or not (no warm-up).
    description
        Label of the progress bar.

    Returns
    -------
    :class:`TrainedModule`.
    """
    from ..data import BatchStore, MiniBatches

    check_split(len(train_idx), batch_size, len(validation_idx) / max(data.n_obs, 1))
    check_precision(precision, device)
    schedule = resolve_schedule(len(train_idx), max_epochs, kl_warmup_epochs, variational=variational)
    store = BatchStore.from_prepared(data, device)
    train = MiniBatches(
        store, train_idx, batch_size=batch_size, shuffle=True, seed=seed, drop_last=len(train_idx) > batch_size
    )
    validation = (
        MiniBatches(store, validation_idx, batch_size=INFERENCE_BATCH_SIZE, shuffle=False)
        if len(validation_idx)
        else None
    )
    result = fit(
        module.to(device),
        train,
        validation,
        max_epochs=schedule.max_epochs,
        lr=lr,
        weight_decay=weight_decay,
        beta=beta,
        kl_warmup_epochs=schedule.kl_warmup_epochs,
        early_stopping=early_stopping,
        patience=patience,
        device=device,
        devices=devices,
        precision=precision,
        seed=seed,
        description=description,
    )
    metrics: dict[str, Any] = {}
    for prefix, rows in (("validation", validation_idx), ("train", train_idx)):
        if len(rows):
            batches = MiniBatches(store, rows, batch_size=INFERENCE_BATCH_SIZE, shuffle=False)
            metrics.update({f"{prefix}_{k}": v for k, v in evaluate(module, batches).items() if k != "loss"})
    metrics.update({"n_train": len(train_idx), "n_validation": len(validation_idx), **result.summary()})
    history = {k: np.asarray(v) for k, v in result.history.items()}
    return TrainedModule(module=module, history=history, metrics=metrics, schedule=schedule)


def predict_cells(
    module: torch.nn.Module,
    data: PreparedData,
    fn: Callable[[Any, dict], torch.Tensor],
    *,
    device: str,
    rows: np.ndarray | None = None,
    batch_size: int = INFERENCE_BATCH_SIZE,
) -> np.ndarray:
    """``fn(module, batch)`` for every cell of ``data`` (or ``rows``), in order, as one numpy array."""
    from ..data import BatchStore, MiniBatches

    store = BatchStore.from_prepared(data, device)
    rows = np.arange(data.n_obs) if rows is None else rows
    return predict(module, MiniBatches(store, rows, batch_size=batch_size, shuffle=False), fn)
