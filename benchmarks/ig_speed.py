"""Speed of integrated gradients: scdgm against captum on the same VAE encoder, inputs, baseline and rule.

A VAE (``tl.vae``, 128 hidden units, one layer, NB) is trained briefly on ``datasets.simulate``; its
encoder's latent means (10 targets) are attributed to the ``log1p`` counts the encoder reads, from the
all-zero baseline, with 50 Gauss-Legendre steps, by

- ``tl.integrated_gradients`` (end to end from the AnnData, per-cell attributions stored in ``.layers``);
- the kernel ``scdgm.modules._attribution.integrated_gradients`` on tensors, fast path (the encoder's
  first layer is linear, so the genes x hidden product is computed once per cell, not once per step)
  and generic path (every step through the whole network, as captum does);
- captum's ``IntegratedGradients`` on the very same function (the encoder as ``u -> latent mean``),
  ``method="gausslegendre"``. Captum attributes one target per call (its API: ``target`` is one output
  index per example), so 10 targets take 10 calls; ``internal_batch_size`` (rows = steps x cells per
  forward pass) is swept and the fastest setting reported.

Same rule, same points: the results agree to float precision, except in the rare cell where a ReLU
kink of the encoder falls within float32 rounding of a quadrature point, whose gradient then flips
with the order of the sums (by at most that point's weight; in float64 the paths agree to 1e-15);
reported as the largest absolute difference, the number of cells differing by more than 1e-5, and
both completeness errors (per cell, relative to the largest output change, as in
``.obs["ig_vae_delta"]``). Throughput is cells x genes attributed (all targets) per second.

    python benchmarks/ig_speed.py [--cells 2000] [--genes 2000] [--n-steps 50] [--threads 2]
Writes benchmarks/results/ig_speed.json and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
from _common import save


def main() -> None:
    import torch
    from captum.attr import IntegratedGradients

    import scdgm as dgm
    from scdgm.modules._attribution import bytes_per_cell, completeness_error, vae_encoder
    from scdgm.modules._attribution import integrated_gradients as kernel

    parser = argparse.ArgumentParser()
    parser.add_argument("--cells", type=int, default=2000)
    parser.add_argument("--genes", type=int, default=2000)
    parser.add_argument("--latent", type=int, default=10)
    parser.add_argument("--n-steps", type=int, default=50)
    parser.add_argument("--train-epochs", type=int, default=5)
    parser.add_argument(
        "--internal-batch-sizes", type=int, nargs="+", default=[50_000, 0], help="0: all rows in one pass"
    )
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--skip-generic", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    dgm.settings.progress_bar = False
    dgm.settings.verbosity = 0
    n_steps, method = args.n_steps, "gausslegendre"

    adata = dgm.datasets.simulate(args.cells, args.genes, seed=0)
    adata = adata[:, np.asarray(adata.X.sum(0)).ravel() > 0].copy()
    dgm.tl.vae(adata, n_latent=args.latent, max_epochs=args.train_epochs, seed=0, device="cpu")
    n_cells, n_genes = adata.shape
    size = n_cells * n_genes

    module = dgm.get_model(adata, "vae").to("cpu").eval()
    model = vae_encoder(module)  # LinearFirst on log1p(counts): the encoder's input space
    x = torch.log1p(torch.as_tensor(adata.X.toarray()))
    zeros = torch.zeros_like(x)
    targets = list(range(args.latent))
    with torch.no_grad():
        change = model(x, {}) - model(zeros, {})

    def forward(u: torch.Tensor) -> torch.Tensor:  # the same encoder for captum
        return model(u, {})

    # the chunk tl.integrated_gradients picks for its default 1 GiB budget
    chunk = int(min(2**30 // bytes_per_cell(n_genes, n_steps, len(targets), n_hidden=128, fast=True), n_cells))
    generic_chunk = int(min(2**30 // bytes_per_cell(n_genes, n_steps, len(targets), n_hidden=128, fast=False), n_cells))

    def run_kernel(fast: bool, rows: int) -> torch.Tensor:
        parts = []
        for start in range(0, n_cells, rows):
            block = x[start : start + rows]
            result = kernel(model, block, None, targets=targets, n_steps=n_steps, method=method, fast=fast)
            parts.append(result.attributions)
        return torch.cat(parts)  # cells x targets x genes

    def run_tl():
        dgm.tl.integrated_gradients(adata, n_steps=n_steps, method=method, store_per_cell=True, device="cpu")
        return np.stack([adata.layers[f"ig_vae_latent_{t}"] for t in targets], 1)

    ig = IntegratedGradients(forward)

    def run_captum(internal_batch_size: int | None) -> tuple[torch.Tensor, torch.Tensor]:
        attributions, deltas = [], []
        for t in targets:  # one target per call: captum's API
            a, d = ig.attribute(
                x,
                baselines=zeros,
                target=t,
                n_steps=n_steps,
                method=method,
                internal_batch_size=internal_batch_size,
                return_convergence_delta=True,
            )
            attributions.append(a)
            deltas.append(d)
        return torch.stack(attributions, 1), torch.stack(deltas, 1)

    # warm up every code path once on a few cells
    kernel(model, x[:8], None, targets=targets, n_steps=n_steps, method=method)
    ig.attribute(x[:8], baselines=zeros[:8], target=0, n_steps=n_steps, method=method)

    # every configuration once per round, rounds interleaved: the best of the rounds is robust to load that
    # comes and goes on a shared machine, and treats every configuration alike
    configs = {f"captum:{ibs}": (lambda ibs=ibs: run_captum(ibs or None)) for ibs in args.internal_batch_sizes}
    configs["fast"] = lambda: run_kernel(True, chunk)
    if not args.skip_generic:
        configs["generic"] = lambda: run_kernel(False, generic_chunk)
    configs["tl"] = run_tl
    seconds = {name: float("inf") for name in configs}
    results = {}
    for _ in range(args.repeats):
        for name, fn in configs.items():
            start = time.perf_counter()
            results[name] = fn()
            seconds[name] = min(seconds[name], time.perf_counter() - start)
            print(f"{name}: {time.perf_counter() - start:.2f} s", flush=True)

    captum_names = [name for name in configs if name.startswith("captum:")]
    best = min(captum_names, key=seconds.get)
    reference = results[best][0]
    rows = []
    for name in configs:
        if name.startswith("captum:"):
            attributions, convergence = results[name]
            ibs = int(name.split(":")[1])
            tool, extra = (
                "captum IntegratedGradients",
                {
                    "internal_batch_size": ibs or n_steps * n_cells,
                    "captum_convergence_delta_max": float(convergence.abs().max()),
                },
            )
        else:
            attributions = torch.as_tensor(results[name])
            tool, extra = {
                "fast": ("scdgm kernel, fast path", {"chunk": chunk}),
                "generic": ("scdgm kernel, generic path", {"chunk": generic_chunk}),
                "tl": ("scdgm tl.integrated_gradients (store_per_cell)", {"chunk": chunk}),
            }[name]
        delta = completeness_error(attributions, change).numpy()
        per_cell_diff = (attributions - reference).abs().amax((1, 2)).numpy()
        rows.append(
            {
                "tool": tool,
                "seconds": seconds[name],
                "cells_x_genes_per_second": size / seconds[name],
                "completeness_p90": float(np.quantile(delta, 0.9)),
                "completeness_max": float(delta.max()),
                "max_abs_diff_to_captum": float(per_cell_diff.max()),
                "median_cell_max_abs_diff_to_captum": float(np.median(per_cell_diff)),
                # a ReLU kink within float32 rounding of a quadrature point flips that point's gradient
                # depending on the order of the sums: such cells differ by up to one point's weight
                "cells_differing_by_more_than_1e-5": int((per_cell_diff > 1e-5).sum()),
                **extra,
            }
        )

    captum_seconds = seconds[best]
    for row in rows:
        row["speedup_vs_best_captum"] = captum_seconds / row["seconds"]
    scale = float(reference.abs().max())
    path = save(
        "ig_speed",
        {
            "args": vars(args),
            "n_cells": n_cells,
            "n_genes": n_genes,
            "n_targets": len(targets),
            "max_abs_attribution": scale,
            "threads": torch.get_num_threads(),
            "load_average_after": os.getloadavg(),
            "rows": rows,
        },
    )

    print(
        f"\n{n_cells} cells x {n_genes} genes, {len(targets)} latent targets, {n_steps} Gauss-Legendre steps, "
        f"zero baseline, CPU ({torch.get_num_threads()} threads); largest |attribution| {scale:.3g}\n"
    )
    print(
        "| tool | internal_batch_size / chunk | seconds | cells x genes / s | vs captum "
        "| max abs diff to captum (cells > 1e-5) | completeness p90 / max |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        setting = r.get("internal_batch_size", r.get("chunk"))
        diff = r["max_abs_diff_to_captum"]
        print(
            f"| {r['tool']} | {setting:,} | {r['seconds']:.2f} | {r['cells_x_genes_per_second']:,.0f} "
            f"| {r['speedup_vs_best_captum']:.1f}x | {diff:.1e} ({r['cells_differing_by_more_than_1e-5']}) "
            f"| {r['completeness_p90']:.2%} / {r['completeness_max']:.2%} |"
        )
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
