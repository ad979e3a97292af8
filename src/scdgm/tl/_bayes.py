"""``tl.bayes_classify`` / ``tl.bayes_predict``: a Bayesian neural-network cell-type classifier with uncertainty.

Also the calibration metrics (expected calibration error, negative log-likelihood, Brier score,
AUROC) that the tool, the plot and the benchmarks share.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd
from anndata import AnnData

from .._keys import ClassifierKeys
from .._models import serialize_module, stored_model
from .._results import record_params, write_results
from .._settings import logger, settings
from .._warnings import ScdgmWarning
from ._common import check_choice, check_fraction, check_positive_int, model_for, prepare_for_model

if TYPE_CHECKING:
    import torch

    from ..data import PreparedData

INFERENCES = ("svi", "nuts")
N_CALIBRATION_BINS = 15
INFERENCE_BATCH_SIZE = 4096
# NUTS explores every weight at once; beyond this many it gets slow enough to warn about.
NUTS_WEIGHT_WARNING = 2000
# The guide is independent along the inputs' principal axes up to this many features (a dense
# features x features eigendecomposition); beyond, along the features themselves.
MAX_ROTATED_FEATURES = 4096
_AXIS_TOLERANCE = 1e-6
_EPS = 1e-12


# --------------------------------------------------------------------------------------------------
# metrics
def _check_proba(proba: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    proba = np.asarray(proba, dtype=np.float64)
    labels = np.asarray(labels)
    if proba.ndim != 2 or labels.shape != (proba.shape[0],):
        msg = f"proba must be (cells, classes) and labels (cells,), got {proba.shape} and {labels.shape}."
        raise ValueError(msg)
    if labels.size and (labels.min() < 0 or labels.max() >= proba.shape[1]):
        msg = f"labels must be class codes in [0, {proba.shape[1]}), got [{labels.min()}, {labels.max()}]."
        raise ValueError(msg)
    return proba, labels.astype(np.int64)


def calibration_bins(
    proba: np.ndarray, labels: np.ndarray, *, n_bins: int = N_CALIBRATION_BINS
) -> dict[str, np.ndarray]:
    """Reliability of the predicted label: cells binned by confidence, accuracy per bin.

    Parameters
    ----------
    proba
        Predicted class probabilities, ``(cells, classes)``.
    labels
        True class codes, ``(cells,)``.
    n_bins
        Equal-width bins of the confidence over ``[0, 1]`` (``(lo, hi]``, the first closed).

    Returns
    -------
    ``{"edges": (n_bins + 1,), "confidence": mean confidence per bin, "accuracy": accuracy per bin,
    "count": cells per bin}``; empty bins hold NaN confidence and accuracy.
    """
    proba, labels = _check_proba(proba, labels)
    confidence = proba.max(axis=1)
    correct = (proba.argmax(axis=1) == labels).astype(np.float64)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    which = np.clip(np.ceil(confidence * n_bins).astype(np.int64) - 1, 0, n_bins - 1)
    count = np.bincount(which, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_confidence = np.bincount(which, weights=confidence, minlength=n_bins) / count
        accuracy = np.bincount(which, weights=correct, minlength=n_bins) / count
    return {"edges": edges, "confidence": mean_confidence, "accuracy": accuracy, "count": count}


def expected_calibration_error(proba: np.ndarray, labels: np.ndarray, *, n_bins: int = N_CALIBRATION_BINS) -> float:
    """Expected calibration error: ``sum_b (n_b / n) |accuracy_b - confidence_b|`` over confidence bins.

    Parameters
    ----------
    proba
        Predicted class probabilities, ``(cells, classes)``.
    labels
        True class codes, ``(cells,)``.
    n_bins
        Equal-width confidence bins (15, as in Guo et al. 2017).

    Returns
    -------
    The ECE, in ``[0, 1]`` (0: confidence matches accuracy in every bin).
    """
    bins = calibration_bins(proba, labels, n_bins=n_bins)
    filled = bins["count"] > 0
    gaps = np.abs(bins["accuracy"][filled] - bins["confidence"][filled])
    return float(np.sum(bins["count"][filled] * gaps) / max(bins["count"].sum(), 1))


def negative_log_likelihood(proba: np.ndarray, labels: np.ndarray) -> float:
    """Mean ``-log p(true label)`` over cells (probabilities floored at ``1e-12``)."""
    proba, labels = _check_proba(proba, labels)
    return float(-np.mean(np.log(np.clip(proba[np.arange(len(labels)), labels], _EPS, None))))


def brier_score(proba: np.ndarray, labels: np.ndarray) -> float:
    """Mean over cells of ``sum_k (p_k - [k == label])**2`` (0 is perfect, 2 the worst)."""
    proba, labels = _check_proba(proba, labels)
    onehot = np.zeros_like(proba)
    onehot[np.arange(len(labels)), labels] = 1.0
    return float(np.mean(np.sum((proba - onehot) ** 2, axis=1)))


def auroc(scores: np.ndarray, positive: np.ndarray) -> float:
    """Area under the ROC curve of ``scores`` separating ``positive`` cells from the rest (sklearn)."""
    from sklearn.metrics import roc_auc_score

    positive = np.asarray(positive, dtype=bool)
    if positive.all() or not positive.any():
        return float("nan")
    return float(roc_auc_score(positive, np.asarray(scores, dtype=np.float64)))


def classification_metrics(proba: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """Accuracy, expected calibration error (15 bins), negative log-likelihood and Brier score.

    Parameters
    ----------
    proba
        Predicted class probabilities, ``(cells, classes)``.
    labels
        True class codes, ``(cells,)``.

    Returns
    -------
    ``{"accuracy", "ece", "nll", "brier", "n_cells"}``.
    """
    proba, labels = _check_proba(proba, labels)
    return {
        "accuracy": float(np.mean(proba.argmax(axis=1) == labels)),
        "ece": expected_calibration_error(proba, labels),
        "nll": negative_log_likelihood(proba, labels),
        "brier": brier_score(proba, labels),
        "n_cells": len(labels),
    }


def uncertainty_from_summary(summary: np.ndarray) -> dict[str, np.ndarray]:
    """Per-cell predictive quantities from the module's predictive summary (mean probabilities, expected entropy).

    Returns
    -------
    ``"proba"`` (cells x classes), ``"pred"`` (codes), ``"confidence"``, ``"entropy"`` (total predictive
    entropy ``H[mean_s p_s]``), ``"aleatoric"`` (``mean_s H[p_s]``) and ``"epistemic"`` (their difference,
    the mutual information between the label and the weights, clipped at 0), in nats.
    """
    summary = np.asarray(summary, dtype=np.float64)
    proba, aleatoric = summary[:, :-1], summary[:, -1]
    entropy = -np.sum(proba * np.log(np.clip(proba, _EPS, None)), axis=1)
    return {
        "proba": proba,
        "pred": proba.argmax(axis=1),
        "confidence": proba.max(axis=1),
        "entropy": entropy,
        "aleatoric": aleatoric,
        "epistemic": np.clip(entropy - aleatoric, 0.0, None),
    }


# --------------------------------------------------------------------------------------------------
# shared steps
def _row_blocks(data: PreparedData, rows: np.ndarray) -> Iterator[Any]:
    """The inputs of ``rows``, chunk by chunk (sparse or dense as stored), in the data's order."""
    wanted = np.zeros(data.n_obs, dtype=bool)
    wanted[rows] = True
    for start, stop, block in data.iter_chunks():
        pick = np.flatnonzero(wanted[start:stop])
        if pick.size:
            yield block[pick]


def _feature_stats(data: PreparedData, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and standard deviation of every feature over ``rows``, read chunk by chunk."""
    import scipy.sparse as sp

    total = np.zeros(data.n_vars)
    squares = np.zeros(data.n_vars)
    for block in _row_blocks(data, rows):
        if sp.issparse(block):
            total += np.asarray(block.sum(axis=0), dtype=np.float64).ravel()
            squares += np.asarray(block.multiply(block).sum(axis=0), dtype=np.float64).ravel()
        else:
            block = np.asarray(block, dtype=np.float64)
            total += block.sum(axis=0)
            squares += (block**2).sum(axis=0)
    n = max(len(rows), 1)
    mean = total / n
    sd = np.sqrt(np.clip(squares / n - mean**2, 0.0, None))
    return mean, sd


def _principal_axes(data: PreparedData, rows: np.ndarray, mean: np.ndarray, sd: np.ndarray) -> np.ndarray | None:
    """Orthonormal principal axes ``(features, k)`` of the standardised inputs of ``rows``, or ``None``.

    Only the axes along which the cells vary are kept (eigenvalue above ``1e-6`` of the largest): in
    the others the training cells carry no information, and new cells' components there would only
    meet weights drawn from the prior. Beyond ``MAX_ROTATED_FEATURES`` features the covariance matrix
    gets too large to decompose, and ``None`` keeps the features' own basis (as it does for inputs
    that do not vary at all).
    """
    if data.n_vars > MAX_ROTATED_FEATURES:
        logger.info(
            f"{data.n_vars} features exceed {MAX_ROTATED_FEATURES}: the guide stays independent per feature "
            "(for a better-calibrated classifier, pass a lower-dimensional use_rep such as 'X_vae' or 'X_pca')"
        )
        return None
    import scipy.sparse as sp

    from ..modules._bayes import SD_FLOOR

    scatter = np.zeros((data.n_vars, data.n_vars))
    for block in _row_blocks(data, rows):
        dense = block.toarray() if sp.issparse(block) else np.asarray(block)
        z = (dense.astype(np.float64) - mean) / np.maximum(sd, SD_FLOOR)
        scatter += z.T @ z
    eigenvalues, eigenvectors = np.linalg.eigh(scatter)
    largest = eigenvalues.max()
    if largest <= 0:
        return None
    keep = eigenvalues > _AXIS_TOLERANCE * largest
    # Largest first, so the kept axes read like principal components.
    return np.ascontiguousarray(eigenvectors[:, keep][:, ::-1], dtype=np.float32)


def _dense_rows(data: PreparedData, rows: np.ndarray) -> np.ndarray:
    import scipy.sparse as sp

    block = data.read_row_index(rows)
    return np.asarray(block.toarray() if sp.issparse(block) else block, dtype=np.float32)


def _predictive(module: Any, data: PreparedData, *, num_samples: int, device: str) -> dict[str, np.ndarray]:
    """Posterior predictive of every cell of ``data`` over one set of ``num_samples`` weight draws."""
    import torch

    from ..data import BatchStore, MiniBatches
    from ..train import predict

    store = BatchStore.from_prepared(data, device)
    batches = MiniBatches(store, np.arange(data.n_obs), batch_size=INFERENCE_BATCH_SIZE, shuffle=False)
    module.eval()
    with torch.no_grad():
        weights = module.draw_weights(num_samples)
    summary = predict(module, batches, lambda m, b: m.predictive_summary(b["x"], weights))
    return uncertainty_from_summary(summary)


def _obs_outputs(
    keys: ClassifierKeys, result: dict[str, np.ndarray], classes: list[str], threshold: float, index: pd.Index
) -> dict[str, Any]:
    pred = pd.Categorical.from_codes(result["pred"], categories=classes)
    return {
        keys.pred: pd.Series(pred, index=index),
        keys.confidence: result["confidence"].astype(np.float32),
        keys.entropy: result["entropy"].astype(np.float32),
        keys.epistemic: result["epistemic"].astype(np.float32),
        keys.unknown: result["epistemic"] > threshold,
    }


def _check_common(num_samples: int, unknown_threshold: float | None, device: str, seed: int) -> tuple[str, int]:
    check_positive_int("num_samples", num_samples)
    if unknown_threshold is not None and (not np.isfinite(unknown_threshold) or unknown_threshold < 0):
        msg = f"unknown_threshold must be a non-negative number of nats (or None), not {unknown_threshold!r}."
        raise ValueError(msg)
    return settings.resolve_device(device), settings.resolve_seed(seed)


# --------------------------------------------------------------------------------------------------
# training
@dataclass
class BayesRun:
    """Everything one ``tl.bayes_classify`` call produced, before anything is written."""

    result: dict[str, np.ndarray]
    classes: list[str]
    threshold: float
    uns: dict[str, Any]
    module: Any


def bayes_classify(
    adata: AnnData,
    labels_key: str,
    *,
    use_rep: str | None = "X_vae",
    layer: str | None = None,
    n_hidden: int = 32,
    n_layers: int = 1,
    prior_scale: float = 3.0,
    beta: float = 1.0,
    inference: Literal["svi", "nuts"] = "svi",
    num_samples: int = 200,
    num_warmup: int = 300,
    unknown_threshold: float | None = None,
    unknown_quantile: float = 0.95,
    validation_fraction: float = 0.2,
    max_epochs: int | None = None,
    kl_warmup_epochs: int | None = None,
    batch_size: int = 128,
    lr: float = 1e-2,
    early_stopping: bool = True,
    patience: int = 30,
    device: str = "auto",
    seed: int = 0,
    key_added: str = "bayes",
    copy: bool = False,
) -> AnnData | None:
    """Classify cells with a Bayesian neural network that reports how unsure it is.

    A multilayer perceptron with normal priors on its weights is fitted to the labelled cells of
    ``labels_key``; its posterior is approximated by a mean-field normal guide trained with
    stochastic variational inference through the package's engine (``inference="svi"``), or drawn by
    the No-U-Turn sampler (``inference="nuts"``, for small inputs and networks). Every cell, labelled
    or not, then gets the posterior predictive over ``num_samples`` weight draws: cells whose label
    is missing (NaN) are annotated from the labelled ones. To label another AnnData with the same
    features, use :func:`scdgm.tl.bayes_predict`.

    The labelled cells are split, stratified by class, into training and held-out cells. The held-out
    cells pick the epoch kept (early stopping), give the metrics in ``.uns`` and set the default
    threshold of ``unknown``: the ``unknown_quantile`` quantile of their epistemic uncertainty, so that
    about ``1 - unknown_quantile`` (5 %) of cells of known types are flagged (the rate realised on the
    held-out cells is recorded). The model is not refitted on all labelled cells afterwards, so the
    stored model is exactly the one that the metrics and the threshold describe.

    Parameters
    ----------
    adata
        Cells x features.
    labels_key
        ``.obs`` column of cell types; missing values mark the cells to annotate.
    use_rep
        ``.obsm`` key of the input, by default the latent space of :func:`scdgm.tl.vae`. ``None``
        reads ``.X`` or ``layer`` (log-normalised expression works well; features are standardised
        with the training cells' mean and standard deviation either way).
    layer
        Layer to read when ``use_rep=None``.
    n_hidden, n_layers
        Units per hidden layer and hidden layers (ReLU); ``n_layers=0`` is Bayesian multinomial
        logistic regression.
    prior_scale
        Prior standard deviation of the biases; a weight of a layer with ``n`` inputs has prior
        ``N(0, prior_scale**2 / n)``, so the prior means the same for 10 or 2,000 inputs. The default 3
        lets a confident prediction cost little KL; 1 left predictions underconfident on pbmc68k
        (validation NLL 0.63 against 0.53 on ``X_vae``, 0.83 against 0.52 on genes), much larger values
        overfit (see ``benchmarks/bayes_pbmc.py``).
    beta
        Weight of the KL to the prior in the SVI objective once warm-up ends: 1 is the variational
        posterior, below 1 tempers it (sharper, less regularised).
    inference
        ``"svi"`` (mean-field normal guide, minibatches, scales to millions of cells) or ``"nuts"``
        (exact posterior draws on all training cells at once; small problems only). The first layer
        reads the standardised inputs' coordinates along their principal axes in the training cells
        (up to 4,096 features; axes without variance are dropped). The prior does not change, but the
        mean-field guide is then independent along these axes instead of along correlated genes, which
        on pbmc68k genes lowered the calibration error from 0.071 to 0.045 (mean of 3 seeds,
        ``benchmarks/README.md``).
    num_samples
        Weight draws of the posterior predictive (SVI), or NUTS draws kept after warm-up.
    num_warmup
        NUTS warm-up (adaptation) steps.
    unknown_threshold
        Epistemic uncertainty (nats) above which a cell is flagged unknown. ``None``: from the held-out
        cells, see ``unknown_quantile``.
    unknown_quantile
        Quantile of the held-out epistemic uncertainty used as the default threshold; about
        ``1 - unknown_quantile`` of cells of known types are flagged.
    validation_fraction
        Share of labelled cells of each class held out.
    max_epochs
        Upper bound on SVI epochs; default scales with the cells (:func:`scdgm.train.default_max_epochs`).
    kl_warmup_epochs
        Epochs over which the KL weight rises to ``beta``; default a third of ``max_epochs``.
    batch_size, lr
        SVI minibatch size and Adam step size.
    early_stopping, patience
        Stop SVI when the held-out negative ELBO has not improved for ``patience`` epochs; keep the best.
    device
        ``"auto"`` (GPU when present), ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or ``"mps"``.
    seed
        Seeds the split, initialisation, minibatches, NUTS and the predictive draws.
    key_added
        Stem of the output keys.
    copy
        Return a new AnnData instead of writing into ``adata``.

    Returns
    -------
    ``None``, or a new AnnData when ``copy=True``, with these fields written:

    ``.obs["<key_added>_pred"]``
        Predicted cell type (categorical, the training classes) of every cell.
    ``.obs["<key_added>_confidence"]``
        Mean posterior predictive probability of the predicted type.
    ``.obs["<key_added>_entropy"]``
        Total predictive entropy (nats): aleatoric plus epistemic uncertainty.
    ``.obs["<key_added>_epistemic"]``
        Epistemic uncertainty: the mutual information between the label and the weights (nats),
        high where the weight draws disagree, e.g. for cell types absent from training.
    ``.obs["<key_added>_unknown"]``
        ``True`` where the epistemic uncertainty exceeds the threshold.
    ``.obsm["<key_added>_proba"]``
        Mean class probabilities (cells x classes, columns in the order of ``classes``).
    ``.uns["<key_added>"]["params"]``
        The arguments of this call, resolved defaults, device and package version.
    ``.uns["<key_added>"]["classes"]``
        Class names, in the order of the probability columns.
    ``.uns["<key_added>"]["metrics"]``
        Held-out ``accuracy``, ``ece`` (15 bins), ``nll``, ``brier``, ``n_cells``, the number of training
        and held-out cells, ``unknown_rate_validation`` (share of held-out cells flagged) and, for SVI,
        the training summary; for NUTS the sampler diagnostics and seconds.
    ``.uns["<key_added>"]["calibration"]``
        Held-out reliability diagram: ``edges``, ``confidence``, ``accuracy``, ``count`` per bin.
    ``.uns["<key_added>"]["unknown_threshold"]``
        The threshold used, and ``["unknown_threshold_source"]``: ``"validation_quantile"`` or ``"user"``.
    ``.uns["<key_added>"]["history"]``
        Per-epoch ``train_*`` / ``validation_*`` ``nll``, ``kl`` and ``loss`` per cell (SVI only).
    ``.uns["<key_added>"]["model"]``
        Architecture, variational parameters or NUTS draws, input standardisation, feature names,
        class encoding and input slot; survives ``write_h5ad`` and is used by :func:`scdgm.tl.bayes_predict`
        and :func:`scdgm.get_model`.
    ``.uns["<key_added>"]["split"]``
        ``validation_indices`` of the held-out cells.

    Examples
    --------
    >>> import scanpy as sc
    >>> import scdgm as dgm
    >>> adata = dgm.datasets.pbmc68k()
    >>> dgm.tl.vae(adata)  # doctest: +SKIP
    >>> dgm.tl.bayes_classify(adata, "cell_type")  # doctest: +SKIP
    >>> adata.uns["bayes"]["metrics"]["ece"]  # doctest: +SKIP
    >>> dgm.pl.uncertainty(adata)  # doctest: +SKIP
    """
    run = run_bayes_classify(
        adata,
        labels_key,
        use_rep=use_rep,
        layer=layer,
        n_hidden=n_hidden,
        n_layers=n_layers,
        prior_scale=prior_scale,
        beta=beta,
        inference=inference,
        num_samples=num_samples,
        num_warmup=num_warmup,
        unknown_threshold=unknown_threshold,
        unknown_quantile=unknown_quantile,
        validation_fraction=validation_fraction,
        max_epochs=max_epochs,
        kl_warmup_epochs=kl_warmup_epochs,
        batch_size=batch_size,
        lr=lr,
        early_stopping=early_stopping,
        patience=patience,
        device=device,
        seed=seed,
    )
    keys = ClassifierKeys(key_added)
    adata = adata.copy() if copy else adata
    write_results(
        adata,
        obs=_obs_outputs(keys, run.result, run.classes, run.threshold, adata.obs_names),
        obsm={keys.proba: run.result["proba"].astype(np.float32)},
        uns={keys.uns: run.uns},
    )
    return adata if copy else None


def _check_use_rep(adata: AnnData, use_rep: str | None, layer: str | None) -> None:
    if use_rep is not None and layer is not None:
        msg = (
            f"Pass layer= or use_rep=, not both (got layer={layer!r}, use_rep={use_rep!r}). "
            "To classify on a layer of genes, pass use_rep=None."
        )
        raise ValueError(msg)
    if use_rep is not None and use_rep not in adata.obsm:
        advice = "Run `dgm.tl.vae(adata)` first, or " if use_rep == "X_vae" else ""
        msg = (
            f"use_rep={use_rep!r} is not in adata.obsm (available: {list(adata.obsm.keys())}). "
            f"{advice}pass use_rep=None to classify on .X (or layer=)."
        )
        raise KeyError(msg)


def _class_codes(data: PreparedData, labels_key: str) -> tuple[np.ndarray, list[str]]:
    codes = data.covariates["labels"]
    classes = list(data.encodings["labels"].categories)
    counts = np.bincount(codes[codes >= 0], minlength=len(classes))
    if len(classes) < 2:
        found = f"only {classes[0]!r}" if classes else "none"
        msg = (
            f"adata.obs[{labels_key!r}] needs at least two classes among its labelled cells to train a classifier; "
            f"found {found} in {int(counts.sum())} labelled cells."
        )
        raise ValueError(msg)
    single = [name for name, n in zip(classes, counts, strict=True) if n == 1]
    if single:
        msg = (
            f"{len(single)} class(es) of adata.obs[{labels_key!r}] have a single labelled cell: {single[:5]}. "
            "That cell is used for training only (no held-out cell measures the class), and the classifier "
            "learns little from one example, so it will rarely predict the class. Merge or relabel such "
            "classes, or set their labels to NaN to annotate those cells instead."
        )
        warnings.warn(msg, ScdgmWarning, stacklevel=4)
    return codes, classes


def run_bayes_classify(
    adata: AnnData,
    labels_key: str,
    *,
    use_rep: str | None,
    layer: str | None,
    n_hidden: int,
    n_layers: int,
    prior_scale: float,
    beta: float,
    inference: str,
    num_samples: int,
    num_warmup: int,
    unknown_threshold: float | None,
    unknown_quantile: float,
    validation_fraction: float,
    max_epochs: int | None,
    kl_warmup_epochs: int | None,
    batch_size: int,
    lr: float,
    early_stopping: bool,
    patience: int,
    device: str,
    seed: int,
) -> BayesRun:
    """Validate the arguments of :func:`bayes_classify`, fit, predict and collect the results unwritten."""
    arguments = {name: value for name, value in locals().items() if name != "adata"}
    import time

    import torch

    from ..data import BatchStore, MiniBatches, prepare_data, split_indices
    from ..modules import BayesianClassifierModule
    from ..train import default_kl_warmup_epochs, default_max_epochs, fit, seeded

    check_choice("inference", inference, INFERENCES)
    for name, value in {"n_hidden": n_hidden, "batch_size": batch_size, "patience": patience}.items():
        check_positive_int(name, value)
    check_positive_int("n_layers", n_layers, minimum=0)
    check_positive_int("num_warmup", num_warmup, minimum=0)
    if max_epochs is not None:
        check_positive_int("max_epochs", max_epochs)
    if kl_warmup_epochs is not None:
        check_positive_int("kl_warmup_epochs", kl_warmup_epochs, minimum=0)
    for name, value in {"prior_scale": prior_scale, "lr": lr}.items():
        if not np.isfinite(value) or value <= 0:
            msg = f"{name} must be a positive number, not {value!r}."
            raise ValueError(msg)
    if not np.isfinite(beta) or beta < 0:
        msg = f"beta must be >= 0, not {beta!r}."
        raise ValueError(msg)
    check_fraction("validation_fraction", validation_fraction)
    if not 0 < unknown_quantile < 1:
        msg = f"unknown_quantile must lie in (0, 1), not {unknown_quantile!r}."
        raise ValueError(msg)
    device, seed = _check_common(num_samples, unknown_threshold, device, seed)
    if validation_fraction == 0 and unknown_threshold is None:
        msg = (
            "validation_fraction=0 leaves no held-out cells to set the unknown threshold from "
            "(nor to measure calibration): pass unknown_threshold=, or hold cells out."
        )
        raise ValueError(msg)
    if labels_key not in adata.obs.columns:
        msg = f"labels_key={labels_key!r} is not a column of adata.obs. Available columns: {list(adata.obs.columns)}."
        raise KeyError(msg)
    _check_use_rep(adata, use_rep, layer)

    data = prepare_data(adata, layer=layer, use_rep=use_rep, labels_key=labels_key, allow_missing_labels=True)
    codes, classes = _class_codes(data, labels_key)
    train_idx, val_idx = split_indices(data.n_obs, validation_fraction=validation_fraction, seed=seed, stratify=codes)
    n_unlabelled = int(np.sum(codes < 0))
    logger.info(
        f"training a Bayesian classifier ({inference}) of {len(classes)} classes on {len(train_idx)} cells "
        f"x {data.n_vars} features from {data.source} ({len(val_idx)} held out, {n_unlabelled} to annotate, {device})"
    )
    mean, sd = _feature_stats(data, train_idx)
    axes = _principal_axes(data, train_idx, mean, sd)

    max_epochs_used = kl_warmup_used = None
    with seeded(seed, device):
        module = BayesianClassifierModule(
            data.n_vars,
            len(classes),
            n_hidden=n_hidden,
            n_layers=n_layers,
            prior_scale=prior_scale,
            n_train=len(train_idx),
            n_posterior_samples=num_samples if inference == "nuts" else 0,
            n_components=None if axes is None else axes.shape[1],
        )
        module.set_standardization(
            torch.as_tensor(mean), torch.as_tensor(sd), None if axes is None else torch.as_tensor(axes)
        )
        module = module.to(device)
        history: dict[str, Any] = {}
        if inference == "svi":
            if batch_size > len(train_idx):
                batch_size = len(train_idx)
            max_epochs_used = default_max_epochs(len(train_idx)) if max_epochs is None else max_epochs
            kl_warmup_used = default_kl_warmup_epochs(max_epochs_used) if kl_warmup_epochs is None else kl_warmup_epochs
            if kl_warmup_used > max_epochs_used:
                msg = f"kl_warmup_epochs={kl_warmup_used} exceeds max_epochs={max_epochs_used}: the KL weight would never reach beta."
                raise ValueError(msg)
            store = BatchStore.from_prepared(data, device)
            train = MiniBatches(
                store, train_idx, batch_size=batch_size, shuffle=True, seed=seed, drop_last=len(train_idx) > batch_size
            )
            validation = (
                MiniBatches(store, val_idx, batch_size=INFERENCE_BATCH_SIZE, shuffle=False) if len(val_idx) else None
            )
            fitted = fit(
                module,
                train,
                validation,
                max_epochs=max_epochs_used,
                lr=lr,
                weight_decay=0.0,
                beta=beta,
                kl_warmup_epochs=kl_warmup_used,
                early_stopping=early_stopping,
                patience=patience,
                device=device,
                description="Bayesian classifier (SVI)",
            )
            history = {k: np.asarray(v) for k, v in fitted.history.items()}
            fit_summary = fitted.summary()
        else:
            n_weights = sum(int(np.prod(module.model.site_shape(n))) for n in module.model.site_names)
            if n_weights > NUTS_WEIGHT_WARNING:
                msg = (
                    f"NUTS samples all {n_weights} weights jointly; beyond {NUTS_WEIGHT_WARNING} this gets slow. "
                    "Use a low-dimensional use_rep (e.g. 'X_vae'), fewer n_hidden, or inference='svi'."
                )
                warnings.warn(msg, ScdgmWarning, stacklevel=3)
            x = torch.as_tensor(_dense_rows(data, train_idx), device=device)
            y = torch.as_tensor(codes[train_idx], device=device)
            start = time.perf_counter()
            diagnostics = module.run_nuts(x, y, num_warmup=num_warmup, progress_bar=settings.progress_bar)
            fit_summary = {**diagnostics, "seconds": time.perf_counter() - start}
    # The predictive draws get a freshly seeded generator of their own, as in `bayes_predict`: the stored
    # model then reproduces the written results exactly (`bayes_predict(adata, adata, seed=seed)`).
    with seeded(seed, device):
        result = _predictive(module, data, num_samples=num_samples, device=device)

    metrics: dict[str, Any] = {"n_train": len(train_idx), "n_validation": len(val_idx), **fit_summary}
    calibration: dict[str, Any] = {}
    if len(val_idx):
        metrics.update(classification_metrics(result["proba"][val_idx], codes[val_idx]))
        calibration = calibration_bins(result["proba"][val_idx], codes[val_idx])
    if unknown_threshold is None:
        threshold, source = float(np.quantile(result["epistemic"][val_idx], unknown_quantile)), "validation_quantile"
    else:
        threshold, source = float(unknown_threshold), "user"
    if len(val_idx):
        metrics["unknown_rate_validation"] = float(np.mean(result["epistemic"][val_idx] > threshold))

    # every argument as passed, with the epochs, device and seed as resolved
    params = record_params(
        **{
            **arguments,
            "max_epochs": max_epochs_used,
            "kl_warmup_epochs": kl_warmup_used,
            "device": device,
            "seed": seed,
        }
    )
    model = serialize_module(
        module.cpu(),
        var_names=np.asarray(data.var_names).astype(str),
        encodings={"labels": data.encodings["labels"].to_dict()},
        data={"use_rep": use_rep, "layer": layer, "counts": False},
    )
    uns = {
        "params": params,
        "classes": np.asarray(classes, dtype=object),
        "metrics": metrics,
        "calibration": calibration,
        "unknown_threshold": threshold,
        "unknown_threshold_source": source,
        "history": history,
        "model": model,
        "split": {"validation_indices": val_idx.astype(np.int64)},
    }
    return BayesRun(result, classes, threshold, uns, module)


# --------------------------------------------------------------------------------------------------
# prediction with a stored model
def bayes_predict(
    adata: AnnData,
    reference: AnnData,
    *,
    key: str = "bayes",
    layer: str | None = None,
    num_samples: int | None = None,
    unknown_threshold: float | None = None,
    device: str = "auto",
    seed: int = 0,
    key_added: str | None = None,
    copy: bool = False,
) -> AnnData | None:
    """Label the cells of ``adata`` with the Bayesian classifier stored in ``reference``.

    ``reference`` is the AnnData that :func:`scdgm.tl.bayes_classify` was run on (also after
    ``write_h5ad`` / ``read_h5ad``); it may be ``adata`` itself. ``adata`` needs the model's input:
    the same ``.obsm`` key (e.g. ``X_vae`` from :func:`scdgm.tl.embed` with the reference's VAE) or
    the same genes, matched by name (extra genes are ignored, order does not matter).

    Parameters
    ----------
    adata
        Cells to label.
    reference
        AnnData holding the trained model in ``.uns[key]``.
    key
        ``key_added`` of the training call.
    layer
        Layer of ``adata`` to read, for models trained on genes; default the layer used in training.
    num_samples
        Weight draws of the posterior predictive; default as in training.
    unknown_threshold
        Epistemic uncertainty above which a cell is flagged unknown; default the reference's threshold.
    device
        ``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or ``"mps"``.
    seed
        Seeds the predictive draws.
    key_added
        Stem of the output keys; default ``key``.
    copy
        Return a new AnnData instead of writing into ``adata``.

    Returns
    -------
    ``None``, or a new AnnData when ``copy=True``, with these fields written:

    ``.obs["<key_added>_pred"]``, ``.obs["<key_added>_confidence"]``, ``.obs["<key_added>_entropy"]``, ``.obs["<key_added>_epistemic"]``, ``.obs["<key_added>_unknown"]``
        As in :func:`scdgm.tl.bayes_classify`.
    ``.obsm["<key_added>_proba"]``
        Mean class probabilities (cells x classes).
    ``.uns["<key_added>"]``
        ``params`` of this call, ``classes``, ``unknown_threshold`` (and its source), and the
        reference's ``model``, held-out ``metrics`` and ``calibration``, so the result is self-contained.

    Examples
    --------
    >>> import scdgm as dgm
    >>> reference = dgm.datasets.pbmc68k()
    >>> dgm.tl.vae(reference)  # doctest: +SKIP
    >>> dgm.tl.bayes_classify(reference, "cell_type")  # doctest: +SKIP
    >>> query = reference[:100].copy()  # doctest: +SKIP
    >>> dgm.tl.bayes_predict(query, reference)  # doctest: +SKIP
    """
    from ..train import seeded

    entry = reference.uns.get(key)
    if not isinstance(entry, dict) or "classes" not in entry or "model" not in entry:
        msg = (
            f".uns[{key!r}] of the reference holds no Bayesian classifier. "
            f"Run `dgm.tl.bayes_classify(reference, labels_key, key_added={key!r})` first."
        )
        raise KeyError(msg)
    record = stored_model(reference, key)
    trained_params = dict(entry.get("params", {}))
    num_samples = int(trained_params.get("num_samples", 200)) if num_samples is None else num_samples
    device, seed = _check_common(num_samples, unknown_threshold, device, seed)
    data_spec = dict(record.get("data", {}))
    use_rep = data_spec.get("use_rep")
    if use_rep is not None:
        if layer is not None:
            msg = f"The model in .uns[{key!r}] reads .obsm[{use_rep!r}], not genes: layer={layer!r} does not apply."
            raise ValueError(msg)
        _check_use_rep(adata, use_rep, None)
        # Columns of an .obsm input are matched by position, so a representation of another width is
        # another space (e.g. a VAE with another n_latent), not a superset to pick columns from.
        n_input = int(dict(record["init_kwargs"])["n_input"])
        width = np.shape(adata.obsm[use_rep])[1]
        if width != n_input:
            msg = (
                f"The model in .uns[{key!r}] was trained on {n_input} columns of .obsm[{use_rep!r}], but this "
                f"AnnData's .obsm[{use_rep!r}] has {width}. Compute it with the reference's model, e.g. "
                f"`dgm.tl.embed(adata, reference=reference)` for X_vae."
            )
            raise ValueError(msg)
    data = prepare_for_model(adata, record, key=key, layer=layer)
    module, _ = model_for(reference, key, device)
    with seeded(seed, device):
        result = _predictive(module, data, num_samples=num_samples, device=device)
    classes = [str(c) for c in np.asarray(entry["classes"]).tolist()]
    if unknown_threshold is None:
        threshold, source = float(entry["unknown_threshold"]), "reference"
    else:
        threshold, source = float(unknown_threshold), "user"
    params = record_params(
        key=key, layer=layer, num_samples=num_samples, unknown_threshold=unknown_threshold, device=device, seed=seed
    )
    uns = {
        "params": params,
        "classes": np.asarray(classes, dtype=object),
        "unknown_threshold": threshold,
        "unknown_threshold_source": source,
        "metrics": dict(entry.get("metrics", {})),
        "calibration": dict(entry.get("calibration", {})),
        "model": record,
    }
    keys = ClassifierKeys(key if key_added is None else key_added)
    adata = adata.copy() if copy else adata
    write_results(
        adata,
        obs=_obs_outputs(keys, result, classes, threshold, adata.obs_names),
        obsm={keys.proba: result["proba"].astype(np.float32)},
        uns={keys.uns: uns},
    )
    return adata if copy else None


def predict_proba(module: torch.nn.Module, X: np.ndarray, *, num_samples: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Posterior predictive of a trained :class:`~scdgm.modules.BayesianClassifierModule` on a raw array (benchmarks)."""
    import torch

    from ..train import seeded

    module.eval()
    with seeded(seed), torch.no_grad():
        weights = module.draw_weights(num_samples)
        summary = module.predictive_summary(torch.as_tensor(np.asarray(X, dtype=np.float32)), weights)
    return uncertainty_from_summary(summary.numpy())
