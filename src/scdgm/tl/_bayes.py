"""``tl.bayes_classify`` / ``tl.bayes_predict``: a Bayesian neural-network cell-type classifier with uncertainty."""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd
from anndata import AnnData

from .._checks import check_choice, check_fraction, check_int, check_number, check_positive
from .._choices import INFERENCES
from .._docs import doc_params
from .._keys import ClassifierKeys, ModelKeys
from .._metrics import calibration_bins, classification_metrics, uncertainty_from_summary
from .._models import ModelRecord, holds_model
from .._results import record_params, write_results
from .._settings import logger
from .._warnings import ScdgmWarning
from ._common import ToolOptions, apply_stored_model, check_copy, check_uns_free, output_stem, resolve_device_seed

if TYPE_CHECKING:
    from ..data import PreparedData

PREDICTION_BATCH_SIZE = 4096


@dataclass(frozen=True)
class ClassifierOptions(ToolOptions):
    """The arguments of :func:`bayes_classify` that shape the classifier and its training."""

    use_rep: str | None = "X_vae"
    layer: str | None = None
    n_hidden: int = 32
    n_layers: int = 1
    prior_scale: float = 3.0
    beta: float = 1.0
    inference: str = "svi"
    num_samples: int = 200
    num_warmup: int = 300
    unknown_threshold: float | None = None
    unknown_alpha: float = 0.05
    unknown_label: str | None = None
    validation_fraction: float = 0.2
    max_epochs: int | None = None
    kl_warmup_epochs: int | None = None
    batch_size: int = 128
    lr: float = 1e-2
    early_stopping: bool = True
    patience: int = 30

    def check(self) -> None:
        """Refuse bad arguments before any data is read."""
        from ..train import TrainingOptions

        check_choice("inference", self.inference, INFERENCES)
        check_int("n_hidden", self.n_hidden)
        check_int("n_layers", self.n_layers, minimum=0)
        check_int("num_warmup", self.num_warmup, minimum=0)
        check_positive("prior_scale", self.prior_scale)
        TrainingOptions.of(self).check()
        check_fraction("validation_fraction", self.validation_fraction)
        check_number(
            "unknown_alpha",
            self.unknown_alpha,
            minimum=0.0,
            maximum=1.0,
            exclusive_minimum=True,
            exclusive_maximum=True,
        )
        _check_prediction(self.num_samples, self.unknown_threshold, self.unknown_label)
        if self.validation_fraction == 0 and self.unknown_threshold is None:
            msg = (
                "validation_fraction=0 leaves no held-out cells to set the unknown threshold from "
                "(nor to measure calibration): pass unknown_threshold=, or hold cells out."
            )
            raise ValueError(msg)


def _check_prediction(num_samples: Any, unknown_threshold: Any, unknown_label: Any = None) -> None:
    check_int("num_samples", num_samples)
    if unknown_threshold is not None:
        check_number("unknown_threshold", unknown_threshold, minimum=0.0)
    if unknown_label is not None and (not isinstance(unknown_label, str) or not unknown_label):
        msg = f"unknown_label must be a non-empty string (the category of flagged cells), not {unknown_label!r}."
        raise ValueError(msg)


def _predictive(module: Any, data: PreparedData, *, num_samples: int, device: str, seed: int) -> dict[str, np.ndarray]:
    """Posterior predictive of every cell of ``data`` over one set of ``num_samples`` weight draws.

    The draws get a freshly seeded generator of their own, so that a stored model reproduces the
    results written at training exactly (``bayes_predict(adata, adata, seed=seed)``).
    """
    import torch

    from ..train import predict_cells, seeded

    module.eval()
    with seeded(seed, device):
        with torch.no_grad():
            weights = module.draw_weights(num_samples)
        summary = predict_cells(
            module,
            data,
            lambda m, b: m.predictive_summary(b["x"], weights),
            device=device,
            batch_size=PREDICTION_BATCH_SIZE,
        )
    return uncertainty_from_summary(summary)


def _obs_outputs(
    keys: ClassifierKeys,
    result: dict[str, np.ndarray],
    classes: list[str],
    unknown: dict[str, np.ndarray],
    unknown_label: str | None,
    index: pd.Index,
) -> dict[str, Any]:
    flagged = unknown["flag"]
    if unknown_label is None:
        pred = pd.Categorical.from_codes(result["pred"], categories=classes)
    else:
        if unknown_label in classes:
            msg = f"unknown_label={unknown_label!r} is one of the classes; pick a name no class has."
            raise ValueError(msg)
        codes = np.where(flagged, len(classes), result["pred"])
        pred = pd.Categorical.from_codes(codes, categories=[*classes, unknown_label])
    return {
        keys.pred: pd.Series(pred, index=index),
        keys.confidence: result["confidence"].astype(np.float32),
        keys.entropy: result["entropy"].astype(np.float32),
        keys.epistemic: result["epistemic"].astype(np.float32),
        keys.unknown_score: unknown["score"].astype(np.float32),
        keys.unknown_pvalue: unknown["pvalue"].astype(np.float32),
        keys.unknown: flagged,
    }


def _coordinates(module: Any, data: PreparedData, device: str) -> np.ndarray:
    """Cells along the classifier's leading principal axes (standardised inputs): where distances are measured."""
    from .._novelty import MAX_AXES
    from ..train import predict_cells

    return predict_cells(module, data, lambda m, b: m.standardize(b["x"])[:, :MAX_AXES], device=device)


def _flags(scorer: Any, scores: np.ndarray, threshold: float) -> dict[str, np.ndarray]:
    return {"score": scores, "pvalue": scorer.pvalues(scores), "flag": scores > threshold}


def _pred_colors(adata: AnnData, labels_key: str | None, classes: list[str], unknown_label: str | None) -> list | None:
    """The colours of the labels in ``.uns["<labels_key>_colors"]`` for the predicted categories (grey: unknown)."""
    if labels_key is None or f"{labels_key}_colors" not in adata.uns or labels_key not in adata.obs:
        return None
    column = adata.obs[labels_key]
    categories = [str(c) for c in column.cat.categories] if isinstance(column.dtype, pd.CategoricalDtype) else []
    colors = list(np.asarray(adata.uns[f"{labels_key}_colors"]).astype(str))
    if len(colors) != len(categories) or not set(classes) <= set(categories):
        return None
    by_label = dict(zip(categories, colors, strict=True))
    return [by_label[c] for c in classes] + (["#b3b3b3"] if unknown_label is not None else [])


@doc_params
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
    unknown_alpha: float = 0.05,
    unknown_label: str | None = None,
    validation_fraction: float = 0.2,
    max_epochs: int | None = None,
    kl_warmup_epochs: int | None = None,
    batch_size: int = 128,
    lr: float = 1e-2,
    early_stopping: bool = True,
    patience: int = 30,
    device: str | None = None,
    seed: int | None = None,
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
    cells pick the epoch kept (early stopping on their predictive negative log-likelihood of the labels,
    not on the KL-annealed objective), give the metrics in ``.uns`` and calibrate the ``unknown`` flag.
    The model is not refitted on all labelled cells afterwards, so the stored model is exactly the one
    that the metrics and the calibration describe.

    Cells unlike every training class get a high ``unknown_score``: the larger of (a) the mean distance
    to the 10 nearest training cells, along the classifier's leading principal axes of the standardised
    inputs (up to 50), and (b) the epistemic uncertainty, each divided by its 95 % quantile on the
    held-out cells (a random half of them; the training cells' own epistemic uncertainty is too low to
    set a scale). (a) catches cells far from all classes, where a mean-field network can stay
    confident; (b) catches cells between classes. The other half of the held-out cells calibrates it: a
    cell's conformal p-value is the share of them scoring at least as high, and ``unknown`` flags
    ``p <= unknown_alpha``, so at most a share ``unknown_alpha`` of new cells of known types (exchangeable
    with the held-out ones) is flagged.

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
        ``unknown_score`` above which a cell is flagged unknown, instead of the conformal threshold
        that ``unknown_alpha`` sets.
    unknown_alpha
        Share of cells of known types that may be flagged unknown (the conformal guarantee).
    unknown_label
        Name of a category of ``.obs["<key_added>_pred"]`` that flagged cells get instead of a class;
        ``None`` keeps their predicted class (the flag is in ``.obs["<key_added>_unknown"]`` either way).
    validation_fraction
        Share of labelled cells of each class held out.
    max_epochs
        Upper bound on SVI epochs; default scales with the cells (:func:`scdgm.train.default_max_epochs`).
    kl_warmup_epochs
        Epochs over which the KL weight rises to ``beta``; default a third of ``max_epochs``.
    batch_size, lr
        SVI minibatch size (at most the number of training cells) and Adam step size.
    early_stopping, patience
        Stop SVI when the held-out negative ELBO has not improved for ``patience`` epochs; keep the best.
    device
        ``"auto"`` (GPU when present), ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or ``"mps"``; ``None``
        follows ``dgm.settings.device``.
    seed
        Seeds the split, initialisation, minibatches, NUTS and the predictive draws; ``None`` follows
        ``dgm.settings.seed``.
    key_added
        Stem of the output keys.
    {copy_doc}

    Returns
    -------
    {returns_doc}

    ``.obs["<key_added>_pred"]``
        Predicted cell type (categorical, the training classes) of every cell.
    ``.obs["<key_added>_confidence"]``
        Mean posterior predictive probability of the predicted type.
    ``.obs["<key_added>_entropy"]``
        Total predictive entropy (nats): aleatoric plus epistemic uncertainty.
    ``.obs["<key_added>_epistemic"]``
        Epistemic uncertainty: the mutual information between the label and the weights (nats),
        high where the weight draws disagree, e.g. for cell types absent from training.
    ``.obs["<key_added>_unknown_score"]``
        How unlike every training class a cell is (see above; 1 is the 95 % quantile of the training cells).
    ``.obs["<key_added>_unknown_pvalue"]``
        Conformal p-value of the score against the held-out known cells (NaN without held-out cells).
    ``.obs["<key_added>_unknown"]``
        ``True`` where the score exceeds ``unknown_threshold`` (by default: where the p-value is at most
        ``unknown_alpha``).
    ``.obsm["<key_added>_proba"]``
        Mean class probabilities (cells x classes, columns in the order of ``classes``).
    ``.uns["<key_added>"]["params"]``
        The arguments of this call, resolved defaults, device and package version.
    ``.uns["<key_added>"]["classes"]``
        Class names, in the order of the probability columns.
    ``.uns["<key_added>"]["metrics"]``
        Held-out ``accuracy``, ``ece`` (15 bins), ``nll``, ``brier``, ``n_cells``, the number of training
        and held-out cells, ``unknown_rate_validation`` (share of held-out cells flagged) and, for SVI,
        the training summary and the per-cell loss terms of the kept model (``validation_elbo``,
        ``train_elbo``, ...); for NUTS the sampler diagnostics and seconds.
    ``.uns["<key_added>"]["calibration"]``
        Held-out reliability diagram: ``edges``, ``confidence``, ``accuracy``, ``count`` per bin
        (read it with :func:`scdgm.get.calibration`).
    ``.uns["<key_added>"]["unknown_threshold"]``
        The score threshold used, with ``["unknown_threshold_source"]`` (``"conformal"`` or ``"user"``) and
        ``["unknown_alpha"]``.
    ``.uns["<key_added>"]["novelty"]``
        What scores new cells: the training cells' coordinates, the two scales and the held-out
        calibration scores; :func:`scdgm.tl.bayes_predict` uses it.
    ``.uns["<key_added>_pred_colors"]``
        When ``.uns["<labels_key>_colors"]`` exists: the colours of the predicted categories.
    ``.uns["<key_added>"]["history"]``
        Per-epoch ``train_*`` / ``validation_*`` ``nll``, ``kl`` and ``loss`` per cell (SVI only).
    ``.uns["<key_added>"]["model"]``
        Architecture, variational parameters or NUTS draws, input standardisation, feature names,
        class encoding and names, input slot and, when ``use_rep`` was written by a stored encoder
        (``X_vae`` by ``.uns["vae"]``), that encoder's key; survives ``write_h5ad`` and is used by :func:`scdgm.tl.bayes_predict`
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
    keys = ClassifierKeys(key_added)
    check_copy(adata, copy)
    options = ClassifierOptions.from_arguments(locals())
    run = train_classifier(adata, labels_key, options, device=device, seed=seed)
    adata = adata.copy() if copy else adata
    colors = _pred_colors(adata, labels_key, run.classes, options.unknown_label)
    write_results(
        adata,
        obs=_obs_outputs(keys, run.result, run.classes, run.unknown, options.unknown_label, adata.obs_names),
        obsm={keys.proba: run.result["proba"].astype(np.float32)},
        uns={keys.uns: run.uns, **({f"{keys.pred}_colors": colors} if colors else {})},
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


def _encoder_key(adata: AnnData, use_rep: str | None) -> str | None:
    """The ``.uns`` key of the stored encoder that wrote ``.obsm[use_rep]`` (``"X_vae"`` -> ``"vae"``), if any."""
    if use_rep is None or not use_rep.startswith("X_"):
        return None
    stem = use_rep[2:]
    if not stem or "/" in stem or not holds_model(adata, stem) or ModelKeys(stem).obsm != use_rep:
        return None
    return stem


def _classifier_entry(
    params: dict[str, Any], classes: list[str], unknown: tuple[float, str, float], novelty: dict, record: ModelRecord
) -> dict[str, Any]:
    """What both tools record in ``.uns[key]``: params, classes, how cells are flagged, and the model."""
    threshold, source, alpha = unknown
    return {
        "params": params,
        "classes": np.asarray(classes, dtype=object),
        "unknown_threshold": threshold,
        "unknown_threshold_source": source,
        "unknown_alpha": alpha,
        "novelty": novelty,
        "model": record.to_uns(),
    }


@dataclass
class ClassifierRun:
    """Everything one :func:`bayes_classify` call produced, before anything is written."""

    result: dict[str, np.ndarray]
    classes: list[str]
    unknown: dict[str, np.ndarray]
    uns: dict[str, Any]
    module: Any


def train_classifier(
    adata: AnnData, labels_key: str, options: ClassifierOptions, *, device: str | None, seed: int | None
) -> ClassifierRun:
    """Check ``options``, read the data, fit the classifier (SVI or NUTS), predict every cell; nothing is written."""
    import torch

    from ..data import feature_stats, prepare_data, principal_axes, split_indices
    from ..modules import BayesianClassifierModule
    from ..modules._bayes import SD_FLOOR
    from ..train import TrainingOptions, fit_nuts, seeded, train_module

    options.check()
    device, seed = resolve_device_seed(device, seed)
    if not isinstance(labels_key, str) or labels_key not in adata.obs.columns:
        msg = f"labels_key={labels_key!r} is not a column of adata.obs. Available columns: {list(adata.obs.columns)}."
        raise KeyError(msg)
    _check_use_rep(adata, options.use_rep, options.layer)

    data = prepare_data(
        adata, layer=options.layer, use_rep=options.use_rep, labels_key=labels_key, allow_missing_labels=True
    )
    codes, classes = _class_codes(data, labels_key)
    train_idx, val_idx = split_indices(
        data.n_obs, validation_fraction=options.validation_fraction, seed=seed, stratify=codes
    )
    logger.info(
        f"training a Bayesian classifier ({options.inference}) of {len(classes)} classes on {len(train_idx)} cells "
        f"x {data.n_vars} features from {data.source} ({len(val_idx)} held out, {int(np.sum(codes < 0))} to "
        f"annotate, {device})"
    )
    mean, sd = feature_stats(data, train_idx)
    axes = principal_axes(data, train_idx, mean, sd, sd_floor=SD_FLOOR)

    history: dict[str, Any] = {}
    max_epochs = kl_warmup_epochs = None
    with seeded(seed, device):
        module = BayesianClassifierModule(
            data.n_vars,
            len(classes),
            n_hidden=options.n_hidden,
            n_layers=options.n_layers,
            prior_scale=options.prior_scale,
            n_train=len(train_idx),
            n_posterior_samples=options.num_samples if options.inference == "nuts" else 0,
            n_components=None if axes is None else axes.shape[1],
        )
        module.set_standardization(
            torch.as_tensor(mean), torch.as_tensor(sd), None if axes is None else torch.as_tensor(axes)
        )
        module = module.to(device)
        if options.inference == "svi":
            trained = train_module(
                module,
                data,
                train_idx,
                val_idx,
                TrainingOptions.of(options),
                device=device,
                seed=seed,
                description="Bayesian classifier (SVI)",
            )
            history, fit_summary = trained.history, trained.metrics
            max_epochs, kl_warmup_epochs = trained.schedule.max_epochs, trained.schedule.kl_warmup_epochs
        else:
            fit_summary = {
                "n_train": len(train_idx),
                "n_validation": len(val_idx),
                **fit_nuts(module, data, train_idx, codes, num_warmup=options.num_warmup, device=device),
            }
    result = _predictive(module, data, num_samples=options.num_samples, device=device, seed=seed)

    metrics: dict[str, Any] = dict(fit_summary)
    calibration: dict[str, Any] = {}
    if len(val_idx):
        metrics.update(classification_metrics(result["proba"][val_idx], codes[val_idx]))
        calibration = calibration_bins(result["proba"][val_idx], codes[val_idx])
    from .._novelty import NoveltyScorer

    coordinates = _coordinates(module, data, device)
    # held-out cells: one half sets the scales of the score, the other calibrates its p-values
    shuffled = np.random.default_rng(seed).permutation(val_idx)
    scale_idx, calibration_idx = shuffled[: len(shuffled) // 2], shuffled[len(shuffled) // 2 :]
    if len(scale_idx) == 0:  # no held-out cell: the training cells set the scales
        scale_idx = train_idx
    scorer = NoveltyScorer.fit(coordinates[train_idx], coordinates[scale_idx], result["epistemic"][scale_idx])
    # training cells are measured without themselves, so their distances read like any other cell's
    in_training = np.zeros(data.n_obs, dtype=bool)
    in_training[train_idx] = True
    distances = np.empty(data.n_obs)
    if not in_training.all():
        distances[~in_training] = scorer.distances(coordinates[~in_training])
    distances[in_training] = scorer.distances(coordinates[in_training], exclude_self=True)
    scores = scorer.score(distances, result["epistemic"])
    scorer.calibrate(scores[calibration_idx])
    if options.unknown_threshold is None:
        threshold, source = scorer.threshold(options.unknown_alpha), "conformal"
        if not np.isfinite(threshold):
            logger.warning(
                f"    {len(calibration_idx)} calibration cells (half the held-out ones) are too few to flag at "
                f"unknown_alpha={options.unknown_alpha}: "
                "no cell is flagged (hold out more cells or raise unknown_alpha)"
            )
    else:
        threshold, source = float(options.unknown_threshold), "user"
    unknown = _flags(scorer, scores, threshold)
    if len(val_idx):
        metrics["unknown_rate_validation"] = float(np.mean(unknown["flag"][val_idx]))

    params = record_params(
        "bayes_classify",
        labels_key=labels_key,
        **{
            **dataclasses.asdict(options),
            "max_epochs": max_epochs,
            "kl_warmup_epochs": kl_warmup_epochs,
            "device": device,
            "seed": seed,
        },
    )
    record = ModelRecord.from_module(
        module.cpu(),
        var_names=data.var_names,
        layer=options.layer,
        use_rep=options.use_rep,
        encodings={"labels": data.encodings["labels"]},
        classes=classes,
        encoder_key=_encoder_key(adata, options.use_rep),
    )
    uns = {
        **_classifier_entry(params, classes, (threshold, source, options.unknown_alpha), scorer.to_uns(), record),
        "metrics": metrics,
        "calibration": calibration,
        "history": history,
        "split": {"validation_indices": val_idx.astype(np.int64)},
    }
    return ClassifierRun(result, classes, unknown, uns, module)


@doc_params
def bayes_predict(
    adata: AnnData,
    reference: AnnData,
    *,
    key: str = "bayes",
    layer: str | None = None,
    num_samples: int | None = None,
    unknown_threshold: float | None = None,
    unknown_alpha: float | None = None,
    unknown_label: str | None = None,
    device: str | None = None,
    seed: int | None = None,
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
        ``unknown_score`` above which a cell is flagged unknown; default the reference's threshold (or
        the conformal one of ``unknown_alpha`` when given).
    unknown_alpha
        Share of cells of known types that may be flagged, against the reference's held-out calibration;
        default the reference's.
    unknown_label
        Category of ``.obs["<key_added>_pred"]`` for flagged cells (see :func:`scdgm.tl.bayes_classify`).
    device
        ``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or ``"mps"``; ``None`` follows ``dgm.settings.device``.
    seed
        Seeds the predictive draws; ``None`` follows ``dgm.settings.seed``.
    key_added
        Stem of the output keys; default ``key``, or ``"<key>_predict"`` where ``.uns[key]`` of
        ``adata`` holds a trained model (as when ``adata`` is the reference), which is never replaced.
    {copy_doc}

    Returns
    -------
    {returns_doc}

    ``.obs["<key_added>_pred"]``, ``.obs["<key_added>_confidence"]``, ``.obs["<key_added>_entropy"]``, ``.obs["<key_added>_epistemic"]``, ``.obs["<key_added>_unknown_score"]``, ``.obs["<key_added>_unknown_pvalue"]``, ``.obs["<key_added>_unknown"]``
        As in :func:`scdgm.tl.bayes_classify`.
    ``.obsm["<key_added>_proba"]``
        Mean class probabilities (cells x classes).
    ``.uns["<key_added>"]``
        ``params`` of this call, ``classes``, ``unknown_threshold`` (and its source and
        ``unknown_alpha``), the reference's ``novelty`` record, and the
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
    entry = reference.uns.get(key) if isinstance(key, str) else None
    if not isinstance(entry, Mapping) or "classes" not in entry or "model" not in entry:
        msg = (
            f".uns[{key!r}] of the reference holds no Bayesian classifier. "
            f"Run `dgm.tl.bayes_classify(reference, labels_key, key_added={key!r})` first."
        )
        raise KeyError(msg)
    trained_params = dict(entry.get("params", {}))
    num_samples = int(trained_params.get("num_samples", 200)) if num_samples is None else num_samples
    _check_prediction(num_samples, unknown_threshold, unknown_label)
    if unknown_alpha is not None:
        check_number(
            "unknown_alpha", unknown_alpha, minimum=0.0, maximum=1.0, exclusive_minimum=True, exclusive_maximum=True
        )
    if "novelty" not in entry:
        msg = (
            f"The classifier in .uns[{key!r}] of the reference was trained by an earlier scdgm, which stored no "
            "novelty calibration. Train it again with `dgm.tl.bayes_classify`."
        )
        raise KeyError(msg)
    keys = ClassifierKeys(output_stem(adata, key_added, key, tool="bayes_predict", suffix="predict"))
    check_uns_free(adata, keys.uns, tool="bayes_predict")
    check_copy(adata, copy)
    device, seed = resolve_device_seed(device, seed)
    applied = apply_stored_model(adata, key, device=device, source=reference, layer=layer)
    result = _predictive(applied.module, applied.data, num_samples=num_samples, device=device, seed=seed)
    classes = [str(c) for c in np.asarray(entry["classes"]).tolist()]
    from .._novelty import NoveltyScorer

    scorer = NoveltyScorer.from_uns(entry["novelty"])
    scores = scorer.score(scorer.distances(_coordinates(applied.module, applied.data, device)), result["epistemic"])
    alpha = float(entry.get("unknown_alpha", 0.05)) if unknown_alpha is None else float(unknown_alpha)
    if unknown_threshold is not None:
        threshold, source = float(unknown_threshold), "user"
    elif unknown_alpha is not None:
        threshold, source = scorer.threshold(alpha), "conformal"
    else:
        threshold, source = float(entry["unknown_threshold"]), "reference"
    unknown = _flags(scorer, scores, threshold)
    params = record_params(
        "bayes_predict",
        key=key,
        layer=layer,
        num_samples=num_samples,
        unknown_threshold=unknown_threshold,
        unknown_alpha=unknown_alpha,
        unknown_label=unknown_label,
        device=device,
        seed=seed,
    )
    uns = {
        **_classifier_entry(params, classes, (threshold, source, alpha), dict(entry["novelty"]), applied.record),
        # the reference's held-out figures, so that the result describes the model it came from
        "metrics": dict(entry.get("metrics", {})),
        "calibration": dict(entry.get("calibration", {})),
    }
    adata = adata.copy() if copy else adata
    write_results(
        adata,
        obs=_obs_outputs(keys, result, classes, unknown, unknown_label, adata.obs_names),
        obsm={keys.proba: result["proba"].astype(np.float32)},
        uns={keys.uns: uns},
    )
    return adata if copy else None
