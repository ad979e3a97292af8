"""Boltzmann machines on binarised pbmc68k with few training cells: how well do their cells reproduce held-out cells?

The course's sample-size question (Nußberger et al. 2021): 100 genes of binarised pbmc68k whose detection
rate lies nearest 0.5, 300 cells held out, and 50 / 100 / 200 / 400 of the other cells to train on. Each
model generates 1,000 cells (more than are held out, so that the figure measures the model more than the
sample); the figure is the Pearson correlation between the log odds ratios of all gene pairs in the
generated cells and in the held-out cells (each 2 x 2 table plus 0.5).

- `DBM`: `dgm.tl.dbm` at its defaults (two hidden layers), cells from `tl.generate(latent="prior")`
  (chains started at random, so the cells are the model's, not copies of training cells);
- `RBM`: `dgm.tl.dbm(n_hidden=20)`, generated the same way;
- `sklearn RBM`: `sklearn.neural_network.BernoulliRBM(n_components=20)`, 1,000 Gibbs steps from random starts;
- `Bernoulli VAE`: `dgm.tl.vae(likelihood="bernoulli")`, `tl.generate(latent="prior")`;
- `independent`: each gene drawn independently with its training detection rate;
- `real training cells`: the training cells themselves (the control a model is measured against).

Also the held-out log-likelihood (AIS for the Boltzmann machines, exact for the independent model),
`tl.synthetic_quality`'s other metrics with `--quality`, and training and AIS times.

    cd benchmarks && OMP_NUM_THREADS=2 ../.venv/bin/python dbm_pbmc.py [--sizes 50 100 200 400] [--seeds 0 1 2] [--quality]

A smoke run: `--sizes 60 --seeds 0 --max-epochs 3 --no-save`.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import scipy.sparse as sp
from _common import save

import scdgm as dgm
from scdgm._synthetic_metrics import log_odds_ratios, pearson, upper_triangle

N_GENES = 100
N_HELD_OUT = 300
N_GENERATED = 1000
"""Cells each model generates: more than held out, so that the figure measures the model more than the sample."""
QUALITY = ("log_odds_ratio_pearson", "correlation_pearson", "gene_mean_pearson", "classifier_auroc", "mmd2")


def dense(X):
    return np.asarray(X.toarray() if sp.issparse(X) else X, dtype=np.float32)


def binary_pbmc():
    """pbmc68k binarised (count > 0), restricted to the 100 genes whose detection rate is nearest 0.5."""
    adata = dgm.datasets.pbmc68k()
    dgm.pp.binarize(adata, layer="counts")
    rate = np.asarray(adata.layers["binary"].mean(axis=0)).ravel()
    genes = np.sort(np.argsort(np.abs(rate - 0.5), kind="stable")[:N_GENES])
    adata = adata[:, genes].copy()
    adata.X = adata.layers["binary"].copy()
    return adata


def split(adata, n_train, seed):
    order = np.random.default_rng(seed).permutation(adata.n_obs)
    held_out, pool = order[:N_HELD_OUT], order[N_HELD_OUT:]
    return adata[np.sort(pool[:n_train])].copy(), adata[np.sort(held_out)].copy()


def lor_agreement(generated, reference):
    return pearson(upper_triangle(log_odds_ratios(generated, 0.5)), upper_triangle(log_odds_ratios(reference, 0.5)))


def as_anndata(X, like):
    import anndata as ad

    return ad.AnnData(sp.csr_matrix(np.asarray(X, dtype=np.float32)), var=like.var[[]].copy())


def run_dbm(train, n_cells, seed, n_hidden, max_epochs):
    start = time.perf_counter()
    dgm.tl.dbm(train, n_hidden=n_hidden, max_epochs=max_epochs, seed=seed)
    seconds = time.perf_counter() - start
    metrics = train.uns["dbm"]["metrics"]
    synthetic = dgm.tl.generate(train, model_key="dbm", n_cells=n_cells, latent="prior", seed=seed)
    extra = {
        "train_seconds": seconds,
        "ais_seconds": metrics["ais_seconds"],
        "validation_loglik": metrics.get("validation_loglik"),
        "validation_loglik_independent": metrics.get("validation_loglik_independent"),
        "epochs": metrics["n_epochs"],
        "best_epoch": metrics["best_epoch"],
    }
    return synthetic, extra


def run_vae(train, n_cells, seed, max_epochs):
    start = time.perf_counter()
    dgm.tl.vae(train, likelihood="bernoulli", n_latent=5, n_hidden=64, batch_size=16, max_epochs=max_epochs, seed=seed)
    seconds = time.perf_counter() - start
    synthetic = dgm.tl.generate(train, model_key="vae", n_cells=n_cells, latent="prior", seed=seed)
    return synthetic, {"train_seconds": seconds}


def run_sklearn_rbm(train, n_cells, seed, gibbs_steps=1000):
    from sklearn.neural_network import BernoulliRBM

    rng = np.random.RandomState(seed)
    start = time.perf_counter()
    rbm = BernoulliRBM(n_components=20, random_state=seed, n_iter=200, learning_rate=0.05, batch_size=10)
    rbm.fit(dense(train.X))
    seconds = time.perf_counter() - start
    v = (rng.random_sample((n_cells, train.n_vars)) < 0.5).astype(np.float64)
    for _ in range(gibbs_steps):
        v = rbm.gibbs(v)
    return as_anndata(v, train), {"train_seconds": seconds}


def run_independent(train, n_cells, seed):
    rate = dense(train.X).mean(axis=0)
    X = np.random.default_rng(seed).random((n_cells, train.n_vars)) < rate
    return as_anndata(X, train), {}


def quality(synthetic, held_out, seed):
    table = dgm.tl.synthetic_quality(synthetic, reference=held_out, n_permutations=200, seed=seed)
    rows = table[(table["comparison"] == "synthetic") & (table["metric"].isin(QUALITY))]
    control = table[(table["comparison"] == "control") & (table["metric"].isin(QUALITY))]
    return dict(zip(rows["metric"], rows["value"], strict=True)), dict(
        zip(control["metric"], control["value"], strict=True)
    )


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", type=int, nargs="+", default=[50, 100, 200, 400])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--n-hidden", type=int, nargs="+", default=None, help="DBM layers; default tl.dbm's")
    parser.add_argument("--max-epochs", type=int, default=None)
    parser.add_argument("--quality", action="store_true", help="also run tl.synthetic_quality on every model")
    parser.add_argument("--no-save", action="store_true")
    args = parser.parse_args()
    dgm.settings.progress_bar = False
    adata = binary_pbmc()
    results = []
    for seed in args.seeds:
        for n_train in args.sizes:
            train, held_out = split(adata, n_train, seed)
            reference = dense(held_out.X)
            runs = {
                "DBM": lambda t, seed=seed: run_dbm(t, N_GENERATED, seed, args.n_hidden or (50, 10), args.max_epochs),
                "RBM": lambda t, seed=seed: run_dbm(t, N_GENERATED, seed, 20, args.max_epochs),
                "sklearn RBM": lambda t, seed=seed: run_sklearn_rbm(t, N_GENERATED, seed),
                "Bernoulli VAE": lambda t, seed=seed: run_vae(t, N_GENERATED, seed, args.max_epochs),
                "independent": lambda t, seed=seed: run_independent(t, N_GENERATED, seed),
                "real training cells": lambda t: (t, {}),
            }
            for name, run in runs.items():
                synthetic, extra = run(train.copy())
                row = {"model": name, "n_train": n_train, "seed": seed, **extra}
                row["log_odds_ratio_pearson"] = lor_agreement(dense(synthetic.X), reference)
                if args.quality and synthetic.n_obs >= 20:
                    row["quality"], row["quality_control"] = quality(synthetic, held_out, seed)
                print(
                    {k: (round(v, 3) if isinstance(v, float) else v) for k, v in row.items() if k != "quality_control"}
                )
                results.append(row)
    summary = {}
    for row in results:
        summary.setdefault((row["model"], row["n_train"]), []).append(row["log_odds_ratio_pearson"])
    print("\nlog odds ratio agreement with held-out cells (mean over seeds)")
    for (model, n_train), values in summary.items():
        print(f"{model:>20s} {n_train:4d}: {np.mean(values):.3f} ({', '.join(f'{v:.3f}' for v in values)})")
    if not args.no_save:
        path = save("dbm_pbmc", {"args": vars(args), "results": results})
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
