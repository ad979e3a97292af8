"""Out-of-core training (issue 17): ``tl.vae`` on a backed ``.h5ad`` that is never loaded or densified whole.

    python benchmarks/backed.py [--cells 1000000] [--genes 2000] [--epochs 1] [--path /tmp/backed.h5ad]
                                [--memory-cells 200000] [--device cpu] [--out FILE]

1. Writes ``datasets.simulate(cells, genes, n_cell_types=8, n_programs=10, seed=0)`` (counts in ``.X``,
   CSR, uncompressed) to ``--path`` once, in a process of its own; a file of the right shape is reused.
2. In a fresh process (``run_isolated``, so the peak memory is its own): ``anndata.read_h5ad(path,
   backed="r")`` and ``tl.vae`` on it (NB, 128 hidden, 10 latent, batch 128, 10 % held out, no early
   stopping). ``prepare_data`` keeps the backed matrix on disk and the engine streams it
   (``StreamingStore``: windows of 4 chunks of contiguous rows, read, shuffled together, densified per
   batch). Reported: cells/s in the epoch loop (the engine's figure and per epoch), the wall time of the
   whole call (the validation scan, the held-out and training metrics, the latent means of every cell
   are all streamed too) and the peak resident memory.
3. The same in memory, on the first ``--memory-cells`` rows of the file loaded whole (``to_memory()``),
   for reference.

Writes ``benchmarks/results/backed.json`` and prints a Markdown table. The internal steps are run as
``backed.py --step {write,backed,memory} ...`` and print one JSON line each.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from _common import peak_rss_gb, run_isolated, save

N_CELL_TYPES, N_PROGRAMS = 8, 10
N_HIDDEN, N_LATENT, BATCH, VALIDATION_FRACTION, SEED = 128, 10, 128, 0.1, 0


def file_shape(path: Path) -> tuple[int, int] | None:
    """Shape of ``.X`` in an h5ad file, or ``None`` when there is no readable file."""
    if not path.exists():
        return None
    try:
        import anndata

        backed = anndata.read_h5ad(path, backed="r")
        shape = tuple(backed.shape)
        backed.file.close()
    except Exception:  # noqa: BLE001 - a damaged or partial file is simply written again
        return None
    return shape  # type: ignore[return-value]


def step_write(path: Path, n_cells: int, n_genes: int) -> dict[str, Any]:
    import scdgm as dgm

    start = time.perf_counter()
    adata = dgm.datasets.simulate(
        n_cells, n_genes, n_cell_types=N_CELL_TYPES, n_programs=N_PROGRAMS, seed=SEED, copy_counts=False
    )
    simulate_seconds = time.perf_counter() - start
    del adata.layers["counts"]  # the same matrix as .X: it would be written twice
    tmp = path.with_name(path.name + ".partial")
    start = time.perf_counter()
    adata.write_h5ad(tmp)
    tmp.replace(path)
    return {
        "step": "write",
        "n_cells": n_cells,
        "n_genes": n_genes,
        "stored_counts": int(adata.X.nnz),
        "simulate_seconds": simulate_seconds,
        "write_seconds": time.perf_counter() - start,
        "file_gb": path.stat().st_size / 2**30,
        "peak_rss_gb": peak_rss_gb(),
    }


def step_train(path: Path, *, backed: bool, n_cells: int | None, epochs: int, device: str) -> dict[str, Any]:
    import anndata
    import lightning.fabric  # noqa: F401 - imported before the clock starts, as the engine imports it lazily
    import torch
    from gpu import synchronize, timed_epochs

    import scdgm as dgm

    dgm.settings.progress_bar = False
    dgm.settings.verbosity = 1
    start = time.perf_counter()
    adata = anndata.read_h5ad(path, backed="r")
    if not backed:
        adata = adata[: n_cells or adata.n_obs].to_memory()
    open_seconds = time.perf_counter() - start
    rss_before = peak_rss_gb()
    with timed_epochs(device) as passes:
        start = time.perf_counter()
        dgm.tl.vae(
            adata,
            n_hidden=N_HIDDEN,
            n_latent=N_LATENT,
            batch_size=BATCH,
            max_epochs=epochs,
            early_stopping=False,
            validation_fraction=VALIDATION_FRACTION,
            device=device,
            seed=SEED,
        )
        synchronize(device)
        seconds = time.perf_counter() - start
    metrics = adata.uns["vae"]["metrics"]
    train_passes = [p for p in passes if p["training"]]
    return {
        "step": "backed" if backed else "memory",
        "n_cells": adata.n_obs,
        "n_genes": adata.n_vars,
        "is_backed": bool(adata.isbacked),
        "store": train_passes[0]["store"] if train_passes else None,
        "epochs": int(metrics["n_epochs"]),
        "device": device,
        "torch_threads": torch.get_num_threads(),
        "open_seconds": open_seconds,
        "call_seconds": seconds,
        "loop_cells_per_second": float(metrics["train_cells_per_second"]),
        "epoch_cells_per_second": [p["cells"] / p["seconds"] for p in train_passes],
        "epoch_seconds": [p["seconds"] for p in train_passes],
        "evaluation_pass_seconds": sum(p["seconds"] for p in passes if not p["training"]),
        "outside_epoch_passes_seconds": seconds - sum(p["seconds"] for p in passes),
        "heldout_negative_elbo": float(metrics["validation_elbo"]),
        "rss_before_training_gb": rss_before,
        "peak_rss_gb": peak_rss_gb(),
    }


def table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| data | cells x genes | epochs | loop cells/s | whole call (s) | held-out -ELBO | peak RSS (GB) |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        lines.append(
            f"| {'backed h5ad' if r['is_backed'] else 'in memory'} ({r['store']}) | {r['n_cells']:,} x {r['n_genes']:,} "
            f"| {r['epochs']} | {r['loop_cells_per_second']:,.0f} | {r['call_seconds']:.1f} "
            f"| {r['heldout_negative_elbo']:.1f} | {r['peak_rss_gb']:.2f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", type=int, default=1_000_000)
    parser.add_argument("--genes", type=int, default=2_000)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--path", type=Path, default=Path("/tmp/backed.h5ad"))
    parser.add_argument("--memory-cells", type=int, default=200_000, help="cells of the in-memory reference")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--skip-memory", action="store_true", help="no in-memory reference")
    parser.add_argument("--out", type=Path, default=None, help="default: benchmarks/results/backed.json")
    parser.add_argument("--step", choices=["write", "backed", "memory"], default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.step == "write":
        print(json.dumps(step_write(args.path, args.cells, args.genes)))
        return
    if args.step is not None:
        result = step_train(
            args.path,
            backed=args.step == "backed",
            n_cells=args.memory_cells,
            epochs=args.epochs,
            device=args.device,
        )
        print(json.dumps(result))
        return

    payload: dict[str, Any] = {"args": {k: str(v) for k, v in vars(args).items()}}
    common = ["--path", str(args.path), "--cells", str(args.cells), "--genes", str(args.genes)]
    if file_shape(args.path) != (args.cells, args.genes):
        print(f"writing {args.cells:,} x {args.genes:,} counts to {args.path} ...", flush=True)
        payload["write"] = run_isolated("backed.py", "--step", "write", *common, timeout=4 * 3600)
        print(payload["write"], flush=True)
    else:
        payload["write"] = {"reused": str(args.path), "file_gb": args.path.stat().st_size / 2**30}
    train = [*common, "--epochs", str(args.epochs), "--device", args.device, "--memory-cells", str(args.memory_cells)]
    rows = [run_isolated("backed.py", "--step", "backed", *train, timeout=6 * 3600)]
    print(rows[-1], flush=True)
    if not args.skip_memory:
        rows.append(run_isolated("backed.py", "--step", "memory", *train, timeout=6 * 3600))
        print(rows[-1], flush=True)
    payload["runs"] = rows
    if args.out is None:
        path = save("backed", payload)
    else:
        path = args.out
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(payload, indent=2, default=float))
    print(f"\nwrote {path}\n")
    print(table(rows))


if __name__ == "__main__":
    sys.exit(main())
