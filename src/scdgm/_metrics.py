"""Evaluation metrics shared by the demo, the benchmarks and the tools.

Classification: calibration bins, expected calibration error, negative log-likelihood, Brier score,
AUROC, and the per-cell uncertainties of a Bayesian classifier's posterior predictive.
"""

from __future__ import annotations

import numpy as np

N_CALIBRATION_BINS = 15
_EPS = 1e-12


def knn_label_accuracy(
    X: np.ndarray, labels: np.ndarray, *, n_neighbors: int = 15, n_folds: int = 5, seed: int = 0
) -> float:
    """Mean accuracy of a k-nearest-neighbour classifier of ``labels`` on ``X``, by stratified k-fold.

    A representation that keeps cell identity places cells of one type near each other; this is the
    score the benchmarks compare latent spaces by.
    """
    from sklearn.model_selection import StratifiedKFold, cross_val_score
    from sklearn.neighbors import KNeighborsClassifier

    folds = StratifiedKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    scores = cross_val_score(KNeighborsClassifier(n_neighbors=n_neighbors), np.asarray(X), np.asarray(labels), cv=folds)
    return float(np.mean(scores))


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
