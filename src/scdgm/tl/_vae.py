"""``tl.vae``: autoencoders and VAEs for single-cell data, trained on the package's engine."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from anndata import AnnData

from .._checks import check_choice, check_fraction, check_int, check_number
from .._choices import COUNT_LIKELIHOODS, DECODERS, DISPERSIONS, KINDS, LIKELIHOODS
from .._docs import doc_params
from .._keys import ModelKeys
from .._models import ModelRecord
from .._settings import logger
from ._common import ToolOptions, TrainingRun, check_copy, resolve_device_seed

if TYPE_CHECKING:
    from ..data import PreparedData


# the options that build the VAEModule, by the module's own argument names
_MODULE_ARGUMENTS = (
    "n_latent",
    "n_hidden",
    "n_layers",
    "kind",
    "likelihood",
    "decoder",
    "dropout",
    "dispersion",
    "corruption",
    "loadings_l1",
)


@dataclass(frozen=True)
class VAEOptions(ToolOptions):
    """The arguments of :func:`vae` that shape the model and its training (all but where it runs and writes)."""

    layer: str | None = None
    mask_var: str | np.ndarray | None = None
    batch_key: str | None = None
    n_latent: int = 10
    n_hidden: int = 128
    n_layers: int = 1
    kind: str = "vae"
    likelihood: str = "nb"
    decoder: str = "mlp"
    dispersion: str = "gene"
    beta: float = 1.0
    kl_warmup_epochs: int | None = None
    dropout: float = 0.1
    corruption: float = 0.1
    loadings_l1: float = 0.0
    max_epochs: int | None = None
    batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 1e-6
    early_stopping: bool = True
    patience: int = 30
    validation_fraction: float = 0.1
    n_restarts: int = 1
    devices: int = 1
    precision: str = "32-true"

    @property
    def counts(self) -> bool:
        """Whether the likelihood needs raw counts."""
        return self.likelihood in COUNT_LIKELIHOODS

    def check(self) -> None:
        """Refuse bad arguments before any data is read."""
        from ..train import TrainingOptions

        check_choice("kind", self.kind, KINDS)
        check_choice("likelihood", self.likelihood, LIKELIHOODS)
        check_choice("decoder", self.decoder, DECODERS)
        check_choice("dispersion", self.dispersion, DISPERSIONS)
        for name in ("n_latent", "n_hidden", "n_layers"):
            check_int(name, getattr(self, name))
        TrainingOptions.of(self).check()
        check_fraction("validation_fraction", self.validation_fraction)
        check_int("n_restarts", self.n_restarts)
        if self.n_restarts > 1 and self.validation_fraction == 0:
            msg = (
                f"n_restarts={self.n_restarts} keeps the restart with the best held-out loss, but "
                "validation_fraction=0 holds no cell out. Pass validation_fraction > 0 or n_restarts=1."
            )
            raise ValueError(msg)
        check_fraction("dropout", self.dropout)
        check_fraction("corruption", self.corruption)
        loadings_l1 = check_number("loadings_l1", self.loadings_l1, minimum=0.0)
        if self.dispersion == "gene-batch" and self.batch_key is None:
            msg = "dispersion='gene-batch' needs batches: pass batch_key, or use dispersion='gene'."
            raise ValueError(msg)
        if loadings_l1 > 0 and self.decoder != "linear":
            msg = f'loadings_l1={loadings_l1!r} penalises the gene loadings of a linear decoder; pass decoder="linear" or leave loadings_l1 at 0.'
            raise ValueError(msg)


def _held_out_loss(metrics: dict[str, Any]) -> float:
    """The held-out negative ELBO of a VAE (the reconstruction loss of an autoencoder); inf without held-out cells."""
    for name in ("validation_elbo", "validation_reconstruction"):
        if name in metrics:
            return float(metrics[name])
    return float("inf")


def _check_binary(data: PreparedData) -> None:
    from ..data import count_non_binary

    n_bad = count_non_binary(data)
    if n_bad:
        msg = (
            f"likelihood='bernoulli' needs binary (0/1) data, but {data.source} holds {n_bad} other values. "
            "Binarise first, e.g. `dgm.pp.binarize(adata, threshold=0)`, or pick another likelihood."
        )
        raise ValueError(msg)


@doc_params
def vae(
    adata: AnnData,
    *,
    layer: str | None = None,
    mask_var: str | np.ndarray | None = None,
    batch_key: str | None = None,
    n_latent: int = 10,
    n_hidden: int = 128,
    n_layers: int = 1,
    kind: Literal["vae", "ae", "dae"] = "vae",
    likelihood: Literal["nb", "zinb", "poisson", "normal", "bernoulli"] = "nb",
    decoder: Literal["mlp", "linear"] = "mlp",
    dispersion: Literal["gene", "gene-batch"] = "gene",
    beta: float = 1.0,
    kl_warmup_epochs: int | None = None,
    dropout: float = 0.1,
    corruption: float = 0.1,
    loadings_l1: float = 0.0,
    max_epochs: int | None = None,
    batch_size: int = 128,
    lr: float = 1e-3,
    weight_decay: float = 1e-6,
    early_stopping: bool = True,
    patience: int = 30,
    validation_fraction: float = 0.1,
    n_restarts: int = 1,
    device: str | None = None,
    devices: int = 1,
    precision: Literal["32-true", "bf16-mixed", "16-mixed"] = "32-true",
    seed: int | None = None,
    key_added: str = "vae",
    copy: bool = False,
) -> AnnData | None:
    """Train an autoencoder or variational autoencoder and store its latent space.

    One model family covers the non-linear PCA of a plain autoencoder, the denoising autoencoder
    (ADAGE), the VAE and beta-VAE with KL warm-up (Tybalt), count VAEs for scRNA-seq (scVI-style
    negative binomial, zero-inflated NB, Poisson), Gaussian and Bernoulli likelihoods, batch-conditional
    VAEs for integration and the linearly decoded VAE.

    Parameters
    ----------
    adata
        Cells x genes. Count likelihoods need raw counts (pass ``layer="counts"`` when ``.X`` is
        normalised).
    layer
        Layer to read instead of ``.X``.
    mask_var
        Train on the genes where this boolean ``.var`` column (e.g. ``"highly_variable"`` from
        :func:`scanpy.pp.highly_variable_genes`) or array is true, as :func:`scanpy.pp.pca` does. The
        model then knows only those genes: :func:`scdgm.tl.denoise` writes NaN for the others.
    batch_key
        ``.obs`` column of batches; its one-hot code conditions encoder and decoder.
    n_latent, n_hidden, n_layers
        Latent dimensions, hidden units per layer and hidden layers of encoder and decoder.
    kind
        ``"vae"``: Gaussian posterior and KL to N(0, I). ``"ae"``: deterministic autoencoder.
        ``"dae"``: denoising autoencoder, a ``corruption`` fraction of inputs masked to zero in training.
    likelihood
        ``"nb"``, ``"zinb"``, ``"poisson"`` for raw counts (library size from the data, gene scale
        from a softmax); ``"normal"`` for normalised or scaled data; ``"bernoulli"`` for binary data.
    decoder
        ``"mlp"`` or ``"linear"`` (linearly decoded VAE, see :func:`scdgm.tl.ldvae_loadings`).
    dispersion
        Negative binomial inverse dispersion per gene, or per gene and batch.
    beta
        Weight of the KL term once warm-up ends (beta-VAE; 1 is the ordinary VAE).
    kl_warmup_epochs
        Epochs over which the KL weight rises linearly from 0 to ``beta``. Default: a third of
        ``max_epochs``, so the full weight is always reached. Early stopping waits for its end.
    dropout
        Dropout rate of the hidden layers.
    corruption
        Fraction of input entries masked to zero in training, for ``kind="dae"``.
    loadings_l1
        ``decoder="linear"`` only: weight of an L1 penalty on the gene loadings, added to the
        per-cell training loss (as a lasso's ``alpha``); it makes factors sparse in genes. ``0``, the
        default, for none. See :func:`scdgm.tl.ldvae_loadings`.
    max_epochs
        Upper bound on epochs; default scales with the number of cells
        (:func:`scdgm.train.default_max_epochs`: 400 for up to 20,000 cells, down to 20).
    batch_size, lr, weight_decay
        Minibatch size, Adam step size and L2 penalty.
    early_stopping, patience
        Stop when the held-out loss has not improved for ``patience`` epochs; keep the best weights.
    validation_fraction
        Fraction of cells held out for early stopping and the held-out metrics.
    n_restarts
        Train this many models from different initialisations (seeds ``seed``, ``seed + 1``, ...) on
        the same split and keep the one with the best held-out loss (negative ELBO for a VAE).
        Costs ``n_restarts`` trainings; it steadies results that depend on the starting point, such
        as the factors of a linear decoder.
    device
        ``"auto"`` (GPU when present), ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or ``"mps"``; ``None``
        follows ``dgm.settings.device``.
    devices
        Data-parallel training (DDP) on this many GPUs (``device="cuda"``) or CPU processes: each
        process takes its share of every epoch's minibatches and gradients are averaged every step,
        so with the same ``batch_size`` an epoch has ``devices`` times fewer steps. The data must be
        in memory (not backed). Results depend on ``devices``, not only on ``seed``.
    precision
        ``"32-true"``, or mixed precision ``"bf16-mixed"`` / ``"16-mixed"`` (``"16-mixed"`` on a CUDA GPU only).
    seed
        Seeds the split, initialisation, minibatch order and sampling; the same seed on the same
        machine gives the same latent space. ``None`` follows ``dgm.settings.seed``.
    key_added
        Stem of the output keys.
    {copy_doc}

    Returns
    -------
    {returns_doc}

    ``.obsm["X_<key_added>"]``
        Posterior means of the latent space (cells x ``n_latent``); the code itself for ``ae``/``dae``.
    ``.uns["<key_added>"]["params"]``
        The arguments of this call, the resolved ``max_epochs``, ``kl_warmup_epochs``, device and
        the package version.
    ``.uns["<key_added>"]["history"]``
        Per-epoch means of each loss term, ``train_*`` and ``validation_*`` (``elbo`` is the
        negative ELBO per cell, lower is better), and the KL weight.
    ``.uns["<key_added>"]["metrics"]``
        Held-out (``validation_*``) and training (``train_*``, on up to 5,000 training cells drawn with
        ``seed``) per-cell negative ELBO, reconstruction and KL of the kept model, and training speed; with ``n_restarts > 1`` also ``restart_validation_loss`` (the
        held-out loss of every restart) and ``chosen_restart``.
    ``.uns["<key_added>"]["model"]``
        Architecture arguments, weights as numpy arrays, feature names, category encodings and input
        slot, so that :func:`scdgm.get_model`, :func:`scdgm.tl.denoise` and :func:`scdgm.tl.embed`
        work after ``write_h5ad``/``read_h5ad``.
    ``.uns["<key_added>"]["split"]``
        Indices of the validation cells.

    Examples
    --------
    >>> import scdgm as dgm
    >>> adata = dgm.datasets.pbmc68k()
    >>> dgm.tl.vae(adata, max_epochs=50)  # doctest: +SKIP
    >>> dgm.pl.latent(adata, color="cell_type")  # doctest: +SKIP
    """
    keys = ModelKeys(key_added)
    check_copy(adata, copy)
    run = train_vae(adata, VAEOptions.from_arguments(locals()), device=device, seed=seed)
    return run.write(adata, keys, tool="vae", copy=copy)


class VAERun(TrainingRun):
    """Everything one VAE training produced, before anything is written."""


def train_vae(adata: AnnData, options: VAEOptions, *, device: str | None, seed: int | None) -> VAERun:
    """Check ``options``, read the data, train a :class:`~scdgm.modules.VAEModule` and collect the results unwritten."""
    from ..data import prepare_data, split_indices
    from ..modules import VAEModule
    from ..train import TrainingOptions, predict_cells, seeded, train_module

    options.check()
    device, seed = resolve_device_seed(device, seed)
    data = prepare_data(
        adata, layer=options.layer, counts=options.counts, batch_key=options.batch_key, mask_var=options.mask_var
    )
    if options.likelihood == "bernoulli":
        _check_binary(data)
    if options.n_latent >= data.n_vars:
        msg = f"n_latent={options.n_latent} must be smaller than the number of genes ({data.n_vars}) for a bottleneck."
        raise ValueError(msg)

    logger.info(
        f"training {options.kind} with {options.likelihood} likelihood on {data.n_obs} cells x {data.n_vars} genes ({device})"
    )
    train_idx, val_idx = split_indices(data.n_obs, validation_fraction=options.validation_fraction, seed=seed)
    n_batch = data.encodings["batch"].n_categories if "batch" in data.encodings else 0
    restarts: list[tuple[float, Any, Any]] = []
    for restart in range(options.n_restarts):
        # every restart sees the same split; only the initialisation and the minibatch order change
        with seeded(seed + restart, device):
            module = VAEModule(
                data.n_vars, n_batch=n_batch, **{name: getattr(options, name) for name in _MODULE_ARGUMENTS}
            )
            trained = train_module(
                module,
                data,
                train_idx,
                val_idx,
                TrainingOptions.of(options),
                device=device,
                seed=seed + restart,
                variational=options.kind == "vae",
                description=f"{options.kind} ({options.likelihood})"
                + (f", restart {restart + 1}/{options.n_restarts}" if options.n_restarts > 1 else ""),
            )
        restarts.append((_held_out_loss(trained.metrics), module, trained))
    chosen = int(np.argmin([loss for loss, _, _ in restarts]))
    _, module, trained = restarts[chosen]
    if options.n_restarts > 1:
        trained.metrics["restart_validation_loss"] = np.array([loss for loss, _, _ in restarts])
        trained.metrics["chosen_restart"] = chosen
        logger.info(f"    kept restart {chosen + 1} of {options.n_restarts} (best held-out loss)")
    latent = predict_cells(module, data, lambda m, b: m.latent_mean(b), device=device)
    if options.counts and trained.metrics.get("train_reconstruction", 0.0) < 0:
        msg = (
            "The count model reports a negative reconstruction loss, which counts cannot have: the input is "
            "probably not raw counts. Check the layer you trained on."
        )
        logger.warning(msg)
    schedule = trained.schedule
    params = {
        **dataclasses.asdict(options),
        # the genes themselves are in the model record; an array mask is not repeated here
        "mask_var": options.mask_var if options.mask_var is None or isinstance(options.mask_var, str) else "array",
        "max_epochs": schedule.max_epochs,
        "kl_warmup_epochs": schedule.kl_warmup_epochs,
        "device": device,
        "seed": seed,
    }
    record = ModelRecord.from_module(
        module,
        var_names=data.var_names,
        layer=options.layer,
        batch_key=options.batch_key,
        counts=options.counts,
        encodings=data.encodings,
    )
    return VAERun(latent, params, trained.history, trained.metrics, record, val_idx, module)
