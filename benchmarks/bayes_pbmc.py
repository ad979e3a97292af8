"""``tl.bayes_classify`` on real cells: accuracy, calibration, unseen cell types, SVI against NUTS, speed.

On ``dgm.datasets.pbmc68k()`` (700 cells, 10 FACS labels in ``.obs["cell_type"]``), with two inputs:

- ``genes``: all 765 genes of the file, log-normalised (``sc.pp.normalize_total(target_sum=1e4)`` then
  ``sc.pp.log1p``; no gene selection: the file's 765 genes are already a selection);
- ``X_vae``: the latent space of ``dgm.tl.vae`` with its default settings and seed 0, trained once on
  the counts of all 700 cells (unsupervised, labels unseen; the same latent space serves every fold).

Parts (``--parts``, all by default):

- ``cv``: 5-fold stratified cross-validation (``StratifiedKFold(5, shuffle=True, random_state=0)``). In
  each fold the test cells' labels are hidden (NaN) and ``bayes_classify`` annotates them; it holds out
  20 % of the remaining labelled cells itself (early stopping, unknown threshold). Accuracy, expected
  calibration error (15 bins), negative log-likelihood and Brier score of the test cells, computed on
  the pooled out-of-fold predictions of all 700 cells and as the mean over the folds (the per-fold ECE
  of 140 cells is inflated by sampling noise). References: scikit-learn's ``LogisticRegression`` (C=1)
  and ``LogisticRegressionCV`` (C from 1e-4 to 1e2 chosen by inner 5-fold CV on the log-loss) on
  standardised inputs, trained on all training cells of the fold.
- ``unseen``: for each cell type with at least 30 cells: its labels are hidden and so are those of 20 %
  of the cells of every other type (stratified, seed 0); the classifier is trained on the rest. AUROC
  of the epistemic uncertainty (and of the total entropy) separating the left-out type's cells from
  the held-out cells of known types; for reference the AUROC of the entropy of the logistic regression.
- ``nuts``: SVI and NUTS on the same small problem (X_vae input, fold 0 of the CV, ``n_hidden=8``):
  accuracy, ECE, NLL and seconds side by side.
- ``speed``: SVI on ``simulate(100_000, 200)`` with a 30-dimensional input (a Gaussian random projection
  of log1p counts, in ``.obsm["X_proj"]``): seconds to train (``bayes_classify``, default settings) and
  to predict (``bayes_predict`` on all 100,000 cells).

    OMP_NUM_THREADS=2 python bayes_pbmc.py [--parts cv unseen nuts speed] [--kwargs '{"prior_scale": 3}']

Writes ``benchmarks/results/bayes_pbmc.json`` (``--name``) and prints Markdown tables.
"""

from __future__ import annotations

import argparse
import json
import time
import warnings

import numpy as np
from _common import save

FOLDS_SEED = 0
MIN_UNSEEN_CELLS = 30
MODEL_NAMES = {
    "bayes": "bayes_classify",
    "logreg": "logistic regression (C = 1)",
    "logreg_tuned": "logistic regression (C by inner CV log-loss)",
}


def _prepare(vae_cache: str | None):
    import anndata as ad
    import scanpy as sc

    import scdgm as dgm

    if vae_cache:
        try:
            adata = ad.read_h5ad(vae_cache)
            print(f"read X_vae from {vae_cache}")
            return adata, None
        except OSError:
            pass
    adata = dgm.datasets.pbmc68k()
    start = time.perf_counter()
    dgm.tl.vae(adata, seed=0)  # default settings, on the counts in .X of all 700 cells
    vae_seconds = time.perf_counter() - start
    sc.pp.normalize_total(adata, target_sum=1e4)
    sc.pp.log1p(adata)
    if vae_cache:
        adata.write_h5ad(vae_cache)
    return adata, vae_seconds


def _inputs(adata, names):
    X = {"genes": adata.X.toarray() if hasattr(adata.X, "toarray") else np.asarray(adata.X)}
    X["X_vae"] = np.asarray(adata.obsm["X_vae"])
    return {name: X[name] for name in names}


def _use_rep(name):
    return None if name == "genes" else name


def _bayes_proba(adata, labels, hidden, use_rep, kwargs, key="cv"):
    """Train on the cells whose label is not hidden; mean class probabilities of every cell, columns in ``classes`` order."""
    import pandas as pd

    import scdgm as dgm

    masked = np.asarray(labels, dtype=object).copy()
    masked[hidden] = None
    work = adata.copy()
    work.obs["masked_label"] = pd.Categorical(masked)
    start = time.perf_counter()
    dgm.tl.bayes_classify(work, "masked_label", use_rep=use_rep, key_added=key, **{"seed": 0, **kwargs})
    seconds = time.perf_counter() - start
    return work, seconds


def _reordered(work, key, classes):
    trained = list(work.uns[key]["classes"])
    proba = np.zeros((work.n_obs, len(classes)))
    for j, name in enumerate(trained):
        proba[:, classes.index(name)] = work.obsm[f"{key}_proba"][:, j]
    return proba


def _logistic_regression(X, codes, train, test, *, tuned=False):
    """C = 1, or (``tuned``) the inverse regularisation strength chosen by inner 5-fold CV on the log-loss."""
    from sklearn.linear_model import LogisticRegression, LogisticRegressionCV
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if tuned:
        # scikit-learn 1.8 announces changes of LogisticRegressionCV's defaults that do not touch this use
        warnings.filterwarnings("ignore", category=FutureWarning, module="sklearn")
        classifier = LogisticRegressionCV(Cs=np.logspace(-4, 2, 13), cv=5, scoring="neg_log_loss", max_iter=5000)
    else:
        classifier = LogisticRegression(max_iter=5000)
    model = make_pipeline(StandardScaler(), classifier)
    model.fit(X[train], codes[train])
    proba = np.zeros((len(test), codes.max() + 1))
    proba[:, model.classes_] = model.predict_proba(X[test])
    return proba


def part_cv(adata, names, kwargs):
    from sklearn.model_selection import StratifiedKFold

    from scdgm._metrics import classification_metrics

    labels = adata.obs["cell_type"].astype(str).to_numpy()
    classes = sorted(set(labels))
    codes = np.array([classes.index(v) for v in labels])
    folds = list(StratifiedKFold(5, shuffle=True, random_state=FOLDS_SEED).split(np.zeros(len(codes)), codes))
    inputs = _inputs(adata, names)
    out = {}
    for name in names:
        for model in ("bayes", "logreg", "logreg_tuned"):
            pooled = np.zeros((len(codes), len(classes)))
            per_fold, seconds = [], []
            for train, test in folds:
                if model == "bayes":
                    hidden = np.zeros(len(codes), bool)
                    hidden[test] = True
                    work, sec = _bayes_proba(adata, labels, hidden, _use_rep(name), kwargs)
                    pooled[test] = _reordered(work, "cv", classes)[test]
                else:
                    start = time.perf_counter()
                    pooled[test] = _logistic_regression(inputs[name], codes, train, test, tuned=model != "logreg")
                    sec = time.perf_counter() - start
                seconds.append(sec)
                per_fold.append(classification_metrics(pooled[test], codes[test]))
            row = {
                "pooled": classification_metrics(pooled, codes),
                "fold_mean": {k: float(np.mean([m[k] for m in per_fold])) for k in ("accuracy", "ece", "nll", "brier")},
                "per_fold": per_fold,
                "seconds_per_fold": float(np.mean(seconds)),
            }
            out[f"{model}/{name}"] = row
            p, f = row["pooled"], row["fold_mean"]
            print(
                f"cv {model}/{name}: pooled acc {p['accuracy']:.3f} ece {p['ece']:.3f} nll {p['nll']:.3f} "
                f"brier {p['brier']:.3f} | fold mean ece {f['ece']:.3f} | {row['seconds_per_fold']:.1f} s/fold",
                flush=True,
            )
    return out


def unseen_splits(labels):
    """For each type with at least MIN_UNSEEN_CELLS cells: (type, its cells, held-out known cells, hidden labels).

    The left-out type's labels are hidden, and so are those of a stratified 20 % of the other cells (seed 0).
    """
    from sklearn.model_selection import train_test_split

    names, counts = np.unique(labels, return_counts=True)
    for left_out in names[counts >= MIN_UNSEEN_CELLS]:
        unseen = labels == left_out
        known = np.flatnonzero(~unseen)
        _, test_known = train_test_split(known, test_size=0.2, stratify=labels[known], random_state=0)
        hidden = unseen.copy()
        hidden[test_known] = True
        yield str(left_out), unseen, test_known, hidden


def _knn_distance(X, train, scored, *, n_neighbors=10, n_components=30):
    """Anchor: mean distance to the 10 nearest training cells, in the first 30 principal components of the training cells."""
    from sklearn.decomposition import PCA
    from sklearn.neighbors import NearestNeighbors

    if X.shape[1] > n_components:
        pca = PCA(n_components, random_state=0).fit(X[train])
        reference, query = pca.transform(X[train]), pca.transform(X[scored])
    else:
        reference, query = X[train], X[scored]
    distances, _ = NearestNeighbors(n_neighbors=n_neighbors).fit(reference).kneighbors(query)
    return distances.mean(axis=1)


def part_unseen(adata, names, kwargs):
    from scdgm._metrics import auroc

    labels = adata.obs["cell_type"].astype(str).to_numpy()
    inputs = _inputs(adata, names)
    out = {}
    for name in names:
        rows = {}
        for left_out, unseen, test_known, hidden in unseen_splits(labels):
            work, sec = _bayes_proba(adata, labels, hidden, _use_rep(name), kwargs, key="unseen")
            scored = np.concatenate([test_known, np.flatnonzero(unseen)])
            positive = unseen[scored]
            epistemic = work.obs["unseen_epistemic"].to_numpy()[scored]
            unknown_score = work.obs["unseen_unknown_score"].to_numpy()[scored]
            entropy = work.obs["unseen_entropy"].to_numpy()[scored]
            flagged = work.obs["unseen_unknown"].to_numpy()
            train = np.setdiff1d(np.flatnonzero(~unseen), test_known)
            known_codes = {t: i for i, t in enumerate(sorted(set(labels[train])))}
            lr_codes = np.array([known_codes.get(v, -1) for v in labels])
            proba = _logistic_regression(inputs[name], lr_codes, train, scored)
            lr_entropy = -np.sum(proba * np.log(np.clip(proba, 1e-12, None)), axis=1)
            rows[left_out] = {
                "n_unseen": int(unseen.sum()),
                "n_known_test": len(test_known),
                "auroc_unknown_score": auroc(unknown_score, positive),
                "auroc_epistemic": auroc(epistemic, positive),
                "auroc_knn_distance": auroc(_knn_distance(inputs[name], train, scored), positive),
                "auroc_entropy": auroc(entropy, positive),
                "auroc_logreg_entropy": auroc(lr_entropy, positive),
                "flagged_unseen": float(flagged[unseen].mean()),
                "flagged_known_test": float(flagged[test_known].mean()),
                "seconds": sec,
            }
            r = rows[left_out]
            print(
                f"unseen {name} without {left_out!r} ({r['n_unseen']} cells): AUROC unknown score "
                f"{r['auroc_unknown_score']:.3f}, epistemic {r['auroc_epistemic']:.3f}, "
                f"kNN distance {r['auroc_knn_distance']:.3f}, entropy {r['auroc_entropy']:.3f}, logreg entropy "
                f"{r['auroc_logreg_entropy']:.3f}; flagged {r['flagged_unseen']:.2f} unseen vs "
                f"{r['flagged_known_test']:.2f} known",
                flush=True,
            )
        mean = {k: float(np.mean([r[k] for r in rows.values()])) for k in next(iter(rows.values())) if k != "n_unseen"}
        out[name] = {"per_type": rows, "mean": mean}
    return out


def part_nuts(adata, kwargs, *, num_warmup, num_samples, n_hidden):
    from sklearn.model_selection import StratifiedKFold

    from scdgm._metrics import classification_metrics

    labels = adata.obs["cell_type"].astype(str).to_numpy()
    classes = sorted(set(labels))
    codes = np.array([classes.index(v) for v in labels])
    _, test = next(StratifiedKFold(5, shuffle=True, random_state=FOLDS_SEED).split(np.zeros(len(codes)), codes))
    hidden = np.zeros(len(codes), bool)
    hidden[test] = True
    out = {}
    settings = {
        "svi": {**kwargs, "n_hidden": n_hidden},
        "nuts": {
            **{k: v for k, v in kwargs.items() if k in {"prior_scale", "n_layers"}},
            "n_hidden": n_hidden,
            "inference": "nuts",
            "num_warmup": num_warmup,
            "num_samples": num_samples,
        },
    }
    for inference, args in settings.items():
        work, sec = _bayes_proba(adata, labels, hidden, "X_vae", args, key=inference)
        metrics = classification_metrics(_reordered(work, inference, classes)[test], codes[test])
        fitted = work.uns[inference]["metrics"]
        out[inference] = {**metrics, "seconds": sec, "settings": args}
        if inference == "nuts":
            out[inference].update(
                {k: fitted[k] for k in ("divergences", "acceptance_rate", "step_size", "min_n_eff") if k in fitted}
            )
        print(
            f"{inference}: acc {metrics['accuracy']:.3f} ece {metrics['ece']:.3f} nll {metrics['nll']:.3f} {sec:.1f} s",
            flush=True,
        )
    return out


def part_speed(kwargs, n_cells):
    import scdgm as dgm

    start = time.perf_counter()
    adata = dgm.datasets.simulate(n_cells, 200, n_cell_types=10, seed=0)
    simulate_seconds = time.perf_counter() - start
    projection = np.random.default_rng(0).normal(size=(adata.n_vars, 30)) / np.sqrt(adata.n_vars)
    adata.obsm["X_proj"] = np.asarray(adata.X.log1p() @ projection, dtype=np.float32)
    start = time.perf_counter()
    dgm.tl.bayes_classify(adata, "cell_type", use_rep="X_proj", **{"seed": 0, **kwargs})
    train_seconds = time.perf_counter() - start
    start = time.perf_counter()
    dgm.tl.bayes_predict(adata, adata, key_added="again")
    predict_seconds = time.perf_counter() - start
    metrics = adata.uns["bayes"]["metrics"]
    out = {
        "n_cells": adata.n_obs,
        "n_input": 30,
        "simulate_seconds": simulate_seconds,
        "train_seconds": train_seconds,
        "predict_seconds": predict_seconds,
        "epochs": metrics.get("n_epochs"),
        "stopped_early": metrics.get("stopped_early"),
        "validation_accuracy": metrics["accuracy"],
        "validation_ece": metrics["ece"],
    }
    print(
        f"speed: {n_cells} cells x 30: train {train_seconds:.1f} s ({out['epochs']} epochs), "
        f"predict {predict_seconds:.1f} s",
        flush=True,
    )
    return out


def _tables(results):
    lines = []
    if "cv" in results:
        lines += [
            "| input | model | accuracy | ECE (15 bins) | NLL | Brier | ECE, mean of folds | s / fold |",
            "| --- | --- | --- | --- | --- | --- | --- | --- |",
        ]
        for key, row in results["cv"].items():
            model, name = key.split("/")
            p = row["pooled"]
            lines.append(
                f"| {name} | {MODEL_NAMES[model]} | "
                f"{p['accuracy']:.3f} | {p['ece']:.3f} | {p['nll']:.3f} | {p['brier']:.3f} | "
                f"{row['fold_mean']['ece']:.3f} | {row['seconds_per_fold']:.1f} |"
            )
        lines.append("")
    if "unseen" in results:
        lines += [
            "| input | left out | cells | AUROC unknown score | epistemic | entropy | kNN distance | "
            "logistic regression entropy | flagged unseen | flagged known |",
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
        ]
        for name, row in results["unseen"].items():
            for left_out, r in [*row["per_type"].items(), ("mean", row["mean"])]:
                lines.append(
                    f"| {name} | {left_out} | {r.get('n_unseen', '')} | {r['auroc_unknown_score']:.3f} | "
                    f"{r['auroc_epistemic']:.3f} | {r['auroc_entropy']:.3f} | {r['auroc_knn_distance']:.3f} | "
                    f"{r['auroc_logreg_entropy']:.3f} | {r['flagged_unseen']:.2f} | {r['flagged_known_test']:.2f} |"
                )
        lines.append("")
    if "nuts" in results:
        lines += ["| inference | accuracy | ECE | NLL | seconds |", "| --- | --- | --- | --- | --- |"]
        for name, row in results["nuts"].items():
            lines.append(
                f"| {name} | {row['accuracy']:.3f} | {row['ece']:.3f} | {row['nll']:.3f} | {row['seconds']:.1f} |"
            )
        lines.append("")
    if "speed" in results:
        s = results["speed"]
        lines += [
            "| cells | input | train (s) | epochs | predict (s) |",
            "| --- | --- | --- | --- | --- |",
            f"| {s['n_cells']:,} | 30 | {s['train_seconds']:.1f} | {s['epochs']} | {s['predict_seconds']:.1f} |",
        ]
    return "\n".join(lines)


def main() -> None:
    import torch

    import scdgm as dgm

    parser = argparse.ArgumentParser()
    parser.add_argument("--parts", nargs="+", default=["cv", "unseen", "nuts", "speed"])
    parser.add_argument("--inputs", nargs="+", default=["genes", "X_vae"])
    parser.add_argument("--kwargs", default="{}", help="JSON of bayes_classify arguments (default: its defaults)")
    parser.add_argument("--vae-cache", default=None, help="h5ad to reuse / store the prepared pbmc68k with X_vae")
    parser.add_argument("--nuts-warmup", type=int, default=200)
    parser.add_argument("--nuts-samples", type=int, default=200)
    parser.add_argument("--nuts-hidden", type=int, default=8)
    parser.add_argument("--speed-cells", type=int, default=100_000)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--name", default="bayes_pbmc")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    dgm.settings.progress_bar = False
    dgm.settings.verbosity = 0
    kwargs = json.loads(args.kwargs)

    results: dict = {"kwargs": kwargs, "inputs": args.inputs, "threads": args.threads, "device": "cpu"}
    if {"cv", "unseen", "nuts"} & set(args.parts):
        adata, vae_seconds = _prepare(args.vae_cache)
        results["vae_seconds"] = vae_seconds
    if "cv" in args.parts:
        results["cv"] = part_cv(adata, args.inputs, kwargs)
    if "unseen" in args.parts:
        results["unseen"] = part_unseen(adata, args.inputs, kwargs)
    if "nuts" in args.parts:
        results["nuts"] = part_nuts(
            adata, kwargs, num_warmup=args.nuts_warmup, num_samples=args.nuts_samples, n_hidden=args.nuts_hidden
        )
    if "speed" in args.parts:
        results["speed"] = part_speed(kwargs, args.speed_cells)
    path = save(args.name, results)
    print(f"\nwrote {path}\n")
    print(_tables(results))


if __name__ == "__main__":
    main()
