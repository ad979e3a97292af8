"""Synthetic cells from `tl.generate` judged by `tl.synthetic_quality`, beside baselines and scvi-tools.

Train on 80 % of the cells, generate as many cells as the held-out 20 %, and compare them with the held-out
cells (the table's "synthetic" rows) next to two halves of the held-out cells (its "control" rows):

- `scdgm` : `tl.generate` from `tl.vae` at defaults (aggregate posterior), with `latent="prior"`, and from
  a `tl.vae(likelihood="poisson")`;
- `independent NB`: each gene drawn independently from a negative binomial fitted (method of moments)
  per cell type, in the training type proportions — it keeps marginals and loses gene-gene structure;
- `scvi-tools`: `SCVI` at defaults, `posterior_predictive_sample` of randomly drawn training cells.

Also times the permutation test on 10,000 vs 10,000 cells with 1,000 permutations against dcor.

    cd benchmarks && OMP_NUM_THREADS=2 ../.venv/bin/python synthetic_quality.py [--seeds 0 1] [--skip-timing]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import scipy.sparse as sp
from _common import save, train_scvi

METRICS = ("classifier_auroc", "correlation_pearson", "log_odds_ratio_pearson", "gene_mean_pearson", "energy_pvalue")


def split(adata, seed):
    held_out = np.random.default_rng(seed).random(adata.n_obs) < 0.2
    return adata[~held_out].copy(), adata[held_out].copy()


def independent_nb(train, n_cells, groupby, seed):
    """Cells whose genes are independent NB draws with each type's per-gene mean and variance."""
    import anndata as ad

    rng = np.random.default_rng(seed)
    X = train.X.toarray() if sp.issparse(train.X) else np.asarray(train.X)
    labels = train.obs[groupby].astype(str).to_numpy()
    types, counts = np.unique(labels, return_counts=True)
    n_per_type = np.floor(n_cells * counts / counts.sum()).astype(int)
    n_per_type[: n_cells - n_per_type.sum()] += 1
    blocks, names = [], []
    for name, n in zip(types, n_per_type, strict=True):
        cells = X[labels == name]
        mean, var = cells.mean(0), cells.var(0, ddof=1)
        # method of moments: var = mu + mu^2 / theta; Poisson where the data are not over-dispersed
        over = var > mean + 1e-8
        theta = np.where(over, mean**2 / np.maximum(var - mean, 1e-8), np.inf)
        rate = np.where(
            over, rng.gamma(np.where(over, theta, 1.0), mean / np.where(over, theta, 1.0), (n, len(mean))), mean
        )
        blocks.append(rng.poisson(rate))
        names += [name] * n
    synthetic = ad.AnnData(sp.csr_matrix(np.vstack(blocks).astype(np.float32)), var=train.var[[]].copy())
    synthetic.obs[groupby] = np.asarray(names)
    return synthetic


def scvi_posterior_predictive(train, n_cells, seed):
    import anndata as ad
    import scvi

    scvi.settings.seed = seed
    model_data = train.copy()
    scvi.model.SCVI.setup_anndata(model_data, layer="counts" if "counts" in model_data.layers else None)
    model = scvi.model.SCVI(model_data)
    seconds = train_scvi(model)
    cells = np.sort(np.random.default_rng(seed).choice(train.n_obs, n_cells, replace=False))
    sample = model.posterior_predictive_sample(model_data, indices=cells)
    X = sp.csr_matrix(sample.to_scipy_sparse() if hasattr(sample, "to_scipy_sparse") else np.asarray(sample))
    synthetic = ad.AnnData(X.astype(np.float32), var=train.var[[]].copy())
    synthetic.obs["cell_type"] = train.obs["cell_type"].to_numpy()[cells]
    return synthetic, seconds


def judge(synthetic, test, seed, groupby=None):
    import scdgm as dgm

    table = dgm.tl.synthetic_quality(synthetic, reference=test, groupby=groupby, n_permutations=1000, seed=seed)
    return table


def rows_of(name, table, group="all"):
    part = table[table["group"] == group]
    out = {}
    for comparison in ("synthetic", "control"):
        values = part[part["comparison"] == comparison].set_index("metric")["value"]
        out[comparison] = {m: float(values[m]) for m in METRICS}
    return {"method": name, "group": group, **out}


def run_dataset(label, adata, seed, largest_type):
    import scdgm as dgm

    train, test = split(adata, seed)
    results = []
    start = time.perf_counter()
    dgm.tl.vae(train, seed=seed)
    vae_seconds = time.perf_counter() - start
    print(f"[{label}] vae trained in {vae_seconds:.0f} s ({train.uns['vae']['metrics']['n_epochs']} epochs)")

    posterior = dgm.tl.generate(train, n_cells=test.n_obs, seed=seed)
    results.append(rows_of("scdgm (posterior)", judge(posterior, test, seed)))
    prior = dgm.tl.generate(train, n_cells=test.n_obs, latent="prior", seed=seed)
    results.append(rows_of("scdgm (prior)", judge(prior, test, seed)))
    poisson = train.copy()
    dgm.tl.vae(poisson, likelihood="poisson", seed=seed)
    poisson_cells = dgm.tl.generate(poisson, n_cells=test.n_obs, seed=seed)
    results.append(rows_of("scdgm (poisson likelihood)", judge(poisson_cells, test, seed)))
    per_type = dgm.tl.generate(train, n_cells=test.n_obs, groupby="cell_type", seed=seed)
    results.append(rows_of("scdgm (posterior, per type)", judge(per_type, test, seed, "cell_type"), largest_type))
    nb = independent_nb(train, test.n_obs, "cell_type", seed)
    nb_table = judge(nb, test, seed, "cell_type")
    results.append(rows_of("independent NB per type", nb_table))
    results.append(rows_of("independent NB per type", nb_table, largest_type))
    scvi_cells, scvi_seconds = scvi_posterior_predictive(train, test.n_obs, seed)
    scvi_table = judge(scvi_cells, test, seed, "cell_type")
    results.append(rows_of("scvi-tools posterior_predictive_sample", scvi_table))
    results.append(rows_of("scvi-tools posterior_predictive_sample", scvi_table, largest_type))
    print(f"[{label}] scvi-tools trained in {scvi_seconds:.0f} s")
    for row in results:
        s, c = row["synthetic"], row["control"]
        print(
            f"[{label}] {row['method']:40s} {row['group'][:18]:18s} AUROC {s['classifier_auroc']:.3f} (control "
            f"{c['classifier_auroc']:.3f})  corr r {s['correlation_pearson']:.3f} (control {c['correlation_pearson']:.3f})"
        )
    return {"dataset": label, "seed": seed, "n_train": train.n_obs, "n_test": test.n_obs, "rows": results}


def timing(seed):
    import dcor

    from scdgm._synthetic_metrics import energy_test

    rng = np.random.default_rng(seed)
    x, y = rng.normal(size=(10_000, 30)), rng.normal(0.02, size=(10_000, 30))
    start = time.perf_counter()
    statistic, pvalue = energy_test(x, y, n_permutations=1000, seed=seed)
    ours = time.perf_counter() - start
    # dcor on the same input: its energy_test builds every pairwise difference as one array
    try:
        dcor.homogeneity.energy_test(x, y, num_resamples=2, random_state=seed)
        dcor_same = "ran"
    except MemoryError as error:
        dcor_same = f"failed: {error}"
    # dcor on 2,000 vs 2,000 cells with 10 resamples: its time grows linearly with them
    small_x, small_y = x[:2000], y[:2000]
    start = time.perf_counter()
    dcor.homogeneity.energy_test(small_x, small_y, num_resamples=10, random_state=seed)
    dcor_seconds = time.perf_counter() - start
    start = time.perf_counter()
    energy_test(small_x, small_y, n_permutations=10, seed=seed)
    ours_small = time.perf_counter() - start
    dcor_stat = dcor.homogeneity.energy_test_statistic(small_x, small_y)
    ratio = energy_test(small_x, small_y, n_permutations=0, seed=seed)[0] / dcor_stat
    print(
        f"10,000 vs 10,000 cells, 30 dims: scdgm 1,000 permutations in {ours:.1f} s (p = {pvalue:.3f}); "
        f"dcor on the same input: {dcor_same}; 2,000 vs 2,000 with 10 resamples: dcor {dcor_seconds:.1f} s, "
        f"scdgm {ours_small:.2f} s; statistic / dcor's = {ratio:.9f}"
    )
    return {
        "scdgm_seconds_10k_1000_permutations": ours,
        "scdgm_pvalue": pvalue,
        "scdgm_statistic": statistic,
        "dcor_on_10k": dcor_same,
        "dcor_seconds_2k_10_resamples": dcor_seconds,
        "scdgm_seconds_2k_10_permutations": ours_small,
        "ratio_to_dcor": ratio,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--skip-timing", action="store_true")
    parser.add_argument("--skip-pbmc", action="store_true")
    args = parser.parse_args()

    import scdgm as dgm

    dgm.settings.progress_bar = False
    dgm.settings.verbosity = 1
    runs = []
    for seed in args.seeds:
        # gene programs whose activity varies within each type (activity_cv), deep enough to see them
        simulated = dgm.datasets.simulate(
            5000, 500, n_cell_types=5, n_programs=8, activity_cv=1.0, mean_library_size=5000, seed=seed
        )
        largest = str(simulated.obs["cell_type"].value_counts().index[0])
        runs.append(run_dataset("simulate", simulated, seed, largest))
        if not args.skip_pbmc:
            pbmc = dgm.datasets.pbmc68k()
            largest = str(pbmc.obs["cell_type"].value_counts().index[0])
            runs.append(run_dataset("pbmc68k", pbmc, seed, largest))
    payload = {"runs": runs}
    save("synthetic_quality", payload)
    if not args.skip_timing:
        payload["timing"] = timing(0)
        save("synthetic_quality", payload)


if __name__ == "__main__":
    main()
