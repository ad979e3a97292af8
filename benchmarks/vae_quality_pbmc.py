"""Latent-space quality on real counts: pbmc68k (700 cells, 10 FACS labels).

- 5-fold kNN (k = 15) label accuracy on X_vae (defaults of dgm.tl.vae), on 10 principal components of
  log-normalised data, and on scvi-tools' SCVI latent space with its default settings;
- held-out negative ELBO per cell of scdgm and SCVI trained on the same 90% of cells for the same
  number of epochs, scored on the same 10%.

    python benchmarks/vae_quality_pbmc.py [--seeds 0 1 2]
Writes benchmarks/results/vae_quality_pbmc.json and prints a Markdown table.
"""

from __future__ import annotations

import argparse

import numpy as np
from _common import save, train_scvi


def main() -> None:
    import scanpy as sc
    import scvi
    import torch

    import scdgm as dgm
    from scdgm._metrics import knn_label_accuracy
    from scdgm.tl._common import apply_stored_model

    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=400, help="epochs of the matched held-out ELBO comparison")
    args = parser.parse_args()
    dgm.settings.progress_bar = False
    base = dgm.datasets.pbmc68k()
    labels = base.obs["cell_type"].to_numpy()

    pca = base.copy()
    sc.pp.normalize_total(pca, target_sum=1e4)
    sc.pp.log1p(pca)
    sc.pp.pca(pca, n_comps=10, random_state=0)
    rows = {"pca10_lognorm": [knn_label_accuracy(pca.obsm["X_pca"], labels, seed=s) for s in args.seeds]}

    rows["scdgm_vae_default"], rows["scvi_default"] = [], []
    elbo = {"scdgm": [], "scvi": []}
    for seed in args.seeds:
        ours = base.copy()
        dgm.tl.vae(ours, seed=seed)
        rows["scdgm_vae_default"].append(knn_label_accuracy(ours.obsm["X_vae"], labels, seed=seed))

        theirs = base.copy()
        scvi.settings.seed = seed
        scvi.model.SCVI.setup_anndata(theirs, layer="counts")
        model = scvi.model.SCVI(theirs)
        train_scvi(model)
        rows["scvi_default"].append(knn_label_accuracy(model.get_latent_representation(), labels, seed=seed))

        held = np.random.default_rng(seed).permutation(base.n_obs)[: base.n_obs // 10]
        mask = np.zeros(base.n_obs, bool)
        mask[held] = True
        train, test = base[~mask].copy(), base[mask].copy()
        dgm.tl.vae(train, seed=seed, max_epochs=args.epochs, validation_fraction=0.0, early_stopping=False)
        applied = apply_stored_model(test, "vae", device="cpu", source=train)
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            elbo["scdgm"].append(applied.evaluate()["elbo"])
        scvi.model.SCVI.setup_anndata(train, layer="counts")
        model = scvi.model.SCVI(train)
        train_scvi(model, max_epochs=args.epochs, train_size=1.0)
        elbo["scvi"].append(-float(model.get_elbo(adata=test)))

    payload = {"seeds": args.seeds, "knn_accuracy": rows, "heldout_negative_elbo": elbo, "epochs": args.epochs}
    save("vae_quality_pbmc", payload)
    print("| representation | 5-fold kNN accuracy (mean over seeds) | per seed |")
    print("| --- | --- | --- |")
    for name, values in rows.items():
        print(f"| {name} | {np.mean(values):.3f} | {', '.join(f'{v:.3f}' for v in values)} |")
    print(f"\nheld-out negative ELBO per cell after {args.epochs} epochs on the same 90% of cells (lower is better):")
    for name, values in elbo.items():
        print(f"- {name}: {np.mean(values):.2f} ({', '.join(f'{v:.2f}' for v in values)})")


if __name__ == "__main__":
    main()
