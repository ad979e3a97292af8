"""Recovery of known gene programs by LDVAE loadings, against scvi-tools' LinearSCVI and PCA.

On datasets.simulate (known sparse genes x programs matrix in .varm["programs"]), factors are matched to
programs by the Hungarian assignment on |Pearson r| between loading columns and program columns; the
score is the mean matched |r|. Rows:

- ``scdgm``: ``tl.ldvae_loadings`` with its defaults (L1 penalty 0.01, varimax), as many factors as
  programs; ``scdgm_no_l1`` the same with ``loadings_l1=0``; ``scdgm_2x``: twice as many factors as
  programs (the best-matching ones are scored);
- ``linearscvi``: scvi-tools' ``LinearSCVI.get_loadings()`` at the same settings, raw and varimax-rotated;
- ``pca``: PCA of log-normalised counts, raw and varimax-rotated;
- two ceilings that use the true program activities: ``ceiling_noiseless``, the least-squares slopes of
  the simulator's noiseless log rates on the activities (the best any loading on the log scale can do,
  since programs enter the rates as ``log(1 + W a)``), and ``ceiling_lognormalised``, the same regression
  on the observed log-normalised counts.

Also times training against LinearSCVI at matched settings, and prints the top genes of each factor on
pbmc68k with the cell type where the factor is highest.

With ``--program-model log-linear`` the simulator's programs act linearly on the log rate (the LDVAE's own
model class: disjoint programs, loadings 1-2.5, bounded activities), and the ceilings are exact (1.0).
``--restarts N`` adds a row ``scdgm_restartsN``: ``n_restarts=N``, the restart with the best held-out
ELBO kept.

    python benchmarks/ldvae_programs.py [--seeds 0 1 2] [--cells 4000] [--genes 1000] [--epochs 200]
    python benchmarks/ldvae_programs.py --program-model log-linear --genes 600 --program-fraction 0.0667 \
        --markers 0 --dispersion 8 --epochs 0 --seeds 0 1 2 3 4 --restarts 3 --skip-pbmc --skip-2x \
        --skip-no-l1 --name ldvae_loglinear
Writes benchmarks/results/<name>.json (``ldvae_programs`` by default). ``--epochs 0`` trains every
scdgm model at its defaults (early stopping on); otherwise for exactly that many epochs.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from _common import save, train_scvi
from scipy.optimize import linear_sum_assignment


def matched_abs_r(loadings: np.ndarray, programs: np.ndarray) -> float:
    """Mean |r| over the Hungarian matching of loading columns to program columns."""
    k = programs.shape[1]
    r = np.abs(np.corrcoef(loadings.T, programs.T)[: loadings.shape[1], loadings.shape[1] :])
    rows, cols = linear_sum_assignment(-np.nan_to_num(r))
    assert len(cols) == min(loadings.shape[1], k)
    return float(r[rows, cols].mean())


def activity_slopes(log_values: np.ndarray, activity: np.ndarray) -> np.ndarray:
    """Least-squares slopes (genes x programs) of each gene's values on the true program activities."""
    centred = activity - activity.mean(0)
    return np.linalg.lstsq(centred, log_values - log_values.mean(0), rcond=None)[0].T


def main() -> None:
    import scanpy as sc
    import scvi

    import scdgm as dgm
    from scdgm.tl._rotation import varimax

    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, nargs="*", default=[0, 1, 2])
    parser.add_argument("--cells", type=int, default=4000)
    parser.add_argument("--genes", type=int, default=1000)
    parser.add_argument("--programs", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=200)
    parser.add_argument("--program-model", default="log1p", choices=["log1p", "log-linear"])
    parser.add_argument("--program-fraction", type=float, default=0.08)
    parser.add_argument("--markers", type=int, default=None, help="markers_per_type (simulate's default if unset)")
    parser.add_argument("--dispersion", type=float, default=1.0)
    parser.add_argument("--restarts", type=int, default=0)
    parser.add_argument("--skip-pbmc", action="store_true")
    parser.add_argument("--skip-2x", action="store_true", help="no runs with twice as many factors as programs")
    parser.add_argument("--skip-no-l1", action="store_true", help="no run without the L1 penalty")
    parser.add_argument("--name", default="ldvae_programs")
    args = parser.parse_args()
    dgm.settings.progress_bar = False
    rows = []
    for seed in args.seeds:
        adata = dgm.datasets.simulate(
            args.cells,
            args.genes,
            n_programs=args.programs,
            program_model=args.program_model,
            program_fraction=args.program_fraction,
            markers_per_type=args.markers,
            dispersion=args.dispersion,
            seed=seed,
        )
        truth = np.asarray(adata.varm["programs"])
        k = args.programs
        # fixed epochs without early stopping, or (--epochs 0) the tool's defaults
        schedule = {"max_epochs": args.epochs, "early_stopping": False} if args.epochs else {}
        t0 = time.perf_counter()
        dgm.tl.ldvae_loadings(adata, n_latent=k, seed=seed, **schedule)
        ours_seconds = time.perf_counter() - t0
        row = {
            "seed": seed,
            "scdgm_varimax": matched_abs_r(adata.varm["ldvae_loadings"], truth),
            "scdgm_unrotated": matched_abs_r(adata.varm["ldvae_loadings_unrotated"], truth),
            "scdgm_seconds": ours_seconds,
            "scdgm_epochs": int(adata.uns["ldvae"]["metrics"]["n_epochs"]),
        }
        variants = {} if args.skip_no_l1 else {"scdgm_no_l1": {"loadings_l1": 0.0}}
        if not args.skip_2x:
            variants["scdgm_2x"] = {"n_latent": 2 * k}
        if args.restarts > 1:
            variants[f"scdgm_restarts{args.restarts}"] = {"n_restarts": args.restarts}
        for name, kwargs in variants.items():
            t0 = time.perf_counter()
            dgm.tl.ldvae_loadings(adata, **{"n_latent": k, **kwargs}, seed=seed, key_added=name, **schedule)
            row[f"{name}_varimax"] = matched_abs_r(adata.varm[f"{name}_loadings"], truth)
            row[f"{name}_seconds"] = time.perf_counter() - t0
        for n_latent, suffix in ((k, ""), (2 * k, "_2x"))[: 1 if args.skip_2x else 2]:
            lin = adata.copy()
            scvi.settings.seed = seed
            scvi.model.LinearSCVI.setup_anndata(lin, layer="counts")
            model = scvi.model.LinearSCVI(lin, n_latent=n_latent)
            # scvi-tools' own default length where ours runs at its defaults
            seconds = train_scvi(model, train_size=0.9, **({"max_epochs": args.epochs} if args.epochs else {}))
            theirs = model.get_loadings().to_numpy()
            row[f"linearscvi{suffix}_raw"] = matched_abs_r(theirs, truth)
            row[f"linearscvi{suffix}_varimax"] = matched_abs_r(theirs @ varimax(theirs), truth)
            if not suffix:
                row["scvi_seconds"] = seconds
        pca = adata.copy()
        sc.pp.normalize_total(pca, target_sum=1e4)
        sc.pp.log1p(pca)
        sc.pp.pca(pca, n_comps=k, random_state=seed)
        row["pca_raw"] = matched_abs_r(pca.varm["PCs"], truth)
        row["pca_varimax"] = matched_abs_r(pca.varm["PCs"] @ varimax(pca.varm["PCs"]), truth)
        activity = np.asarray(adata.obsm["program_activity"], dtype=np.float64)
        noiseless = activity @ truth.T
        if args.program_model == "log1p":
            noiseless = np.log1p(noiseless)
        row["ceiling_noiseless"] = matched_abs_r(activity_slopes(noiseless, activity), truth)
        lognormalised = pca.X.toarray() if hasattr(pca.X, "toarray") else np.asarray(pca.X)
        row["ceiling_lognormalised"] = matched_abs_r(activity_slopes(lognormalised, activity), truth)
        rows.append(row)
        print(row, flush=True)

    if rows:  # `--seeds` with no seed runs the pbmc68k part alone
        names = [n for n in rows[0] if n != "seed"]
        print("\n| method | mean matched abs r (or seconds) | per seed |\n| --- | --- | --- |")
        for n in names:
            vals = [r[n] for r in rows]
            print(f"| {n} | {np.mean(vals):.3f} | {', '.join(f'{v:.3f}' for v in vals)} |")

    pbmc_table = []
    if not args.skip_pbmc:
        adata = dgm.datasets.pbmc68k()
        dgm.tl.ldvae_loadings(adata, n_latent=10, seed=0, n_top=8)
        latent = adata.obsm["X_ldvae"]
        types = adata.obs["cell_type"]
        print("\n| factor | top positive genes | cell type with the highest mean factor value |\n| --- | --- | --- |")
        for k in range(latent.shape[1]):
            means = {t: latent[(types == t).to_numpy(), k].mean() for t in types.cat.categories}
            best = max(means, key=means.get)
            top = dgm.get.top_genes(adata, "ldvae", target=f"factor_{k}", direction="positive")
            genes = ", ".join(top["gene"])
            pbmc_table.append({"factor": k, "top_genes": genes, "highest_in": best})
            print(f"| {k} | {genes} | {best} |")
    save(args.name, {"rows": rows, "args": vars(args), "pbmc68k_factors": pbmc_table})


if __name__ == "__main__":
    main()
