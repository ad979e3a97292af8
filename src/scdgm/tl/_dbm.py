"""``tl.dbm``: restricted and deep Boltzmann machines for binarised data, trained on the package's engine."""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import scipy.sparse as sp
from anndata import AnnData

from .._checks import check_fraction, check_int
from .._docs import doc_params
from .._keys import ModelKeys
from .._models import ModelRecord
from .._settings import logger
from ._common import ToolOptions, TrainingRun, check_copy, resolve_device_seed
from ._generate import GenerationPlan, register_generator

MIN_MONITORED_CELLS = 30
"""Fewer held-out cells than this are too few to choose the epoch by: training then keeps its last epoch."""

if TYPE_CHECKING:
    from ..data import PreparedData
    from ..modules import DBMModule, RBMModule


@dataclass(frozen=True)
class DBMOptions(ToolOptions):
    """The arguments of :func:`dbm` that shape the model and its training."""

    layer: str | None = "binary"
    n_hidden: Any = (50, 10)
    pretrain_epochs: int = 20
    max_epochs: int | None = None
    batch_size: int = 16
    lr: float = 1e-3
    weight_decay: float = 0.0
    n_chains: int = 100
    gibbs_steps: int = 5
    mean_field_steps: int = 10
    early_stopping: bool = True
    patience: int = 50
    cooldown_epochs: int = 20
    validation_fraction: float = 0.1
    n_ais_runs: int = 100
    n_ais_temperatures: int = 2000

    @property
    def hidden(self) -> tuple[int, ...]:
        """Units per hidden layer."""
        from ..modules._dbm import hidden_sizes

        return hidden_sizes(self.n_hidden)

    def check(self) -> None:
        """Refuse bad arguments before any data is read."""
        from ..train import TrainingOptions

        _ = self.hidden
        check_int("pretrain_epochs", self.pretrain_epochs, minimum=0)
        check_int("cooldown_epochs", self.cooldown_epochs, minimum=0)
        for name in ("n_chains", "gibbs_steps", "mean_field_steps"):
            check_int(name, getattr(self, name))
        check_int("n_ais_runs", self.n_ais_runs, minimum=2)
        check_int("n_ais_temperatures", self.n_ais_temperatures, minimum=2)
        TrainingOptions.of(self).check()
        check_fraction("validation_fraction", self.validation_fraction)


@dataclass
class DBMRun(TrainingRun):
    """Everything one training of :func:`dbm` produced, before anything is written."""

    pretraining: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)

    def uns_entry(self, tool: str) -> dict[str, Any]:
        """The ``.uns[key]`` entry of the run (with the pretrained RBMs' histories), its params marked as written by ``tool``."""
        return {**super().uns_entry(tool), "pretraining": self.pretraining}


@doc_params
def dbm(
    adata: AnnData,
    *,
    layer: str | None = "binary",
    n_hidden: int | tuple[int, ...] = (50, 10),
    pretrain_epochs: int = 20,
    max_epochs: int | None = None,
    batch_size: int = 16,
    lr: float = 1e-3,
    weight_decay: float = 0.0,
    n_chains: int = 100,
    gibbs_steps: int = 5,
    mean_field_steps: int = 10,
    early_stopping: bool = True,
    patience: int = 50,
    cooldown_epochs: int = 20,
    validation_fraction: float = 0.1,
    n_ais_runs: int = 100,
    n_ais_temperatures: int = 2000,
    device: str | None = None,
    seed: int | None = None,
    key_added: str = "dbm",
    copy: bool = False,
) -> AnnData | None:
    """Train a deep (or restricted) Boltzmann machine on binary data and store its top-layer activations.

    A Boltzmann machine with Bernoulli units (energy ``E(v, h1, h2) = -v'W1 h1 - h1'W2 h2 - b'v - c1'h1 -
    c2'h2``) is the course's generative model for binarised omics with few samples (Hess et al.;
    Nußberger et al. 2021). Training follows Salakhutdinov & Hinton (2009): greedy layer-wise
    pretraining of one RBM per hidden layer (with doubled inputs where a DBM layer has two neighbours),
    then joint training of all layers, the data-dependent statistics from the mean-field
    approximation and the model's from ``n_chains`` persistent Gibbs chains, with Adam. One hidden
    layer (``n_hidden=20``) is a restricted Boltzmann machine trained by persistent contrastive
    divergence, without pretraining.

    Early stopping watches the held-out negative pseudo-log-likelihood after every epoch (the
    conditional probability of each gene given the others, which needs no partition function: exact
    for an RBM, from mean-field bounds for a DBM, on 20 genes per cell). A quick AIS estimate of the
    log-likelihood after every epoch was tried and dropped: with a cost per epoch several times that of
    training, its noise (several nats) still exceeded the changes it had to detect. The kept model's
    ``log Z`` is estimated once, by AIS with ``n_ais_runs`` runs and ``n_ais_temperatures``
    temperatures, for the reported log-likelihoods.

    What the log-likelihoods estimate: ``log p(v) = log sum_h exp(-E(v, h)) - log Z``. The first term
    is exact for an RBM and replaced by its mean-field lower bound for a DBM; ``log Z`` comes from AIS,
    whose weights estimate ``Z`` without bias, so ``log Z`` is underestimated on average. An RBM's
    ``validation_loglik`` thus estimates the held-out log-likelihood (slightly optimistic when AIS is
    short), a DBM's a variational lower bound on it (Salakhutdinov & Hinton, 2009), not a strict bound.

    Parameters
    ----------
    adata
        Cells x genes with binary (0/1) values in ``layer``: run :func:`scdgm.pp.binarize` first.
    layer
        Layer of 0/1 values (``"binary"``, what :func:`scdgm.pp.binarize` writes); ``None`` reads ``.X``.
    n_hidden
        Units per hidden layer: a sequence for a DBM (``(50, 10)``: two hidden layers), one integer
        for an RBM.
    pretrain_epochs
        Epochs of persistent contrastive divergence for each RBM of the layer-wise pretraining
        (0: start the DBM from small random weights). Ignored for an RBM.
    max_epochs
        Upper bound on the epochs of joint training; default scales with the number of cells
        (:func:`scdgm.train.default_max_epochs`: 400 for up to 20,000 cells).
    batch_size, lr, weight_decay
        Minibatch size, Adam step size and L2 penalty, for pretraining and joint training.
    n_chains
        Persistent Gibbs chains of the negative phase.
    gibbs_steps
        Gibbs sweeps of the chains per training step.
    mean_field_steps
        Fixed-point iterations of the mean-field approximation (for training and ``.obsm``).
    early_stopping, patience
        Stop when the held-out negative pseudo-log-likelihood has not improved for ``patience``
        epochs; keep the best weights. With fewer than 30 held-out cells the estimate is too noisy to
        choose an epoch by (on 50 binarised pbmc68k cells it stopped at epoch 17, with cells no better
        than independent genes): training then runs ``max_epochs`` and keeps the last weights, and
        the held-out cells still give the held-out metrics.
    cooldown_epochs
        Epochs of joint training at a tenth of ``lr`` after that (0: none), the learning-rate decay of
        Salakhutdinov & Hinton. Without it the model is caught mid-swing: persistent chains move
        between the modes of the data together, and the weights chase them, so the final model's
        cells can over-represent one population (on binarised pbmc68k, 14 % monocyte-like cells
        instead of the data's 53 %, and 53 % after 20 epochs at a tenth of the step size).
    validation_fraction
        Fraction of cells held out for early stopping and the held-out log-likelihood (``0``: none,
        and the last epoch is kept).
    n_ais_runs, n_ais_temperatures
        Runs and inverse temperatures of the final AIS estimate of ``log Z``.
    device
        ``"auto"`` (GPU when present), ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or ``"mps"``; ``None``
        follows ``dgm.settings.device``.
    seed
        Seeds the split, initialisation, chains, minibatch order and AIS; the same seed on the same
        machine gives the same model. ``None`` follows ``dgm.settings.seed``.
    key_added
        Stem of the output keys.
    {copy_doc}

    Returns
    -------
    {returns_doc}

    ``.obsm["X_<key_added>"]``
        Mean-field probabilities of the top hidden layer's units (cells x last ``n_hidden``).
    ``.uns["<key_added>"]["params"]``
        The arguments of this call, ``n_hidden`` as a list, the resolved ``max_epochs``, device, seed
        and the package version.
    ``.uns["<key_added>"]["history"]``
        Per epoch of joint training, the cooldown epochs last: ``train_reconstruction`` /
        ``validation_reconstruction`` (cross-entropy of the cells under their mean-field reconstruction)
        and ``train_pseudo_nll`` / ``validation_pseudo_nll`` (negative pseudo-log-likelihood), nats per
        cell (the validation values are NaN during the cooldown, which trains on the training cells only).
    ``.uns["<key_added>"]["pretraining"]``
        The history of each pretrained RBM (``"rbm_1"``, ...): ``train_reconstruction`` per epoch.
    ``.uns["<key_added>"]["metrics"]``
        ``validation_loglik`` and ``train_loglik`` (mean log-likelihood per cell, see above),
        ``validation_loglik_independent`` (the same for independent Bernoulli genes with the training
        cells' detection rates, the baseline to beat), ``log_partition`` and
        ``log_partition_standard_error`` (final AIS), ``ais_seconds``, the
        reconstruction errors and ``pseudo_nll`` of the final model, ``n_epochs`` (before the cooldown),
        ``best_epoch``, ``cooldown_epochs``, ``n_train``, ``n_validation``, ``epoch_chosen_by_validation``
        (whether the held-out cells chose the epoch; see ``early_stopping``), ``seconds`` and training speed.
    ``.uns["<key_added>"]["model"]``
        Architecture, weights and feature names, so that :func:`scdgm.tl.generate`,
        :func:`scdgm.tl.pattern_extractor` and :func:`scdgm.get_model` work after
        ``write_h5ad``/``read_h5ad``.
    ``.uns["<key_added>"]["split"]``
        Indices of the validation cells.

    Examples
    --------
    >>> import scdgm as dgm
    >>> adata = dgm.datasets.pbmc68k()
    >>> dgm.pp.binarize(adata, layer="counts")
    >>> dgm.tl.dbm(adata, n_hidden=(50, 10))  # doctest: +SKIP
    >>> synthetic = dgm.tl.generate(adata, model_key="dbm", latent="prior")  # doctest: +SKIP
    """
    keys = ModelKeys(key_added)
    check_copy(adata, copy)
    run = train_dbm(adata, DBMOptions.from_arguments(locals()), device=device, seed=seed)
    return run.write(adata, keys, tool="dbm", copy=copy)


def _check_layer(adata: AnnData, layer: str | None) -> None:
    if layer is not None and layer not in adata.layers:
        msg = (
            f"layer={layer!r} is not in adata.layers (layers: {list(adata.layers)}). A Boltzmann machine needs 0/1 "
            "data: binarise first, e.g. `dgm.pp.binarize(adata, layer='counts')`, which writes .layers['binary']."
        )
        raise KeyError(msg)


def _check_binary(data: PreparedData, layer: str | None) -> None:
    from ..data import count_non_binary

    n_bad = count_non_binary(data)
    if n_bad:
        msg = (
            f"layer={layer!r}: a Boltzmann machine needs binary (0/1) data, but {data.source} holds {n_bad} other "
            "values. Binarise first, e.g. `dgm.pp.binarize(adata, layer='counts')` (detected = count > 0), and "
            "train on layer='binary'."
        )
        raise ValueError(msg)


def _hidden_data(probabilities: np.ndarray, obs_names: np.ndarray, layer: int) -> PreparedData:
    """Hidden-unit probabilities of the training cells as the input of the next RBM up."""
    from ..data import PreparedData

    return PreparedData(
        X=np.ascontiguousarray(probabilities, dtype=np.float32),
        source=f"hidden layer {layer} of the pretrained RBMs",
        var_names=np.asarray([f"h{layer}_{i}" for i in range(probabilities.shape[1])]),
        obs_names=obs_names,
        library=probabilities.sum(1).astype(np.float32),
    )


def _pretrain(
    data: PreparedData, train_idx: np.ndarray, options: DBMOptions, module: DBMModule, device: str, seed: int
) -> tuple[list[RBMModule], dict[str, dict[str, np.ndarray]]]:
    """Greedy layer-wise pretraining: one RBM per hidden layer, each on the hidden probabilities of the one below."""
    import torch

    from ..modules import RBMModule
    from ..modules._dbm import pretraining_factors
    from ..train import TrainingOptions, predict_cells, train_module

    training = dataclasses.replace(
        TrainingOptions.of(options), max_epochs=options.pretrain_epochs, early_stopping=False
    )
    rbms, histories = [], {}
    layer_data, rows = data, train_idx
    for i, (up, down) in enumerate(pretraining_factors(module.n_layers)):
        rbm = RBMModule(
            module.sizes[i],
            module.sizes[i + 1],
            up_factor=up,
            down_factor=down,
            persistent=True,
            n_chains=options.n_chains,
        )
        if i == 0:
            with torch.no_grad():
                rbm.visible_bias.copy_(module.base_logits)
        trained = train_module(
            rbm,
            layer_data,
            rows,
            np.empty(0, dtype=np.int64),
            training,
            device=device,
            seed=seed + i,
            variational=False,
            description=f"pretraining RBM {i + 1}/{module.n_layers}",
        )
        histories[f"rbm_{i + 1}"] = {k: v for k, v in trained.history.items() if k != "kl_weight"}
        rbms.append(rbm)
        if i + 1 < module.n_layers:
            probabilities = predict_cells(
                rbm, layer_data, lambda m, b: m.hidden_probabilities(b["x"]), device=device, rows=rows
            )
            layer_data = _hidden_data(probabilities, layer_data.obs_names[rows], i + 1)
            rows = np.arange(len(rows))
    return rbms, histories


def _cell_terms(module: DBMModule, batch: dict[str, Any]) -> Any:
    """Per cell: the variational bound on ``log p*(v)``, the reconstruction error and the negative pseudo-log-likelihood."""
    import torch

    v = batch["x"]
    mu = module.mean_field(v)
    return torch.stack(
        [
            module.variational_bound(v, mu),
            module.reconstruction(v, mu),
            -module.pseudo_log_likelihood(v, batch["index"]),
        ],
        dim=1,
    )


def _joined(first: dict[str, np.ndarray], second: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Two runs' histories one after the other; a column the second lacks is NaN there, its epochs continue."""
    n_first, n_second = len(first["epoch"]), len(second["epoch"])
    joined = {}
    for name, values in first.items():
        if name == "epoch":
            after = n_first + np.arange(n_second)
        else:
            after = second.get(name, np.full(n_second, np.nan))
        joined[name] = np.concatenate([np.asarray(values, dtype=np.float64), np.asarray(after, dtype=np.float64)])
    joined["epoch"] = joined["epoch"].astype(np.int64)
    return joined


def _independent_loglik(data: PreparedData, rates: np.ndarray, rows: np.ndarray) -> float | None:
    """Mean log-likelihood of ``rows`` under independent Bernoulli genes with ``rates`` (clipped as AIS's base)."""
    from ..data import row_blocks

    if not len(rows):
        return None
    p = np.clip(rates, 1e-3, 1 - 1e-3)
    total = 0.0
    for block in row_blocks(data, rows):
        x = block.toarray() if sp.issparse(block) else np.asarray(block)
        total += float((x @ np.log(p) + (1 - x) @ np.log1p(-p)).sum())
    return total / len(rows)


def train_dbm(adata: AnnData, options: DBMOptions, *, device: str | None, seed: int | None) -> DBMRun:
    """Check ``options`` and the data, pretrain, train a :class:`~scdgm.modules.DBMModule` and collect the results unwritten."""
    import torch

    from ..data import feature_stats, prepare_data, split_indices
    from ..modules import DBMModule
    from ..train import TrainingOptions, predict_cells, seeded, train_module
    from ..train._run import check_split

    options.check()
    device, seed = resolve_device_seed(device, seed)
    _check_layer(adata, options.layer)
    data = prepare_data(adata, layer=options.layer)
    _check_binary(data, options.layer)
    train_idx, val_idx = split_indices(data.n_obs, validation_fraction=options.validation_fraction, seed=seed)
    check_split(len(train_idx), options.batch_size, len(val_idx))
    hidden = options.hidden
    kind = "RBM" if len(hidden) == 1 else "DBM"
    logger.info(
        f"training a {kind} ({data.n_vars}-{'-'.join(map(str, hidden))}) on {data.n_obs} cells x {data.n_vars} genes ({device})"
    )
    rates, _ = feature_stats(data, train_idx)
    pretraining: dict[str, dict[str, np.ndarray]] = {}
    with seeded(seed, device):
        module = DBMModule(
            data.n_vars,
            hidden,
            mean_field_steps=options.mean_field_steps,
            gibbs_steps=options.gibbs_steps,
            n_chains=options.n_chains,
        )
        module.set_base_rates(rates)
        module.to(device)
        if module.n_layers > 1 and options.pretrain_epochs > 0:
            rbms, pretraining = _pretrain(data, train_idx, options, module, device, seed)
            module.load_pretrained(rbms)
        chooses_epoch = len(val_idx) >= MIN_MONITORED_CELLS
        if len(val_idx) and not chooses_epoch:
            logger.info(
                f"    {len(val_idx)} held-out cells are too few to choose the epoch by (fewer than "
                f"{MIN_MONITORED_CELLS}): training every epoch and keeping the last"
            )
        trained = train_module(
            module,
            data,
            train_idx,
            val_idx,
            dataclasses.replace(TrainingOptions.of(options), restore_best=chooses_epoch),
            device=device,
            seed=seed,
            variational=False,
            description=f"{kind} {'-'.join(map(str, hidden))}",
        )
        history, seconds = trained.history, trained.metrics["seconds"]
        if options.cooldown_epochs:
            cooldown = dataclasses.replace(
                TrainingOptions.of(options),
                lr=options.lr / 10,
                max_epochs=options.cooldown_epochs,
                early_stopping=False,
            )
            cooled = train_module(
                module,
                data,
                train_idx,
                np.empty(0, dtype=np.int64),
                cooldown,
                device=device,
                seed=seed + 1,
                variational=False,
                description=f"{kind} cooldown",
            )
            history, seconds = _joined(history, cooled.history), seconds + cooled.metrics["seconds"]
        latent = predict_cells(module, data, lambda m, b: m.top_activations(b["x"]), device=device)
        terms = predict_cells(module, data, _cell_terms, device=device)
        start = time.perf_counter()
        generator = torch.Generator(device=device).manual_seed(seed)
        log_z, log_z_error = module.log_partition_ais(options.n_ais_runs, options.n_ais_temperatures, generator)
        ais_seconds = time.perf_counter() - start

    metrics = {k: v for k, v in trained.metrics.items() if not k.startswith(("train_", "validation_"))}
    metrics["n_validation"] = len(val_idx)
    metrics["epoch_chosen_by_validation"] = chooses_epoch
    for prefix, rows in (("validation", val_idx), ("train", train_idx)):
        if len(rows):
            bound, reconstruction, pseudo_nll = terms[rows].mean(0)
            metrics[f"{prefix}_loglik"] = float(bound) - log_z
            metrics[f"{prefix}_reconstruction"] = float(reconstruction)
            metrics[f"{prefix}_pseudo_nll"] = float(pseudo_nll)
    metrics.update(
        {
            "validation_loglik_independent": _independent_loglik(data, rates, val_idx),
            "log_partition": log_z,
            "log_partition_standard_error": log_z_error,
            "ais_seconds": ais_seconds,
            "cooldown_epochs": options.cooldown_epochs,
            "seconds": seconds,
        }
    )
    params = {
        **dataclasses.asdict(options),
        "n_hidden": list(hidden),
        "max_epochs": trained.schedule.max_epochs,
        "device": device,
        "seed": seed,
    }
    record = ModelRecord.from_module(module, var_names=data.var_names, layer=options.layer, counts=False)
    return DBMRun(latent.astype(np.float32), params, history, metrics, record, val_idx, module, pretraining=pretraining)


# ---------------------------------------------------------------------- generation


def _check_dbm(record: ModelRecord, latent: str, key: str) -> None:
    """Boltzmann machines draw from both starting points: nothing to refuse."""


@register_generator("DBMModule", check=_check_dbm, mcmc=True)
def _sample_dbm(applied: Any, plan: GenerationPlan) -> sp.csr_matrix:
    """Gibbs samples of a Boltzmann machine: one chain per distinct donor, yielding as many cells as it was picked.

    A chain starts at its donor cell (``latent="posterior"``) or at fair coins (``"prior"``), runs
    ``plan.burn_in`` sweeps, then yields a cell every ``plan.thinning`` sweeps.
    """
    import torch

    from ..data import dense_rows
    from ..modules._dbm import DEFAULT_BURN_IN, DEFAULT_THINNING

    module = applied.module
    generator = torch.Generator(device=applied.device).manual_seed(plan.seed)
    donors, chain_of_cell = np.unique(plan.donors, return_inverse=True)
    order = np.argsort(chain_of_cell, kind="stable")
    starts = np.searchsorted(chain_of_cell[order], chain_of_cell[order])
    rank = np.empty(plan.n_cells, dtype=np.int64)
    rank[order] = np.arange(plan.n_cells) - starts
    if plan.latent == "posterior":
        visible = torch.as_tensor(dense_rows(applied.data, donors), device=applied.device)
        states = module.initial_states(len(donors), visible=visible, generator=generator)
    else:
        states = module.initial_states(len(donors), generator=generator)
    out = np.zeros((plan.n_cells, module.n_visible), dtype=np.float32)
    rounds = module.iter_samples(
        states,
        burn_in=DEFAULT_BURN_IN if plan.burn_in is None else plan.burn_in,
        n_per_chain=int(rank.max()) + 1,
        thinning=DEFAULT_THINNING if plan.thinning is None else plan.thinning,
        generator=generator,
    )
    for i, sample in enumerate(rounds):
        cells = np.flatnonzero(rank == i)
        out[cells] = sample[0][torch.as_tensor(chain_of_cell[cells], device=applied.device)].cpu().numpy()
    return sp.csr_matrix(out)
