"""One speed/quality measurement: train scdgm's VAE or scvi-tools' SCVI on simulated counts, print JSON.

Called by vae_speed.py in a fresh process per configuration, so each peak memory is its own.
    python benchmarks/vae_speed_one.py {scdgm,scvi} N_CELLS LIKELIHOOD EPOCHS
Both tools see the same cells: the same 10% are held out (by seed) and only scored, never trained on.
"""

from __future__ import annotations

import json
import sys
import time

import numpy as np

sys.path.insert(0, str(__import__("pathlib").Path(__file__).parent))
from _common import peak_rss_gb, train_scvi

N_GENES, N_HIDDEN, N_LATENT, BATCH = 2_000, 128, 10, 128


def main(tool: str, n_cells: int, likelihood: str, epochs: int) -> dict:
    import torch

    # Imports are a cost of the session, not of the training call: scvi-tools imports torch._dynamo (through
    # Lightning) and itself, scdgm's first Adam imports torch._dynamo. All of it happens before the clock
    # starts, for both tools alike. (Until issue 17's second stop `import scvi`, 2-3 s, was inside the clock.)
    import torch._dynamo

    import scdgm as dgm

    if tool == "scvi":
        import scvi

    torch.set_num_threads(torch.get_num_threads())
    adata = dgm.datasets.simulate(n_cells, N_GENES, n_cell_types=8, n_programs=10, seed=0)
    val = np.random.default_rng(0).permutation(n_cells)[: n_cells // 10]
    is_val = np.zeros(n_cells, bool)
    is_val[val] = True
    train, held = adata[~is_val].copy(), adata[is_val].copy()
    del adata
    start = time.perf_counter()
    if tool == "scdgm":
        dgm.settings.progress_bar = False
        dgm.tl.vae(
            train,
            n_hidden=N_HIDDEN,
            n_latent=N_LATENT,
            likelihood=likelihood,
            max_epochs=epochs,
            batch_size=BATCH,
            validation_fraction=0.0,
            early_stopping=False,
            device="cpu",
            seed=0,
        )
        seconds = time.perf_counter() - start
        from scdgm.tl._common import apply_stored_model

        applied = apply_stored_model(held, "vae", device="cpu", source=train)
        with torch.random.fork_rng():
            torch.manual_seed(0)
            metrics = applied.evaluate()
        neg_elbo = metrics["elbo"]
        loop_cells_per_second = train.uns["vae"]["metrics"]["train_cells_per_second"]
    else:
        import scvi

        scvi.settings.seed = 0
        scvi.settings.dl_num_workers = 0
        scvi.model.SCVI.setup_anndata(train, layer="counts")
        model = scvi.model.SCVI(train, n_hidden=N_HIDDEN, n_latent=N_LATENT, n_layers=1, gene_likelihood=likelihood)
        train_scvi(
            model,
            max_epochs=epochs,
            batch_size=BATCH,
            train_size=1.0,
            early_stopping=False,
            enable_model_summary=False,
        )
        seconds = time.perf_counter() - start
        neg_elbo = -float(model.get_elbo(adata=held, batch_size=1024))
        loop_cells_per_second = None
    return {
        "tool": tool,
        "n_cells": n_cells,
        "n_genes": N_GENES,
        "likelihood": likelihood,
        "epochs": epochs,
        "train_seconds": seconds,
        # the same clock for both tools: the whole training call (set-up, epochs, the posterior means
        # scdgm computes at the end) divided into the cells x epochs trained
        "train_cells_per_second": epochs * train.n_obs / seconds,
        "epoch_loop_cells_per_second": loop_cells_per_second,
        "heldout_negative_elbo": neg_elbo,
        "peak_rss_gb": peak_rss_gb(),
        "torch_threads": torch.get_num_threads(),
    }


if __name__ == "__main__":
    tool, n_cells, likelihood, epochs = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
    print(json.dumps(main(tool, n_cells, likelihood, epochs)))
