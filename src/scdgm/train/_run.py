"""The shared steps around :func:`fit`: train a module on prepared data and a split, apply a module to every cell.

Every ``tl`` tool that trains goes through :func:`train_module`, every tool that applies a model goes
through :func:`predict_cells`, so that the batches, the schedule and the held-out metrics are made
the same way for all of them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from .._checks import check_int, check_number
from .._choices import PRECISIONS
from ._fit import evaluate, fit, predict
from ._schedule import default_kl_warmup_epochs, default_max_epochs

if TYPE_CHECKING:
    import torch

    from ..data import PreparedData

INFERENCE_BATCH_SIZE = 1024
"""Cells per batch when a trained module is applied (no gradients, so larger than training batches)."""


_RESOLVED_HERE = ("batch_size", "max_epochs", "kl_warmup_epochs")
TRAIN_METRIC_CELLS = 5000
"""The training cells' metrics of a run are measured on at most this many of them."""


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


@dataclass(frozen=True)
class TrainingOptions:
    """How a module trains: the arguments every training tool shares, checked in one place.

    Attributes
    ----------
    batch_size
        Cells per minibatch (at least 2: BatchNorm needs two cells).
    max_epochs, kl_warmup_epochs
        Run length and KL warm-up; ``None`` defaults through :func:`resolve_schedule`.
    lr, weight_decay
        Adam's step size (> 0) and L2 penalty.
    beta
        Weight of the KL term once warm-up ends.
    early_stopping, patience
        Stop when the held-out loss has not improved for ``patience`` epochs.
    restore_best
        End with the weights of the epoch with the best held-out loss (default), or run
        ``max_epochs`` and end with the last epoch's (for held-out sets too small to choose by).
    devices, precision
        Data-parallel processes and Fabric precision.
    """

    batch_size: int = 128
    max_epochs: int | None = None
    kl_warmup_epochs: int | None = None
    lr: float = 1e-3
    weight_decay: float = 0.0
    beta: float = 1.0
    early_stopping: bool = True
    patience: int = 30
    restore_best: bool = True
    devices: int = 1
    precision: str = "32-true"

    @classmethod
    def of(cls, options: Any) -> TrainingOptions:
        """The training options among the attributes of a tool's options (missing ones keep their defaults)."""
        names = [f.name for f in dataclasses.fields(cls)]
        return cls(**{name: getattr(options, name) for name in names if hasattr(options, name)})

    def check(self) -> None:
        """Refuse bad values before any data is read."""
        from .._checks import check_bool, check_choice

        check_int("batch_size", self.batch_size, minimum=2)  # BatchNorm needs two cells per batch
        check_run_arguments(
            lr=self.lr,
            weight_decay=self.weight_decay,
            beta=self.beta,
            patience=self.patience,
            max_epochs=self.max_epochs,
            kl_warmup_epochs=self.kl_warmup_epochs,
        )
        check_bool("early_stopping", self.early_stopping)
        check_bool("restore_best", self.restore_best)
        check_choice("precision", self.precision, PRECISIONS)
        check_int("devices", self.devices)


def check_run_arguments(
    *, lr: Any, weight_decay: Any, beta: Any, patience: Any, max_epochs: Any, kl_warmup_epochs: Any
) -> None:
    """The checks :meth:`TrainingOptions.check` and :func:`~scdgm.train.fit` share (``None`` epochs: defaults)."""
    check_number("lr", lr, minimum=0.0, exclusive_minimum=True)
    check_number("weight_decay", weight_decay, minimum=0.0)
    check_number("beta", beta, minimum=0.0)
    check_int("patience", patience)
    if max_epochs is not None:
        check_int("max_epochs", max_epochs)
    if kl_warmup_epochs is not None:
        check_int("kl_warmup_epochs", kl_warmup_epochs, minimum=0)


def check_precision(precision: str, device: str) -> None:
    """Refuse half precision where the device cannot run it, rather than train in another one silently."""
    if precision == "16-mixed" and not device.startswith("cuda"):
        msg = f"precision='16-mixed' needs a CUDA GPU, but the model runs on {device!r}. Use '32-true' or 'bf16-mixed'."
        raise ValueError(msg)


def check_split(n_train: int, batch_size: int, n_validation: int) -> None:
    """Refuse a training set too small for the batches (and for BatchNorm, which needs two cells)."""
    held_out = f"after holding out {n_validation} for validation" if n_validation else "(none held out for validation)"
    if n_train < 2:
        advice = "Pass more cells" + (" or a lower validation_fraction" if n_validation else "")
        msg = f"Only {n_train} cell(s) are left to train on {held_out}: a model needs at least 2. {advice}."
        raise ValueError(msg)
    if batch_size > n_train:
        msg = f"batch_size={batch_size} is larger than the training set ({n_train} cells {held_out}). Lower batch_size."
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
        weight (the training cells' on at most :data:`TRAIN_METRIC_CELLS` of them, drawn with
        ``seed``), ``n_train``, ``n_validation``, ``n_train_scored`` and the run summary (epochs,
        seconds, speed).
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
    options: TrainingOptions,
    *,
    device: str,
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
    options
        How to train (:class:`TrainingOptions`, already checked).
    device
        Resolved torch device.
    seed
        Seeds the minibatch order (and the spawned processes of data-parallel training).
    variational
        Whether the module has a KL term to warm up (default warm-up length) or not (no warm-up).
    description
        Label of the progress bar.

    Returns
    -------
    :class:`TrainedModule`.
    """
    from ..data import BatchStore, MiniBatches

    batch_size = options.batch_size
    check_split(len(train_idx), batch_size, len(validation_idx))
    check_precision(options.precision, device)
    schedule = resolve_schedule(len(train_idx), options.max_epochs, options.kl_warmup_epochs, variational=variational)
    store = BatchStore.from_prepared(data, device)
    train = MiniBatches(
        store, train_idx, batch_size=batch_size, shuffle=True, seed=seed, drop_last=len(train_idx) > batch_size
    )
    validation = (
        MiniBatches(store, validation_idx, batch_size=INFERENCE_BATCH_SIZE, shuffle=False)
        if len(validation_idx)
        else None
    )
    # the options fit takes by the same name; the schedule is passed as resolved
    passed = {k: v for k, v in dataclasses.asdict(options).items() if k not in _RESOLVED_HERE}
    result = fit(
        module.to(device),
        train,
        validation,
        max_epochs=schedule.max_epochs,
        kl_warmup_epochs=schedule.kl_warmup_epochs,
        device=device,
        seed=seed,
        description=description,
        **passed,
    )
    metrics: dict[str, Any] = {}
    # The training cells' metrics are a diagnostic (the gap to the held-out ones); a random sample
    # estimates them to well under a percent and keeps a pass over every training cell out of short runs.
    scored = train_idx
    if len(train_idx) > TRAIN_METRIC_CELLS:
        scored = np.sort(np.random.default_rng(seed).choice(train_idx, TRAIN_METRIC_CELLS, replace=False))
    for prefix, rows in (("validation", validation_idx), ("train", scored)):
        if len(rows):
            batches = MiniBatches(store, rows, batch_size=INFERENCE_BATCH_SIZE, shuffle=False)
            metrics.update({f"{prefix}_{k}": v for k, v in evaluate(module, batches).items() if k != "loss"})
    metrics.update(
        {
            "n_train": len(train_idx),
            "n_validation": len(validation_idx),
            "n_train_scored": len(scored),
            **result.summary(),
        }
    )
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
