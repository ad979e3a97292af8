"""``tl.vae``: autoencoders and VAEs for single-cell data, trained on the package's engine."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from anndata import AnnData

from .._keys import ModelKeys
from .._models import serialize_module
from .._results import record_params, write_results
from .._settings import logger, settings
from ._common import check_choice, check_fraction, check_positive_int

if TYPE_CHECKING:
    from ..data import PreparedData

KINDS = ("vae", "ae", "dae")
LIKELIHOODS = ("nb", "zinb", "poisson", "normal", "bernoulli")
COUNT_LIKELIHOODS = ("nb", "zinb", "poisson")
DECODERS = ("mlp", "linear")
DISPERSIONS = ("gene", "gene-batch")
PRECISIONS = ("32-true", "bf16-mixed", "16-mixed")
INFERENCE_BATCH_SIZE = 1024


def _check_binary(data: PreparedData) -> None:
    import scipy.sparse as sp

    if data.is_backed:
        return
    values = data.X.data if sp.issparse(data.X) else np.asarray(data.X).ravel()
    n_bad = int(np.count_nonzero((values != 0) & (values != 1)))
    if n_bad:
        msg = (
            f"likelihood='bernoulli' needs binary (0/1) data, but {data.source} holds {n_bad} other values. "
            "Binarise first, e.g. `dgm.pp.binarize(adata, threshold=0)`, or pick another likelihood."
        )
        raise ValueError(msg)


def latent_means(module: Any, store: Any, *, batch_size: int = INFERENCE_BATCH_SIZE) -> np.ndarray:
    """Posterior means of every cell in ``store``, in order."""
    from ..data import MiniBatches
    from ..train import predict

    batches = MiniBatches(store, np.arange(store.n_obs), batch_size=batch_size, shuffle=False)
    return predict(module, batches, lambda m, b: m.latent_mean(b))


def heldout_metrics(
    module: Any, store: Any, indices: np.ndarray, *, batch_size: int = INFERENCE_BATCH_SIZE
) -> dict[str, float]:
    """Per-cell means of the loss terms on ``indices`` at full KL weight (negative ELBO, reconstruction, KL)."""
    import torch

    from ..data import MiniBatches

    if len(indices) == 0:
        return {}
    batches = MiniBatches(store, indices, batch_size=batch_size, shuffle=False)
    module.eval()
    sums: dict[str, float] = {}
    with torch.inference_mode():
        for batch in batches:
            out = module(batch, kl_weight=1.0)
            for name, value in out.terms.items():
                sums[name] = sums.get(name, 0.0) + float(value) * out.n_obs
    return {name: value / len(indices) for name, value in sums.items() if name != "loss"}


def vae(
    adata: AnnData,
    *,
    layer: str | None = None,
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
    device: str = "auto",
    devices: int = 1,
    precision: Literal["32-true", "bf16-mixed", "16-mixed"] = "32-true",
    seed: int = 0,
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
    device
        ``"auto"`` (GPU when present), ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or ``"mps"``.
    devices
        Data-parallel training (DDP) on this many GPUs (``device="cuda"``) or CPU processes: each
        process takes its share of every epoch's minibatches and gradients are averaged every step,
        so with the same ``batch_size`` an epoch has ``devices`` times fewer steps. The data must be
        in memory (not backed). Results depend on ``devices``, not only on ``seed``.
    precision
        ``"32-true"``, or mixed precision ``"bf16-mixed"`` / ``"16-mixed"`` on a GPU.
    seed
        Seeds the split, initialisation, minibatch order and sampling; the same seed on the same
        machine gives the same latent space.
    key_added
        Stem of the output keys.
    copy
        Return a new AnnData instead of writing into ``adata``.

    Returns
    -------
    ``None``, or a new AnnData when ``copy=True``, with these fields written:

    ``.obsm["X_<key_added>"]``
        Posterior means of the latent space (cells x ``n_latent``); the code itself for ``ae``/``dae``.
    ``.uns["<key_added>"]["params"]``
        The arguments of this call, the resolved ``max_epochs``, ``kl_warmup_epochs``, device and
        the package version.
    ``.uns["<key_added>"]["history"]``
        Per-epoch means of each loss term, ``train_*`` and ``validation_*`` (``elbo`` is the
        negative ELBO per cell, lower is better), and the KL weight.
    ``.uns["<key_added>"]["metrics"]``
        Held-out (``validation_*``) and training per-cell negative ELBO, reconstruction and KL of the
        kept model, and training speed.
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
    training = {name: value for name, value in locals().items() if name not in ("adata", "key_added", "copy")}
    run = run_vae(adata, **training)
    keys = ModelKeys(key_added)
    adata = adata.copy() if copy else adata
    write_results(
        adata,
        obsm={keys.obsm: run.latent},
        uns={keys.uns: run.uns_entry()},
    )
    return adata if copy else None


@dataclass
class VAERun:
    """Everything one ``tl.vae`` training produced, before anything is written."""

    latent: np.ndarray
    params: dict[str, Any]
    history: dict[str, Any]
    metrics: dict[str, Any]
    model: dict[str, Any]
    validation_idx: np.ndarray
    module: Any
    data: PreparedData

    def uns_entry(self) -> dict[str, Any]:
        """The ``.uns[key]`` record of the run."""
        return {
            "params": self.params,
            "history": {k: np.asarray(v) for k, v in self.history.items()},
            "metrics": self.metrics,
            "model": self.model,
            "split": {"validation_indices": self.validation_idx.astype(np.int64)},
        }


def run_vae(
    adata: AnnData,
    *,
    layer: str | None,
    batch_key: str | None,
    n_latent: int,
    n_hidden: int,
    n_layers: int,
    kind: str,
    likelihood: str,
    decoder: str,
    dispersion: str,
    beta: float,
    kl_warmup_epochs: int | None,
    dropout: float,
    corruption: float,
    max_epochs: int | None,
    loadings_l1: float,
    batch_size: int,
    lr: float,
    weight_decay: float,
    early_stopping: bool,
    patience: int,
    validation_fraction: float,
    device: str,
    precision: str,
    seed: int,
    devices: int = 1,
) -> VAERun:
    """Validate the arguments of :func:`vae`, train, and collect the results without writing them."""
    arguments = {name: value for name, value in locals().items() if name != "adata"}
    from ..data import BatchStore, MiniBatches, prepare_data, split_indices
    from ..modules import VAEModule
    from ..train import default_kl_warmup_epochs, default_max_epochs, fit, seeded

    check_choice("kind", kind, KINDS)
    check_choice("likelihood", likelihood, LIKELIHOODS)
    check_choice("decoder", decoder, DECODERS)
    check_choice("dispersion", dispersion, DISPERSIONS)
    check_choice("precision", precision, PRECISIONS)
    for name, value in {
        "n_latent": n_latent,
        "n_hidden": n_hidden,
        "n_layers": n_layers,
        "batch_size": batch_size,
    }.items():
        check_positive_int(name, value)
    if max_epochs is not None:
        check_positive_int("max_epochs", max_epochs)
    if kl_warmup_epochs is not None:
        check_positive_int("kl_warmup_epochs", kl_warmup_epochs, minimum=0)
    check_positive_int("patience", patience)
    check_positive_int("devices", devices)
    check_fraction("validation_fraction", validation_fraction)
    check_fraction("dropout", dropout)
    check_fraction("corruption", corruption)
    if dispersion == "gene-batch" and batch_key is None:
        msg = "dispersion='gene-batch' needs batches: pass batch_key, or use dispersion='gene'."
        raise ValueError(msg)
    if beta < 0:
        msg = f"beta must be >= 0, not {beta!r}."
        raise ValueError(msg)
    if not np.isfinite(loadings_l1) or loadings_l1 < 0:
        msg = f"loadings_l1 must be a finite number >= 0, not {loadings_l1!r}."
        raise ValueError(msg)
    if loadings_l1 > 0 and decoder != "linear":
        msg = f'loadings_l1={loadings_l1!r} penalises the gene loadings of a linear decoder; pass decoder="linear" or leave loadings_l1 at 0.'
        raise ValueError(msg)
    seed = settings.resolve_seed(seed)
    device = settings.resolve_device(device)

    data = prepare_data(adata, layer=layer, counts=likelihood in COUNT_LIKELIHOODS, batch_key=batch_key)
    if likelihood == "bernoulli":
        _check_binary(data)
    if n_latent >= data.n_vars:
        msg = f"n_latent={n_latent} must be smaller than the number of genes ({data.n_vars}) for a bottleneck."
        raise ValueError(msg)

    logger.info(f"training {kind} with {likelihood} likelihood on {data.n_obs} cells x {data.n_vars} genes ({device})")
    train_idx, val_idx = split_indices(data.n_obs, validation_fraction=validation_fraction, seed=seed)
    if batch_size > len(train_idx):
        msg = (
            f"batch_size={batch_size} is larger than the training set ({len(train_idx)} cells after holding out "
            f"validation_fraction={validation_fraction}). Lower batch_size."
        )
        raise ValueError(msg)
    max_epochs = default_max_epochs(len(train_idx)) if max_epochs is None else max_epochs
    check_positive_int("max_epochs", max_epochs)
    if kl_warmup_epochs is None:
        kl_warmup_epochs = default_kl_warmup_epochs(max_epochs) if kind == "vae" else 0
    if kl_warmup_epochs > max_epochs:
        msg = f"kl_warmup_epochs={kl_warmup_epochs} exceeds max_epochs={max_epochs}: the KL weight would never reach beta."
        raise ValueError(msg)

    n_batch = len(data.encodings["batch"].categories) if "batch" in data.encodings else 0
    with seeded(seed, device):
        module = VAEModule(
            data.n_vars,
            n_batch=n_batch,
            n_latent=n_latent,
            n_hidden=n_hidden,
            n_layers=n_layers,
            kind=kind,
            likelihood=likelihood,
            decoder=decoder,
            dropout=dropout,
            dispersion=dispersion,
            corruption=corruption,
            loadings_l1=loadings_l1,
        )
        store = BatchStore.from_prepared(data, device)
        train = MiniBatches(
            store, train_idx, batch_size=batch_size, shuffle=True, seed=seed, drop_last=len(train_idx) > batch_size
        )
        validation = (
            MiniBatches(store, val_idx, batch_size=INFERENCE_BATCH_SIZE, shuffle=False) if len(val_idx) else None
        )
        result = fit(
            module.to(device),
            train,
            validation,
            max_epochs=max_epochs,
            lr=lr,
            weight_decay=weight_decay,
            beta=beta,
            kl_warmup_epochs=kl_warmup_epochs,
            early_stopping=early_stopping,
            patience=patience,
            device=device,
            devices=devices,
            precision=precision,
            seed=seed,
            description=f"{kind} ({likelihood})",
        )
        latent = latent_means(module, store)
        metrics = {
            **{f"validation_{k}": v for k, v in heldout_metrics(module, store, val_idx).items()},
            **{f"train_{k}": v for k, v in heldout_metrics(module, store, train_idx).items()},
            "n_train": len(train_idx),
            "n_validation": len(val_idx),
            **result.summary(),
        }
    # every argument as passed, with max_epochs, kl_warmup_epochs, device and seed as resolved
    params = record_params(
        **{**arguments, "max_epochs": max_epochs, "kl_warmup_epochs": kl_warmup_epochs, "device": device, "seed": seed}
    )
    model = serialize_module(
        module,
        var_names=np.asarray(data.var_names).astype(str),
        encodings={name: enc.to_dict() for name, enc in data.encodings.items()},
        data={"layer": layer, "batch_key": batch_key, "counts": likelihood in COUNT_LIKELIHOODS},
    )
    return VAERun(latent, params, result.history, metrics, model, val_idx, module, data)
