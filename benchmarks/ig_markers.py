"""Marker recovery by integrated gradients on simulated data with known marker genes.

For each seed: ``datasets.simulate`` (known markers per cell type in ``.varm["markers"]``), a VAE
(``tl.vae``), a Bayesian classifier of the cell types on its latent space (``tl.bayes_classify`` on
``X_vae``), then ``tl.integrated_gradients`` at default settings (zero baseline, 50 Gauss-Legendre
steps):

- class attribution: ``model_key="bayes", groupby="cell_type"``, genes ranked for type ``t`` by the mean,
  over the cells of type ``t``, of their attribution to the probability of class ``t`` (attributed
  through the encoder back to the genes);
- factor attribution: ``model_key="vae", groupby="cell_type"``, genes ranked for type ``t`` by the mean
  attribution, over the cells of type ``t``, to the latent factor that separates ``t`` best from the
  other cells (largest standardised mean difference), signed by the direction of that difference;
- reference (no model): the difference in mean ``log1p`` expression (normalised to 10,000 counts)
  between type ``t`` and the other cells, what ``sc.tl.rank_genes_groups`` ranks by.

The score is the AUROC of separating the markers of type ``t`` from all other genes, averaged over
types. Two simulations: ``markers`` (cell types differ by their markers; gene programs are small,
``program_fraction=0.01``) and ``default`` (``simulate``'s defaults: half the genes sit in programs whose
activity also differs between types, so many non-marker genes are differentially expressed too and the
reference itself stays well below 1). Also records the completeness error at default settings and
whether the warning of ``tl.integrated_gradients`` fired.

    python benchmarks/ig_markers.py [--seeds 0 1 2] [--default-seeds 0] [--cells 3000] [--genes 1000]
Writes benchmarks/results/ig_markers.json.
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np
from _common import save

SETTINGS = {"markers": {"program_fraction": 0.01}, "default": {}}


def auroc(truth: np.ndarray, score: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(truth, score))


def attribute(adata, **kwargs) -> tuple[dict, float, bool]:
    """Run tl.integrated_gradients, returning its .uns entry, the seconds taken and whether it warned."""
    import scdgm as dgm
    from scdgm._warnings import ScdgmWarning

    start = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ScdgmWarning)
        dgm.tl.integrated_gradients(adata, groupby="cell_type", **kwargs)
    seconds = time.perf_counter() - start
    warned = any(issubclass(w.category, ScdgmWarning) and "incomplete" in str(w.message) for w in caught)
    key = f"ig_{kwargs['model_key']}"
    by_group = dgm.get.attributions(adata, key, group="all").pivot_table(
        index=["group", "gene"], columns="target", values="attribution", sort=False
    )
    # {group: genes x targets}, genes in adata's order, targets in the model's
    targets = list(adata.uns[key]["targets"])
    means = {group: by_group.loc[group].loc[adata.var_names, targets].to_numpy() for group in by_group.index.levels[0]}
    return {"group_means": means}, seconds, warned


def run(setting: str, seed: int, args: argparse.Namespace) -> dict:
    import scanpy as sc

    import scdgm as dgm

    t0 = time.perf_counter()
    adata = dgm.datasets.simulate(args.cells, args.genes, n_cell_types=args.types, seed=seed, **SETTINGS[setting])
    adata = adata[:, np.asarray(adata.X.sum(0)).ravel() > 0].copy()  # all-zero genes carry no signal
    markers = np.asarray(adata.varm["markers"])
    types = list(adata.obs["cell_type"].cat.categories)
    labels = adata.obs["cell_type"].to_numpy()

    dgm.tl.vae(adata, n_latent=args.latent, max_epochs=args.vae_epochs, seed=seed)
    dgm.tl.bayes_classify(adata, "cell_type", max_epochs=args.bayes_epochs, seed=seed)
    train_seconds = time.perf_counter() - t0

    bayes, bayes_seconds, bayes_warned = attribute(adata, model_key="bayes")
    vae, vae_seconds, vae_warned = attribute(adata, model_key="vae")

    latent = adata.obsm["X_vae"]
    norm = adata.copy()
    sc.pp.normalize_total(norm, target_sum=1e4)
    sc.pp.log1p(norm)
    expression = norm.X.toarray() if hasattr(norm.X, "toarray") else np.asarray(norm.X)

    class_auc, factor_auc, reference_auc = [], [], []
    for k, name in enumerate(types):
        inside = labels == name
        class_auc.append(auroc(markers[:, k], bayes["group_means"][name][:, k]))
        separation = (latent[inside].mean(0) - latent[~inside].mean(0)) / latent.std(0)
        factor = int(np.argmax(np.abs(separation)))
        factor_auc.append(auroc(markers[:, k], np.sign(separation[factor]) * vae["group_means"][name][:, factor]))
        reference_auc.append(auroc(markers[:, k], expression[inside].mean(0) - expression[~inside].mean(0)))
    return {
        "setting": setting,
        "seed": seed,
        "n_cells": adata.n_obs,
        "n_genes": adata.n_vars,
        "n_markers": int(markers.sum()),
        "classifier_accuracy": float(adata.uns["bayes"]["metrics"]["accuracy"]),
        "auroc_class_ig": float(np.mean(class_auc)),
        "auroc_class_ig_per_type": class_auc,
        "auroc_factor_ig": float(np.mean(factor_auc)),
        "auroc_factor_ig_per_type": factor_auc,
        "auroc_log_fold_change": float(np.mean(reference_auc)),
        "delta_p90_bayes": bayes["delta_summary"]["p90"],
        "delta_max_bayes": bayes["delta_summary"]["max"],
        "warned_bayes": bayes_warned,
        "delta_p90_vae": vae["delta_summary"]["p90"],
        "delta_max_vae": vae["delta_summary"]["max"],
        "warned_vae": vae_warned,
        "ig_seconds_bayes": bayes_seconds,
        "ig_seconds_vae": vae_seconds,
        "train_seconds": train_seconds,
    }


def main() -> None:
    import torch

    import scdgm as dgm

    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="seeds of the markers simulation")
    parser.add_argument("--default-seeds", type=int, nargs="*", default=[0], help="seeds of the default simulation")
    parser.add_argument("--cells", type=int, default=3000)
    parser.add_argument("--genes", type=int, default=1000)
    parser.add_argument("--types", type=int, default=5)
    parser.add_argument("--latent", type=int, default=10)
    parser.add_argument("--vae-epochs", type=int, default=30)
    parser.add_argument("--bayes-epochs", type=int, default=30)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    dgm.settings.progress_bar = False
    dgm.settings.verbosity = 0

    rows = []
    plan = [("markers", seed) for seed in args.seeds] + [("default", seed) for seed in args.default_seeds]
    for setting, seed in plan:
        row = run(setting, seed, args)
        rows.append(row)
        print({k: v for k, v in row.items() if not k.endswith("per_type")}, flush=True)
    summary = {}
    for setting in dict.fromkeys(setting for setting, _ in plan):
        chosen = [r for r in rows if r["setting"] == setting]
        summary[setting] = {
            key: float(np.mean([r[key] for r in chosen]))
            for key in ("auroc_class_ig", "auroc_factor_ig", "auroc_log_fold_change", "classifier_accuracy")
        } | {"warned": sum(r["warned_bayes"] + r["warned_vae"] for r in chosen), "runs": 2 * len(chosen)}
    path = save("ig_markers", {"args": vars(args), "rows": rows, "summary": summary})

    print(
        "\n| simulation | seed | cells x genes | accuracy | AUROC class IG | AUROC factor IG | AUROC log-FC "
        "| delta p90 bayes / vae | warned | IG s bayes / vae |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        print(
            f"| {r['setting']} | {r['seed']} | {r['n_cells']} x {r['n_genes']} | {r['classifier_accuracy']:.3f} "
            f"| {r['auroc_class_ig']:.3f} | {r['auroc_factor_ig']:.3f} | {r['auroc_log_fold_change']:.3f} "
            f"| {r['delta_p90_bayes']:.2%} / {r['delta_p90_vae']:.2%} "
            f"| {'yes' if r['warned_bayes'] else 'no'} / {'yes' if r['warned_vae'] else 'no'} "
            f"| {r['ig_seconds_bayes']:.1f} / {r['ig_seconds_vae']:.1f} |"
        )
    print("\n| simulation | mean AUROC class IG | mean AUROC factor IG | mean AUROC log-FC | warnings |")
    print("| --- | --- | --- | --- | --- |")
    for setting, s in summary.items():
        print(
            f"| {setting} | {s['auroc_class_ig']:.3f} | {s['auroc_factor_ig']:.3f} | {s['auroc_log_fold_change']:.3f} "
            f"| {s['warned']} of {s['runs']} |"
        )
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
