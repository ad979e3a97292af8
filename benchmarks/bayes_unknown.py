"""Unseen cell types on pbmc68k: the unknown score of `tl.bayes_classify` against its epistemic uncertainty.

Each run hides the labels of one or two types and of a random 30 % of the other cells, trains the
classifier on `X_vae` and on log-normalised genes, and reports the AUROC of `bayes_unknown_score` and of
`bayes_epistemic` (unseen cells against unlabelled cells of known types), and the share of each flagged.

    cd benchmarks && OMP_NUM_THREADS=2 ../.venv/bin/python bayes_unknown.py [--seeds 0]
"""

from __future__ import annotations

import argparse

import numpy as np
import pandas as pd
from _common import save

LEFT_OUT = [["CD56+ NK"], ["CD34+", "CD56+ NK"], ["CD19+ B"], ["CD4+/CD25 T Reg"]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    args = parser.parse_args()

    import scanpy as sc

    import scdgm as dgm
    from scdgm._metrics import auroc

    dgm.settings.progress_bar = False
    dgm.settings.verbosity = 0
    rows = []
    for seed in args.seeds:
        adata = dgm.datasets.pbmc68k()
        dgm.tl.vae(adata, seed=seed)
        normalised = adata.copy()
        sc.pp.normalize_total(normalised, target_sum=1e4)
        sc.pp.log1p(normalised)
        adata.layers["log"] = normalised.X
        truth = adata.obs["cell_type"].astype(str).to_numpy()
        for left in LEFT_OUT:
            unseen = np.isin(truth, left)
            unlabelled = unseen | (np.random.default_rng(seed).random(adata.n_obs) < 0.3)
            adata.obs["partial"] = pd.Categorical(np.where(unlabelled, None, truth))
            for name, inputs in (("X_vae", {"use_rep": "X_vae"}), ("genes", {"use_rep": None, "layer": "log"})):
                dgm.tl.bayes_classify(adata, "partial", seed=seed, **inputs)
                score = adata.obs["bayes_unknown_score"].to_numpy()
                epistemic = adata.obs["bayes_epistemic"].to_numpy()
                flagged = adata.obs["bayes_unknown"].to_numpy()
                known = unlabelled & ~unseen
                row = {
                    "seed": seed,
                    "left_out": " + ".join(left),
                    "input": name,
                    "auroc_unknown_score": auroc(score[unlabelled], unseen[unlabelled]),
                    "auroc_epistemic": auroc(epistemic[unlabelled], unseen[unlabelled]),
                    "flagged_known": float(flagged[known].mean()),
                    "flagged_unseen": float(flagged[unseen].mean()),
                }
                rows.append(row)
                print(row, flush=True)
    save("bayes_unknown", rows)


if __name__ == "__main__":
    main()
