"""Evaluation metrics shared by the demo, the benchmarks and the tools."""

from __future__ import annotations

import numpy as np


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
