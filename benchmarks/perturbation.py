"""Perturbation response by latent arithmetic and differential expression through the model, beside baselines.

Perturbation (`tl.predict_perturbation`), on `simulate(n_conditions=2)`: each cell type's perturbed cells are
held out in turn (from the model's training too), and the prediction for that type is compared with them —
R² (squared Pearson) of per-gene mean log1p counts per 10,000 and of the change from the type's control cells,
on all genes and on the type's top 100 changed genes — against

- `no change`: the type's control cells as they are;
- `mean shift`: the type's control means plus the mean change of the other types in log-normalised space,
  each type weighted equally (the linear baseline of Ahlmann-Eltze et al., Nat Methods 2025);
- `real half`: half of the real perturbed cells against the other half (what noise leaves reachable);
- pertpy's scGen, only when pertpy is importable (it is not installed here).

Differential expression (`tl.differential_expression`), on the same simulation with every cell: each cell type
against the rest, and condition_1 against control, scored on the simulator's noise-free truth (the log2 ratio
of the groups' mean expected proportions) — marker AUROC (the type's planted markers against all other genes,
by the signed score), AUROC of |true LFC| > 0.25, and the FDR and recall of the genes called at 5% — against
`sc.tl.rank_genes_groups` (Wilcoxon, t-test) on log-normalised counts and scvi-tools' `differential_expression`
(change mode, delta 0.25). On pbmc68k: the rank of known markers (B: CD79A, MS4A1; NK: NKG7, GNLY; T: CD3D)
in their lineage against the rest.

    cd benchmarks && OMP_NUM_THREADS=2 ../.venv/bin/python perturbation.py [--seeds 0 1] [--skip-scvi]
    cd benchmarks && OMP_NUM_THREADS=1 ../.venv/bin/python perturbation.py --tiny   # smoke run, ~1 min
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import pandas as pd
import scipy.sparse as sp
from _common import save, train_scvi

from scdgm.datasets._simulate import expected_proportions

CONDITION = {"condition_key": "condition", "control": "control", "perturbed": "condition_1", "groupby": "cell_type"}
DELTA = 0.25
FDR = 0.05
PBMC_MARKERS = {"B": ["CD79A", "MS4A1"], "NK": ["NKG7", "GNLY"], "T": ["CD3D"]}


# ---------------------------------------------------------------------------------------------- truth


def true_lfc(proportions, in_group, in_reference):
    """log2 ratio of the groups' mean expected proportions, with tl.differential_expression's pseudocount (its estimand)."""
    pseudo = 0.1 / 1e4
    return np.log2(proportions[in_group].mean(0) + pseudo) - np.log2(proportions[in_reference].mean(0) + pseudo)


# ---------------------------------------------------------------------------------------------- perturbation


def cells_of(adata, cell_type, condition):
    return ((adata.obs["cell_type"] == cell_type) & (adata.obs["condition"] == condition)).to_numpy()


def scgen_prediction(train, held_type, seed, epochs):
    """pertpy's scGen, when pertpy is importable; None otherwise."""
    try:
        import pertpy as pt
    except ImportError:
        return None
    import scanpy as sc

    data = train.copy()
    sc.pp.normalize_total(data, target_sum=1e4)
    sc.pp.log1p(data)
    pt.tl.Scgen.setup_anndata(data, batch_key="condition", labels_key="cell_type")
    model = pt.tl.Scgen(data)
    model.train(max_epochs=epochs, batch_size=32, early_stopping=True)
    predicted, _ = model.predict(ctrl_key="control", stim_key="condition_1", celltype_to_predict=held_type)
    X = predicted.X.toarray() if sp.issparse(predicted.X) else np.asarray(predicted.X)
    return X.mean(0)  # already log-normalised


def perturbation_run(adata, seed, args):
    import scdgm as dgm
    from scdgm._perturbation_metrics import mean_log_expression, perturbation_scores

    rows = []
    types = list(adata.obs["cell_type"].cat.categories)
    for held_type in types:
        held = cells_of(adata, held_type, "condition_1")
        train = adata[~held].copy()
        start = time.perf_counter()
        dgm.tl.vae(train, n_latent=args.latent, max_epochs=args.epochs, beta=args.beta, seed=seed)
        train_seconds = time.perf_counter() - start
        predicted = dgm.tl.predict_perturbation(train, **CONDITION, group=held_type, n_cells=args.predicted, seed=seed)
        control = predicted.uns["perturbation"]["control_mean"]
        real = mean_log_expression(adata.X[held])
        shifts = [
            mean_log_expression(train.X[cells_of(train, t, "condition_1")])
            - mean_log_expression(train.X[cells_of(train, t, "control")])
            for t in types
            if t != held_type
        ]
        halves = np.random.default_rng(seed).permutation(np.flatnonzero(held))
        half_a, half_b = halves[: len(halves) // 2], halves[len(halves) // 2 :]
        methods = {
            "scdgm predict_perturbation": (mean_log_expression(predicted.X), real),
            "no change": (control, real),
            "mean shift": (control + np.mean(shifts, 0), real),
            "real half": (mean_log_expression(adata.X[half_a]), mean_log_expression(adata.X[half_b])),
        }
        scgen = scgen_prediction(train, held_type, seed, args.epochs) if args.scgen else None
        if scgen is not None:
            methods["pertpy scGen"] = (scgen, real)
        for method, (prediction, truth) in methods.items():
            scores = perturbation_scores(prediction, truth, control)
            rows.append({"seed": seed, "cell_type": held_type, "method": method, **scores})
        rows[-len(methods)]["train_seconds"] = train_seconds
        print(pd.DataFrame(rows[-len(methods) :]).round(3).to_string(index=False), flush=True)
    return rows


# ---------------------------------------------------------------------------------------------- DE


def scanpy_tables(adata, groupby, groups, reference):
    import scanpy as sc

    data = adata.copy()
    sc.pp.normalize_total(data, target_sum=1e4)
    sc.pp.log1p(data)
    out = {}
    for method in ("wilcoxon", "t-test"):
        sc.tl.rank_genes_groups(data, groupby, groups=groups, reference=reference, method=method, key_added=method)
        out[f"scanpy {method}"] = {
            g: sc.get.rank_genes_groups_df(data, g, key=method).assign(
                signed=lambda d: d["scores"],
                unsigned=lambda d: d["scores"].abs(),
                called=lambda d: d["pvals_adj"] < FDR,
            )
            for g in groups
        }
    return out


def scdgm_tables(adata, groupby, groups, reference, seed):
    import scdgm as dgm

    dgm.tl.differential_expression(
        adata, groupby=groupby, groups=groups, reference=reference, delta=DELTA, fdr=FDR, seed=seed, key_added="de"
    )
    return {
        g: dgm.get.differential_expression(adata, g, key="de").assign(
            signed=lambda d: d["scores"] + 1e-6 * d["logfoldchanges"],
            unsigned=lambda d: d["proba_de"],
            called=lambda d: d["is_de"],
        )
        for g in groups
    }


def scvi_tables(adata, groupby, groups, reference, seed, epochs):
    import scvi

    scvi.settings.seed = seed
    data = adata.copy()
    scvi.model.SCVI.setup_anndata(data, layer="counts" if "counts" in data.layers else None)
    model = scvi.model.SCVI(data)
    train_scvi(model, max_epochs=epochs)
    out = {}
    for g in groups:
        table = model.differential_expression(
            groupby=groupby,
            group1=g,
            group2=None if reference == "rest" else reference,
            mode="change",
            delta=DELTA,
            fdr_target=FDR,
        )
        table = table.rename_axis("names").reset_index()
        out[g] = table.assign(
            signed=np.sign(table["lfc_mean"]) * table["proba_de"] + 1e-6 * table["lfc_mean"],
            unsigned=table["proba_de"],
            called=table[f"is_de_fdr_{FDR}"],
        )
    return out


def de_scores(table, var_names, truth_lfc, markers=None):
    from scdgm._metrics import auroc

    table = table.drop_duplicates("names").set_index("names").loc[var_names]
    changed = np.abs(truth_lfc) > DELTA
    called = table["called"].to_numpy(dtype=bool)
    out = {
        "auroc_changed": auroc(table["unsigned"].to_numpy(), changed),
        "n_called": int(called.sum()),
        "fdr": float(np.mean(~changed[called])) if called.any() else float("nan"),
        "fdr_null": float(np.mean(np.abs(truth_lfc[called]) < 0.05)) if called.any() else float("nan"),
        "recall": float(np.mean(called[changed])) if changed.any() else float("nan"),
    }
    if markers is not None:
        out["marker_auroc"] = auroc(table["signed"].to_numpy(), markers)
    return out


def de_run(adata, seed, args):
    import scdgm as dgm

    rows = []
    data = adata.copy()
    dgm.tl.vae(data, n_latent=args.latent, max_epochs=args.epochs, beta=args.beta, seed=seed)
    proportions = expected_proportions(data)
    var_names = data.var_names
    types = list(data.obs["cell_type"].cat.categories)
    comparisons = [("cell_type", types, "rest"), ("condition", ["condition_1"], "control")]
    for groupby, groups, reference in comparisons:
        methods = {"scdgm differential_expression": scdgm_tables(data, groupby, groups, reference, seed)}
        methods.update(scanpy_tables(adata, groupby, groups, reference))
        if not args.skip_scvi:
            methods["scvi-tools differential_expression"] = scvi_tables(
                adata, groupby, groups, reference, seed, args.epochs
            )
        labels = data.obs[groupby].astype(str).to_numpy()
        for g in groups:
            in_group = labels == g
            in_reference = ~in_group if reference == "rest" else labels == reference
            truth = true_lfc(proportions, in_group, in_reference)
            markers = None
            if groupby == "cell_type":
                markers = np.asarray(data.varm["markers"])[:, types.index(g)].astype(bool)
            for method, tables in methods.items():
                rows.append(
                    {
                        "seed": seed,
                        "comparison": f"{groupby}: {g} vs {reference}",
                        "method": method,
                        **de_scores(tables[g], var_names, truth, markers),
                    }
                )
    print(pd.DataFrame(rows).round(3).to_string(index=False), flush=True)
    return rows


def pbmc_markers(seed, args):
    import scdgm as dgm

    adata = dgm.datasets.pbmc68k()
    lineage = {
        "CD19+ B": "B",
        "CD56+ NK": "NK",
        "CD14+ Monocyte": "Monocyte",
        "Dendritic": "Dendritic",
        "CD34+": "CD34+",
    }
    adata.obs["lineage"] = pd.Categorical([lineage.get(t, "T") for t in adata.obs["cell_type"].astype(str)])
    data = adata.copy()
    dgm.tl.vae(data, seed=seed, max_epochs=args.pbmc_epochs)
    groups = list(PBMC_MARKERS)
    methods = {"scdgm differential_expression": scdgm_tables(data, "lineage", groups, "rest", seed)}
    counts = adata.copy()
    counts.X = counts.layers["counts"]
    methods.update(scanpy_tables(counts, "lineage", groups, "rest"))
    rows = []
    for method, tables in methods.items():
        for g, genes in PBMC_MARKERS.items():
            ranked = list(tables[g].sort_values("signed", ascending=False)["names"])
            for gene in genes:
                rows.append(
                    {"seed": seed, "method": method, "lineage": g, "gene": gene, "rank": ranked.index(gene) + 1}
                )
    print(pd.DataFrame(rows).to_string(index=False), flush=True)
    return rows


def summary(perturbation_rows, de_rows):
    table = pd.DataFrame(perturbation_rows)
    means = table.groupby("method")[["r2_mean", "r2_mean_top", "r2_change", "r2_change_top"]].mean()
    ours, shift = means.loc["scdgm predict_perturbation"], means.loc["mean shift"]
    de = pd.DataFrame(de_rows).groupby("method")[["auroc_changed", "fdr", "recall"]].mean()
    return {
        "perturbation_means": means.round(4).to_dict(orient="index"),
        "goal_r2_change_top_over_mean_shift_plus_0.05": bool(ours["r2_change_top"] >= shift["r2_change_top"] + 0.05),
        "goal_r2_mean_at_least_0.90": bool(ours["r2_mean"] >= 0.90),
        "de_means": de.round(4).to_dict(orient="index"),
    }


def main() -> None:
    import scdgm as dgm

    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--cells", type=int, default=4000)
    parser.add_argument("--genes", type=int, default=500)
    parser.add_argument("--types", type=int, default=5)
    parser.add_argument("--latent", type=int, default=30)
    parser.add_argument("--epochs", type=int, default=300)
    parser.add_argument("--beta", type=float, default=0.1)
    parser.add_argument(
        "--predicted", type=int, default=None, help="predicted cells per type (default: one per control cell)"
    )
    parser.add_argument("--pbmc-epochs", type=int, default=None)
    parser.add_argument("--skip-scvi", action="store_true")
    parser.add_argument("--skip-pbmc", action="store_true")
    parser.add_argument("--scgen", action="store_true", help="also pertpy's scGen, when importable")
    parser.add_argument("--tiny", action="store_true", help="smoke run: tiny data, few epochs, no scvi-tools")
    parser.add_argument("--name", default="perturbation")
    args = parser.parse_args()
    if args.tiny:
        args.cells, args.genes, args.types, args.latent, args.epochs, args.pbmc_epochs = 400, 40, 3, 5, 5, 5
        args.skip_scvi, args.seeds, args.name = True, args.seeds[:1], f"{args.name}_tiny"
    dgm.settings.progress_bar = False
    dgm.settings.verbosity = 1
    perturbation_rows, de_rows, pbmc_rows = [], [], []
    for seed in args.seeds:
        adata = dgm.datasets.simulate(args.cells, args.genes, n_cell_types=args.types, n_conditions=2, seed=seed)
        perturbation_rows += perturbation_run(adata, seed, args)
        de_rows += de_run(adata, seed, args)
        if not args.skip_pbmc:
            pbmc_rows += pbmc_markers(seed, args)
    payload = {
        "settings": vars(args),
        "summary": summary(perturbation_rows, de_rows),
        "perturbation": perturbation_rows,
        "differential_expression": de_rows,
        "pbmc68k_markers": pbmc_rows,
    }
    print(payload["summary"])
    print(f"wrote {save(args.name, payload)}")


if __name__ == "__main__":
    main()
