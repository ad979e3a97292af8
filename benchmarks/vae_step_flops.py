"""What fraction of this machine's matrix-multiply throughput one VAE training step reaches, and where the rest goes.

Measures (1) the machine's float32 GEMM throughput with torch (square 2,048 matrices, all threads),
(2) the time of one training step of scdgm's VAE at the benchmark's settings (2,000 genes, 128 hidden,
10 latent, NB, batch 128) inside the real engine, and reports the step's matrix-multiply FLOPs over
its time as a fraction of (1). Then (3) profiles 150 steps of the same loop (torch.profiler) for NB and
ZINB and splits a step's time into the matrix multiplies, the likelihood's dense part, its log-gamma
terms on the non-zero entries, the optimizer with clipping, serving the batch, and the rest.

    python benchmarks/vae_step_flops.py
Writes benchmarks/results/vae_step_flops.json.
"""

from __future__ import annotations

import time

import numpy as np
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


def step_profile(adata, likelihood: str, n_steps: int = 150) -> dict:
    """Share of a training step's time by part, from torch.profiler over ``n_steps`` steps of the engine's step."""
    import torch
    from torch.profiler import ProfilerActivity, profile, record_function

    from scdgm.data import BatchStore, MiniBatches, prepare_data
    from scdgm.modules import VAEModule
    from scdgm.train._fit import _OneProcess

    data = prepare_data(adata, layer="counts", counts=True)
    batches = MiniBatches(BatchStore.from_prepared(data, "cpu"), np.arange(data.n_obs), batch_size=BATCH, shuffle=True)
    torch.manual_seed(0)
    module = VAEModule(N_GENES, n_hidden=N_HIDDEN, n_latent=N_LATENT, likelihood=likelihood).train()
    optimizer = torch.optim.Adam(module.parameters(), lr=1e-3, eps=0.01, fused=True)

    def steps(n: int) -> None:
        iterator = iter(batches)
        for _ in range(n):
            with record_function("serve batch"):
                batch = next(iterator)
            out = module(batch, kl_weight=1.0)
            optimizer.zero_grad(set_to_none=True)
            out.loss.backward()
            with record_function("clip"):
                _OneProcess.clip_gradients(module, optimizer, max_norm=50.0)
            optimizer.step()

    steps(20)  # warm-up
    start = time.perf_counter()
    steps(n_steps)
    step_ms = (time.perf_counter() - start) / n_steps * 1e3
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        steps(n_steps)
    events = {e.key: e for e in prof.key_averages()}

    def total(*names: str) -> float:
        return sum(events[n].cpu_time_total for n in names if n in events)

    def self_time(*names: str) -> float:
        return sum(events[n].self_cpu_time_total for n in names if n in events)

    parts = {
        "matrix multiplies": self_time("aten::mm", "aten::addmm"),
        "likelihood, dense part (softmax, NB/ZINB terms)": total(
            "_DecoderCountLikelihood", "_DecoderCountLikelihoodBackward"
        ),
        "likelihood, log-gamma terms on the non-zero entries": total(
            "_GeneDispersionNormaliser", "_GeneDispersionNormaliserBackward"
        ),
        "optimizer and clipping": total("Optimizer.step#Adam.step", "Optimizer.zero_grad#Adam.zero_grad", "clip"),
        "serve batch (sparse rows to dense)": total("serve batch"),
    }
    profiled = sum(e.self_cpu_time_total for e in events.values())
    parts["the rest (encoder input, batch norm, dropout, KL, autograd)"] = profiled - sum(parts.values())
    return {
        "likelihood": likelihood,
        "step_ms_unprofiled": step_ms,
        "shares": {name: value / profiled for name, value in parts.items()},
    }


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
    row["step_profile"] = [step_profile(adata, likelihood) for likelihood in ("nb", "zinb")]
    save("vae_step_flops", row)
    print(row)
    for profile_row in row["step_profile"]:
        print(f"\n{profile_row['likelihood']}: {profile_row['step_ms_unprofiled']:.2f} ms per step")
        for name, share in profile_row["shares"].items():
            print(f"| {name} | {share:.0%} |")


if __name__ == "__main__":
    main()
