"""Marker recovery by integrated gradients on simulated data with known marker genes.

For each seed: ``datasets.simulate`` (known markers per cell type in ``.varm["markers"]``), a VAE
(``tl.vae``), two Bayesian classifiers of the cell types (``tl.bayes_classify``): one on the VAE's
latent space ``X_vae`` (attributed through the encoder back to the genes) and one on log-normalised
genes (``normalize_total`` to 10,000 + ``log1p``, in ``.layers["lognorm"]``). Then
``tl.integrated_gradients`` (50 Gauss-Legendre steps) with every baseline and output:

- class attribution: ``groupby="cell_type"``, genes ranked for type ``t`` by the mean, over the cells of
  type ``t``, of their attribution to class ``t`` (``dgm.get.attributions(..., groupby="cell_type")``),
  for ``baseline`` in ``zeros`` (the default), ``other_groups`` (expected gradients from ``--n-baselines``
  cells of the other types) and ``mean`` (the mean-count pitfall, logit output only), and ``output`` in
  ``logit`` (the default) and ``probability``;
- factor attribution (zero baseline): ``model_key="vae", groupby="cell_type"``, genes ranked for type ``t``
  by the mean attribution, over the cells of type ``t``, to the latent factor that separates ``t`` best
  from the other cells (largest standardised mean difference), signed by the direction of that difference;
- reference (no model): the difference in mean ``log1p`` expression (normalised to 10,000 counts)
  between type ``t`` and the other cells, what ``sc.tl.rank_genes_groups`` ranks by.

The score is the AUROC of separating the markers of type ``t`` from all other genes, averaged over
types. Two simulations: ``markers`` (cell types differ by their markers; gene programs are small,
``program_fraction=0.01``) and ``default`` (``simulate``'s defaults: programs whose activity also differs
between types, so many non-marker genes are differentially expressed too and the reference itself stays
below 1). Also records the completeness error and whether the warning of ``tl.integrated_gradients`` fired.

``auroc_class_ig`` (zero baseline, probability, ``X_vae``: the default before 0.3) and ``auroc_factor_ig``
keep the columns of the earlier runs for reference.

    python benchmarks/ig_markers.py [--seeds 0 1 2] [--default-seeds 0] [--cells 3000] [--genes 1000]
        [--n-baselines 5] [--name ig_markers]
Writes benchmarks/results/<name>.json.
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np
from _common import save

SETTINGS = {"markers": {"program_fraction": 0.01}, "default": {}}
CLASSIFIERS = {"bayes": "X_vae", "bayes_genes": "genes"}
VARIANTS = [
    ("zeros", "logit"),
    ("zeros", "probability"),
    ("other_groups", "logit"),
    ("other_groups", "probability"),
    ("mean", "logit"),
]


def auroc(truth: np.ndarray, score: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(truth, score))


def attribute(adata, **kwargs) -> tuple[dict, float, bool]:
    """Run tl.integrated_gradients under the key "ig"; its .uns entry, the seconds taken and whether it warned."""
    import scdgm as dgm
    from scdgm._warnings import ScdgmWarning

    start = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ScdgmWarning)
        dgm.tl.integrated_gradients(adata, groupby="cell_type", key_added="ig", **kwargs)
    seconds = time.perf_counter() - start
    warned = any(issubclass(w.category, ScdgmWarning) and "incomplete" in str(w.message) for w in caught)
    entry = adata.uns.pop("ig")
    for key in ("ig", "ig_abs"):
        del adata.varm[key]
    del adata.obs["ig_delta"]
    return entry, seconds, warned


def own_class_auroc(entry: dict, markers: np.ndarray, types: list[str]) -> list[float]:
    """Per type: AUROC of its markers, ranked by the type's cells' mean attribution to its own class."""
    groups = [str(g) for g in entry["group_means"]["groups"]]
    targets = [str(t) for t in entry["targets"]]
    values = entry["group_means"]["values"]  # groups x genes x targets
    return [auroc(markers[:, k], values[groups.index(t), :, targets.index(t)]) for k, t in enumerate(types)]


def run(setting: str, seed: int, args: argparse.Namespace) -> dict:
    import scanpy as sc

    import scdgm as dgm

    t0 = time.perf_counter()
    adata = dgm.datasets.simulate(args.cells, args.genes, n_cell_types=args.types, seed=seed, **SETTINGS[setting])
    adata = adata[:, np.asarray(adata.X.sum(0)).ravel() > 0].copy()  # all-zero genes carry no signal
    markers = np.asarray(adata.varm["markers"])
    types = list(adata.obs["cell_type"].cat.categories)
    labels = adata.obs["cell_type"].to_numpy()
    norm = adata.copy()
    sc.pp.normalize_total(norm, target_sum=1e4)
    sc.pp.log1p(norm)
    adata.layers["lognorm"] = norm.X.copy()
    expression = norm.X.toarray() if hasattr(norm.X, "toarray") else np.asarray(norm.X)

    dgm.tl.vae(adata, n_latent=args.latent, max_epochs=args.vae_epochs, seed=seed)
    dgm.tl.bayes_classify(adata, "cell_type", max_epochs=args.bayes_epochs, seed=seed)
    dgm.tl.bayes_classify(
        adata,
        "cell_type",
        use_rep=None,
        layer="lognorm",
        max_epochs=args.bayes_epochs,
        seed=seed,
        key_added="bayes_genes",
    )
    train_seconds = time.perf_counter() - t0

    row = {
        "setting": setting,
        "seed": seed,
        "n_cells": adata.n_obs,
        "n_genes": adata.n_vars,
        "n_markers": int(markers.sum()),
        "classifier_accuracy": float(adata.uns["bayes"]["metrics"]["accuracy"]),
        "classifier_accuracy_genes": float(adata.uns["bayes_genes"]["metrics"]["accuracy"]),
        "train_seconds": train_seconds,
        "variants": [],
    }
    for model_key, inputs in CLASSIFIERS.items():
        for baseline, output in VARIANTS:
            extra = {"n_baselines": args.n_baselines} if baseline == "other_groups" else {}
            entry, seconds, warned = attribute(
                adata, model_key=model_key, baseline=baseline, output=output, seed=seed, **extra
            )
            per_type = own_class_auroc(entry, markers, types)
            row["variants"].append(
                {
                    "inputs": inputs,
                    "baseline": baseline,
                    "output": output,
                    "auroc": float(np.mean(per_type)),
                    "auroc_per_type": per_type,
                    "delta_p90": entry["delta_summary"]["p90"],
                    "delta_max": entry["delta_summary"]["max"],
                    "warned": warned,
                    "seconds": seconds,
                    "params": {k: v for k, v in entry["params"].items() if k in ("baseline", "output", "n_baselines")},
                }
            )
            print(f"  {setting} seed {seed}: {inputs} {baseline}/{output}: {np.mean(per_type):.3f} ({seconds:.0f} s)")
    old = next(
        v for v in row["variants"] if (v["inputs"], v["baseline"], v["output"]) == ("X_vae", "zeros", "probability")
    )
    row["auroc_class_ig"] = old["auroc"]

    vae, vae_seconds, vae_warned = attribute(adata, model_key="vae", seed=seed)
    latent = adata.obsm["X_vae"]
    groups = [str(g) for g in vae["group_means"]["groups"]]
    factor_auc, reference_auc = [], []
    for k, name in enumerate(types):
        inside = labels == name
        separation = (latent[inside].mean(0) - latent[~inside].mean(0)) / latent.std(0)
        factor = int(np.argmax(np.abs(separation)))
        means = vae["group_means"]["values"][groups.index(name)]  # genes x factors
        factor_auc.append(auroc(markers[:, k], np.sign(separation[factor]) * means[:, factor]))
        reference_auc.append(auroc(markers[:, k], expression[inside].mean(0) - expression[~inside].mean(0)))
    row |= {
        "auroc_factor_ig": float(np.mean(factor_auc)),
        "auroc_factor_ig_per_type": factor_auc,
        "auroc_log_fold_change": float(np.mean(reference_auc)),
        "delta_p90_vae": vae["delta_summary"]["p90"],
        "warned_vae": vae_warned,
        "ig_seconds_vae": vae_seconds,
    }
    return row


def _variant_name(inputs: str, baseline: str, output: str) -> str:
    return f"{inputs} {baseline}/{output}"


def main() -> None:
    import torch

    import scdgm as dgm

    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, nargs="*", default=[0, 1, 2], help="seeds of the markers simulation")
    parser.add_argument("--default-seeds", type=int, nargs="*", default=[0], help="seeds of the default simulation")
    parser.add_argument("--cells", type=int, default=3000)
    parser.add_argument("--genes", type=int, default=1000)
    parser.add_argument("--types", type=int, default=5)
    parser.add_argument("--latent", type=int, default=10)
    parser.add_argument("--vae-epochs", type=int, default=30)
    parser.add_argument("--bayes-epochs", type=int, default=30)
    parser.add_argument("--n-baselines", type=int, default=5, help="reference cells per cell for other_groups")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--name", default="ig_markers", help="results file: benchmarks/results/<name>.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    dgm.settings.progress_bar = False
    dgm.settings.verbosity = 0

    rows = []
    plan = [("markers", seed) for seed in args.seeds] + [("default", seed) for seed in args.default_seeds]
    for setting, seed in plan:
        rows.append(run(setting, seed, args))
    names = [_variant_name(inputs, b, o) for inputs in CLASSIFIERS.values() for b, o in VARIANTS]
    summary = {}
    for setting in dict.fromkeys(setting for setting, _ in plan):
        chosen = [r for r in rows if r["setting"] == setting]
        summary[setting] = {
            name: float(np.mean([r["variants"][i]["auroc"] for r in chosen])) for i, name in enumerate(names)
        } | {
            key: float(np.mean([r[key] for r in chosen]))
            for key in ("auroc_class_ig", "auroc_factor_ig", "auroc_log_fold_change", "classifier_accuracy")
        }
    path = save(args.name, {"args": vars(args), "rows": rows, "summary": summary})

    print("\n| simulation | seed | classifier on | baseline | output | AUROC | delta p90 | warned | IG s |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        for v in r["variants"]:
            print(
                f"| {r['setting']} | {r['seed']} | {v['inputs']} | {v['baseline']} | {v['output']} | {v['auroc']:.3f} "
                f"| {v['delta_p90']:.2%} | {'yes' if v['warned'] else 'no'} | {v['seconds']:.0f} |"
            )
    print("\n| simulation | seed | accuracy X_vae / genes | AUROC factor IG | AUROC log-FC (reference) |")
    print("| --- | --- | --- | --- | --- |")
    for r in rows:
        print(
            f"| {r['setting']} | {r['seed']} | {r['classifier_accuracy']:.3f} / {r['classifier_accuracy_genes']:.3f} "
            f"| {r['auroc_factor_ig']:.3f} | {r['auroc_log_fold_change']:.3f} |"
        )
    print("\nMean AUROC over seeds:\n")
    print("| simulation | " + " | ".join(names) + " | log-FC (reference) |")
    print("| --- " * (len(names) + 2) + "|")
    for setting, s in summary.items():
        print(
            f"| {setting} | "
            + " | ".join(f"{s[name]:.3f}" for name in names)
            + f" | {s['auroc_log_fold_change']:.3f} |"
        )
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
