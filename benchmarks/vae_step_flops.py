"""What fraction of this machine's matrix-multiply throughput one VAE training step reaches.

Measures (1) the machine's float32 GEMM throughput with torch (square 2,048 matrices, all threads),
(2) the time of one training step of scdgm's VAE at the benchmark's settings (2,000 genes, 128 hidden,
10 latent, NB, batch 128) inside the real engine, and reports the step's matrix-multiply FLOPs over
its time as a fraction of (1).

    python benchmarks/vae_step_flops.py
Writes benchmarks/results/vae_step_flops.json.
"""

from __future__ import annotations

import time

from _common import save

N_GENES, N_HIDDEN, N_LATENT, BATCH = 2_000, 128, 10, 128


def gemm_gflops(size: int = 2048, repeats: int = 20) -> float:
    """Best float32 GEMM throughput of ``repeats`` square products, in GFLOP/s."""
    import torch

    a, b = torch.randn(size, size), torch.randn(size, size)
    a @ b  # warm-up
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best / 1e9


def step_matmul_flops(batch: int = BATCH) -> float:
    """Matrix-multiply FLOPs of one step: forward, weight gradients, input gradients (none for the data)."""
    layers = [
        (N_GENES, N_HIDDEN),
        (N_HIDDEN, N_LATENT),
        (N_HIDDEN, N_LATENT),
        (N_LATENT, N_HIDDEN),
        (N_HIDDEN, N_GENES),
    ]
    total = 0.0
    for i, (n_in, n_out) in enumerate(layers):
        macs = batch * n_in * n_out
        passes = 2 if i == 0 else 3  # forward + weight gradient (+ input gradient past the first layer)
        total += 2 * macs * passes
    return total


def main() -> None:
    import torch

    import scdgm as dgm

    dgm.settings.progress_bar = False
    dgm.settings.verbosity = 0
    adata = dgm.datasets.simulate(20_000, N_GENES, n_cell_types=8, n_programs=10, seed=0)
    peak = gemm_gflops()
    kwargs = {
        "n_hidden": N_HIDDEN,
        "n_latent": N_LATENT,
        "batch_size": BATCH,
        "validation_fraction": 0.0,
        "early_stopping": False,
        "device": "cpu",
        "seed": 0,
    }
    dgm.tl.vae(adata, max_epochs=1, **kwargs)  # warm-up
    dgm.tl.vae(adata, max_epochs=5, **kwargs)
    cells_per_second = adata.uns["vae"]["metrics"]["train_cells_per_second"]
    step_seconds = BATCH / cells_per_second
    flops = step_matmul_flops()
    achieved = flops / step_seconds / 1e9
    row = {
        "torch_threads": torch.get_num_threads(),
        "gemm_gflops": peak,
        "step_ms": step_seconds * 1e3,
        "step_matmul_gflop": flops / 1e9,
        "achieved_gflops": achieved,
        "fraction_of_gemm_peak": achieved / peak,
    }
    save("vae_step_flops", row)
    print(row)


if __name__ == "__main__":
    main()
