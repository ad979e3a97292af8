"""``fit``: the one training loop of scdgm, for every module that returns a ``LossOutput``."""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import math
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from .._settings import logger, settings
from ._schedule import KLWarmup

if TYPE_CHECKING:
    import torch


class TrainingError(RuntimeError):
    """Training could not go on (for example the loss became NaN); nothing was written."""


@dataclass
class TrainResult:
    """What a call of :func:`fit` did.

    Attributes
    ----------
    history
        Per-epoch means of every loss term, ``"train_<term>"`` and ``"validation_<term>"``, plus
        ``"epoch"``, ``"kl_weight"`` (the weight at the end of each epoch) and ``"epoch_seconds"`` (the
        wall time of each epoch's training steps, validation excluded).
    n_epochs
        Epochs run.
    best_epoch
        Epoch (0-based) whose weights were kept: the lowest validation monitor after KL warm-up,
        or the last epoch without validation cells or with ``restore_best=False``.
    stopped_early
        Whether early stopping ended the run before ``max_epochs``.
    seconds
        Wall time of the training loop.
    train_cells_per_second
        Training cells processed per second (validation passes excluded).
    monitor
        The loss term early stopping watched.
    """

    history: dict[str, list[float]] = field(default_factory=dict)
    n_epochs: int = 0
    best_epoch: int = 0
    stopped_early: bool = False
    seconds: float = 0.0
    train_cells_per_second: float = 0.0
    monitor: str = "loss"

    def summary(self) -> dict[str, Any]:
        """Everything but the history, for ``.uns[key]["training"]``."""
        return {
            "n_epochs": self.n_epochs,
            "best_epoch": self.best_epoch,
            "stopped_early": self.stopped_early,
            "seconds": self.seconds,
            "train_cells_per_second": self.train_cells_per_second,
            "monitor": self.monitor,
        }


@contextlib.contextmanager
def seeded(seed: int, device: str = "cpu") -> Iterator[None]:
    """Seed torch for the block and restore the caller's random state afterwards.

    Weight initialisation, dropout and the reparameterisation noise all draw from torch's global
    generators; forking them keeps the same seed giving the same model without changing the state
    the user's own code sees.
    """
    import torch

    cuda_devices = [torch.device(device).index or 0] if device.startswith("cuda") else []
    with torch.random.fork_rng(devices=cuda_devices):
        torch.manual_seed(seed)
        yield


def _accelerator(device: str) -> tuple[str, int | list[int]]:
    kind, _, index = device.partition(":")
    if kind == "cuda":
        return "cuda", [int(index)] if index else 1
    return kind, 1


def _epoch_means(sums: dict[str, torch.Tensor], n_cells: int, prefix: str) -> dict[str, float]:
    # One device->host transfer per epoch, not per step: per-step .item() calls stall a GPU.
    return {f"{prefix}_{name}": float(value) / n_cells for name, value in sums.items()}


def _run_epoch(module: Any, batches: Iterable[dict], step_fn: Any) -> tuple[dict[str, torch.Tensor], int]:
    sums: dict[str, torch.Tensor] = {}
    n_cells = 0
    for batch in batches:
        out = step_fn(batch)
        for name, value in out.terms.items():
            weighted = value.detach() * out.n_obs
            sums[name] = sums[name] + weighted if name in sums else weighted
        n_cells += out.n_obs
    return sums, n_cells


class _Shard:
    """Every ``world_size``-th minibatch of an epoch, from ``rank`` on: one process's part under DDP.

    Every process draws the same shuffled order (same seed), so the shards are disjoint and cover
    the epoch; each gets the same number of batches (the remainder is dropped), as the gradient
    all-reduce of every step needs all processes.
    """

    def __init__(self, batches: Iterable[dict], rank: int, world_size: int) -> None:
        self.batches, self.rank, self.world_size = batches, rank, world_size

    def __len__(self) -> int:
        return len(self.batches) // self.world_size  # type: ignore[arg-type]

    def __iter__(self) -> Iterator[dict]:
        n = len(self) * self.world_size
        for i, batch in enumerate(self.batches):
            if i >= n:
                break
            if i % self.world_size == self.rank:
                yield batch


@dataclass
class _Options:
    max_epochs: int
    lr: float
    weight_decay: float
    max_grad_norm: float | None
    beta: float
    kl_warmup_epochs: int
    early_stopping: bool
    patience: int
    min_delta: float
    restore_best: bool
    device: str
    show: bool
    description: str


def fit(
    module: torch.nn.Module,
    train: Iterable[dict],
    validation: Iterable[dict] | None = None,
    *,
    max_epochs: int,
    lr: float = 1e-3,
    weight_decay: float = 1e-6,
    max_grad_norm: float | None = 50.0,
    beta: float = 1.0,
    kl_warmup_epochs: int = 0,
    early_stopping: bool = True,
    patience: int = 30,
    min_delta: float = 0.0,
    restore_best: bool = True,
    device: str = "cpu",
    devices: int = 1,
    precision: str = "32-true",
    seed: int = 0,
    progress_bar: bool | None = None,
    description: str = "training",
) -> TrainResult:
    """Train ``module`` with Adam, KL warm-up and early stopping, on the device its batches live on.

    ``module(batch, kl_weight=...)`` must return a :class:`~scdgm.modules.LossOutput`; batches are
    dicts of tensors already on ``device`` (see :class:`scdgm.data.MiniBatches`). Devices, data
    parallelism and mixed precision go through Lightning Fabric.

    Parameters
    ----------
    module
        The model; it is trained in place and ends holding the kept (best) weights.
    train, validation
        Re-iterable minibatches (one pass = one epoch). Without validation batches there is no
        early stopping and the last weights are kept.
    max_epochs
        Upper bound on epochs.
    lr, weight_decay
        Adam's step size and L2 penalty.
    max_grad_norm
        Clip the global gradient norm to this (``None``: no clipping).
    beta, kl_warmup_epochs
        The KL weight rises linearly from 0 to ``beta`` over ``kl_warmup_epochs`` epochs (counted
        in steps, so it is smooth within an epoch).
    early_stopping, patience, min_delta
        Stop when the validation monitor has not improved by ``min_delta`` for ``patience`` epochs
        after warm-up. The monitor is the module's ``early_stopping_term`` where it names one (a
        classifier's held-out label NLL, which the KL weight does not change, so it is watched from the
        first epoch when ``early_stopping_during_warmup``), else the negative ELBO where the module
        reports one, else the loss. The weights of the best epoch are restored.
    restore_best
        ``False``: run ``max_epochs`` and keep the last epoch's weights even with validation batches
        (whose loss is then only recorded), for held-out sets too small to choose an epoch by.
    device
        Torch device string, already resolved (not ``"auto"``).
    devices
        Processes of data-parallel training (DDP, started with ``spawn``): each takes every
        ``devices``-th minibatch and gradients are averaged across them every step, so an epoch
        has ``devices`` times fewer steps. On ``"cuda"`` one GPU each, on ``"cpu"`` one process
        each (to test the path). Loss histories are averaged over processes.
    precision
        Fabric precision: ``"32-true"``, ``"bf16-mixed"``, ``"16-mixed"``.
    seed
        Seeds the spawned processes (process ``r`` with ``seed + r``) when ``devices > 1``; a
        single process trains with the caller's random state.
    progress_bar
        Show a progress bar; ``None`` follows ``scdgm.settings.progress_bar``.
    description
        Label of the progress bar.

    Returns
    -------
    :class:`TrainResult` with the per-epoch history and what the run did.
    """
    import torch
    import torch.multiprocessing

    from .._checks import check_int
    from ._run import check_precision, check_run_arguments

    # The tools check these too, before reading data; fit is public, and lr=0 would "train" without a step.
    max_epochs = check_int("max_epochs", max_epochs)
    kl_warmup_epochs = check_int("kl_warmup_epochs", kl_warmup_epochs, minimum=0)
    check_run_arguments(
        lr=lr,
        weight_decay=weight_decay,
        beta=beta,
        patience=patience,
        max_epochs=max_epochs,
        kl_warmup_epochs=kl_warmup_epochs,
    )
    check_precision(precision, device)
    if isinstance(devices, bool) or not isinstance(devices, int) or devices < 1:
        msg = f"devices must be a positive integer, not {devices!r}."
        raise ValueError(msg)
    if len(train) // devices == 0:  # type: ignore[arg-type]
        msg = "The training set yields no minibatch: lower batch_size or pass more cells."
        raise ValueError(msg)
    options = _Options(
        max_epochs=max_epochs,
        lr=lr,
        weight_decay=weight_decay,
        max_grad_norm=max_grad_norm,
        beta=beta,
        kl_warmup_epochs=kl_warmup_epochs,
        early_stopping=early_stopping,
        patience=patience,
        min_delta=min_delta,
        restore_best=restore_best,
        device=device,
        show=settings.progress_bar if progress_bar is None else progress_bar,
        description=description,
    )
    accelerator, one_device = _accelerator(device)
    if devices == 1 and precision == "32-true":
        return _train(_OneProcess(), module, train, validation, options)
    from lightning.fabric import Fabric

    if devices == 1:
        fabric = Fabric(accelerator=accelerator, devices=one_device, precision=precision)
        return _train(fabric, module, train, validation, options)
    if accelerator not in ("cpu", "cuda"):
        msg = f"devices={devices} needs device='cuda' (the first {devices} GPUs) or 'cpu', not {device!r}."
        raise ValueError(msg)
    from ..data import InMemoryStore

    for batches in (train, validation):
        if batches is not None and not isinstance(getattr(batches, "store", None), InMemoryStore):
            msg = f"devices={devices} needs the data in memory; streamed (backed) data trains on one device."
            raise ValueError(msg)
    fabric = Fabric(accelerator=accelerator, devices=devices, strategy="ddp_spawn", precision=precision)
    # Spawned processes get pickled copies of the module and the batches, sent from the CPU; each
    # moves them to its own device, and process 0 sends the trained weights back.
    train, validation = _to_device(train, "cpu"), _to_device(validation, "cpu")
    # torch's default sharing of tensors with spawned processes passes one file descriptor per
    # tensor, and a module whose tensors share storage passes one twice, which Python's spawn
    # refuses; sharing through named shared memory has neither limit.
    strategy = torch.multiprocessing.get_sharing_strategy()
    torch.multiprocessing.set_sharing_strategy("file_system")
    try:
        state, result = fabric.launch(_train_process, module.cpu(), train, validation, options, seed)
    finally:
        torch.multiprocessing.set_sharing_strategy(strategy)
    module.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()})
    module.to(device).eval()
    return result


class _OneProcess:
    """What :func:`_train` asks of Lightning Fabric, for one process in full precision.

    Fabric adds nothing there, and importing it costs seconds (it pulls in torchmetrics), a large
    share of a short run; mixed precision and data parallelism still go through Fabric.
    """

    world_size = 1
    global_rank = 0

    @staticmethod
    def setup(module: Any, optimizer: Any, *, move_to_device: bool = False) -> tuple[Any, Any]:
        return module, optimizer

    @staticmethod
    def backward(loss: torch.Tensor) -> None:
        loss.backward()

    @staticmethod
    def clip_gradients(module: Any, optimizer: Any, *, max_norm: float, error_if_nonfinite: bool = False) -> None:
        import torch

        parameters = [p for p in module.parameters() if p.grad is not None]
        if not parameters:
            return
        total = torch.nn.utils.get_total_norm([p.grad for p in parameters], error_if_nonfinite=error_if_nonfinite)
        # torch's clip_grad_norm_ always rescales (by 1 when under the norm) so that a GPU never waits for
        # the norm; on the CPU reading it is free, and skipping the no-op rescale saves a pass over every
        # gradient (0.27 -> 0.09 ms of a 7 ms VAE step). Same result: multiplying by 1.0 changes nothing.
        if parameters[0].device.type != "cpu" or total > max_norm:
            torch.nn.utils.clip_grads_with_norm_(parameters, max_norm, total)


def _train_process(
    fabric: Any, module: torch.nn.Module, train: Any, validation: Any, options: _Options, seed: int
) -> tuple[dict[str, torch.Tensor], TrainResult]:
    """One process of data-parallel training; process 0 returns the weights and the result."""
    import torch

    torch.manual_seed(seed + fabric.global_rank)
    device = str(fabric.device)
    if device != options.device:
        module, train, validation = module.to(device), _to_device(train, device), _to_device(validation, device)
        options = dataclasses.replace(options, device=device)
    # Training batches are shared out; every process scores all validation cells (a forward pass
    # only), and the epoch means are averaged over processes so they all take the same decisions.
    train = _Shard(train, fabric.global_rank, fabric.world_size)
    options = dataclasses.replace(options, show=options.show and fabric.global_rank == 0)
    result = _train(fabric, module, train, validation, options)
    # numpy, not tensors: torch would hand tensors over through this process's file descriptors,
    # gone once it exits
    return {k: v.detach().cpu().numpy() for k, v in module.state_dict().items()}, result


def _to_device(batches: Any, device: str) -> Any:
    """The same minibatches with their store moved to ``device`` (a spawned process's own GPU)."""
    if batches is None or not hasattr(batches, "store"):
        return batches
    moved = copy.copy(batches)
    moved.store = batches.store.to(device)
    return moved


def _train(fabric: Any, module: Any, train: Any, validation: Any, options: _Options) -> TrainResult:
    """The training loop proper, in one process (of one or several)."""
    import torch
    from tqdm.auto import tqdm

    n_steps_per_epoch = len(train)
    warmup = KLWarmup(options.beta, options.kl_warmup_epochs * n_steps_per_epoch)
    # The fused kernel updates every parameter in one pass instead of one pass per tensor operation:
    # about 1 ms of a 15 ms VAE step on two CPU cores, and fewer kernel launches on a GPU.
    fused = torch.device(options.device).type in ("cpu", "cuda")
    optimizer = torch.optim.Adam(
        module.parameters(), lr=options.lr, weight_decay=options.weight_decay, eps=0.01, fused=fused
    )
    fmodule, foptimizer = fabric.setup(module, optimizer, move_to_device=False)
    distributed = fabric.world_size > 1

    def train_step(batch: dict) -> Any:
        nonlocal step
        out = fmodule(batch, kl_weight=warmup.weight(step))
        foptimizer.zero_grad(set_to_none=True)
        fabric.backward(out.loss)
        if options.max_grad_norm is not None:
            fabric.clip_gradients(fmodule, foptimizer, max_norm=options.max_grad_norm, error_if_nonfinite=False)
        foptimizer.step()
        step += 1
        return out

    def validation_step(batch: dict) -> Any:
        return fmodule(batch, kl_weight=warmup.weight(max(step - 1, 0)))

    def epoch_means(sums: dict[str, torch.Tensor], n_cells: int, prefix: str) -> dict[str, float]:
        if distributed:
            # every process must see the same means, or their early-stopping decisions would differ
            sums = {k: fabric.all_reduce(v, reduce_op="sum") for k, v in sorted(sums.items())}
            n_cells = int(fabric.all_reduce(torch.tensor(float(n_cells), device=fabric.device), reduce_op="sum"))
        return _epoch_means(sums, n_cells, prefix)

    has_validation = validation is not None and len(validation) > 0
    result = TrainResult()
    history: dict[str, list[float]] = {"epoch": [], "kl_weight": [], "epoch_seconds": []}
    best_value, best_state, epochs_without_gain = math.inf, None, 0
    step = 0
    train_seconds, train_cells = 0.0, 0
    start = time.perf_counter()
    bar = tqdm(range(options.max_epochs), desc=options.description, disable=not options.show, leave=False)
    for epoch in bar:
        fmodule.train()
        t0 = time.perf_counter()
        try:
            sums, n_cells = _run_epoch(fmodule, train, train_step)
        except ValueError as error:
            # Distributions refuse NaN parameters with a ValueError once the weights have diverged;
            # its first line says which, the lines after it dump the whole parameter tensor. Any other
            # ValueError is a fault of ours or of the input, and is raised as it is.
            if not _diverged(module, error):
                raise
            reason = str(error).strip().splitlines()[0].rstrip(":") if str(error).strip() else type(error).__name__
            msg = (
                f"Training diverged at epoch {epoch} ({reason}). Lower lr (now {options.lr:g}) or check the "
                "input for extreme values."
            )
            raise TrainingError(msg) from error
        means = epoch_means(sums, n_cells, "train")
        epoch_seconds = time.perf_counter() - t0  # epoch_means synchronised with the device
        train_seconds += epoch_seconds
        train_cells += n_cells * fabric.world_size
        if has_validation:
            fmodule.eval()
            with torch.inference_mode():
                val_sums, val_cells = _run_epoch(fmodule, validation, validation_step)
            means.update(epoch_means(val_sums, val_cells, "validation"))
        if not all(math.isfinite(v) for v in means.values()):
            msg = (
                f"The loss became {means} at epoch {epoch}. Lower lr, check the input for extreme "
                "values, or pick a likelihood that fits the data (raw counts: 'nb'; normalised: 'normal')."
            )
            raise TrainingError(msg)
        history["epoch"].append(epoch)
        history["kl_weight"].append(warmup.weight(max(step - 1, 0)))
        history["epoch_seconds"].append(epoch_seconds)
        for name, value in means.items():
            history.setdefault(name, []).append(value)
        term = getattr(module, "early_stopping_term", None)
        result.monitor = term or ("elbo" if "train_elbo" in means else "loss")
        prefix = "validation" if has_validation else "train"
        current = means[f"{prefix}_{result.monitor}"]
        bar.set_postfix({f"{prefix[:5]} {result.monitor}": f"{current:.4g}"}, refresh=False)
        result.n_epochs = epoch + 1
        watch_now = warmup.done(step - 1) or getattr(module, "early_stopping_during_warmup", False)
        if not has_validation or not watch_now or not options.restore_best:
            result.best_epoch = epoch
            continue
        if current < best_value - options.min_delta:
            best_value, epochs_without_gain, result.best_epoch = current, 0, epoch
            best_state = copy.deepcopy(module.state_dict())
        else:
            epochs_without_gain += 1
            if options.early_stopping and epochs_without_gain >= options.patience:
                result.stopped_early = True
                logger.info(
                    f"    early stopping at epoch {epoch}: no gain in validation {result.monitor} for "
                    f"{options.patience} epochs"
                )
                break
    bar.close()
    if best_state is not None:
        module.load_state_dict(best_state)
    module.eval()
    result.history = history
    result.seconds = time.perf_counter() - start
    result.train_cells_per_second = train_cells / train_seconds if train_seconds > 0 else 0.0
    return result


def _diverged(module: Any, error: ValueError) -> bool:
    """Whether ``error`` comes from weights gone non-finite (or a distribution refusing the values they gave)."""
    import torch

    if "constraint" in str(error):
        return True
    return any(not bool(torch.isfinite(p).all()) for p in module.parameters())


def evaluate(module: torch.nn.Module, batches: Iterable[dict], *, kl_weight: float = 1.0) -> dict[str, float]:
    """Per-cell means of every loss term over ``batches``, without gradients, by the training loop's own epoch code.

    At ``kl_weight=1`` (the default) ``elbo`` is the negative ELBO per cell, whatever warm-up trained the model.
    """
    import torch

    module.eval()
    with torch.inference_mode():
        sums, n_cells = _run_epoch(module, batches, lambda batch: module(batch, kl_weight=kl_weight))
    return {name: float(value) / n_cells for name, value in sums.items()} if n_cells else {}


def predict(module: torch.nn.Module, batches: Iterable[dict], fn: Any) -> np.ndarray:
    """Apply ``fn(module, batch) -> Tensor`` to every batch in order, without gradients, as one numpy array."""
    import torch

    module.eval()
    outputs = []
    with torch.inference_mode():
        for batch in batches:
            outputs.append(fn(module, batch).float().cpu())
    return torch.cat(outputs).numpy() if outputs else np.empty((0,), dtype=np.float32)
