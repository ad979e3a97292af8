"""Wall time and peak memory of ``scdgm.datasets.simulate`` at scale (default 1,000,000 cells x 2,000 genes).

Each configuration runs in a fresh Python process, so the peak resident memory it reports is the
simulation's own (plus the imports, reported separately).

    python benchmarks/simulate_memory.py [--cells 1000000] [--genes 2000] [--n-jobs N] [--no-copy-counts]
                                         [--write out.json]

Prints one JSON line per run and a Markdown table for benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path


def _peak_rss_gib() -> float:
    """Peak resident memory of this process so far (Linux reports ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2


def child(n_cells: int, n_genes: int, n_jobs: int | None, copy_counts: bool) -> None:
    import numpy as np

    import scdgm

    rss_after_import = _peak_rss_gib()
    start = time.perf_counter()
    adata = scdgm.datasets.simulate(n_cells, n_genes, n_jobs=n_jobs, copy_counts=copy_counts)
    seconds = time.perf_counter() - start
    peak = _peak_rss_gib()
    X = adata.X
    matrix_gib = (X.data.nbytes + X.indices.nbytes + X.indptr.nbytes) / 1024**3
    totals = np.asarray(adata.obs["n_counts"])
    row = {
        "n_cells": n_cells,
        "n_genes": n_genes,
        "n_jobs": n_jobs,
        "copy_counts": copy_counts,
        "seconds": round(seconds, 1),
        "peak_rss_gib": round(peak, 2),
        "rss_after_import_gib": round(rss_after_import, 2),
        "nnz": int(X.nnz),
        "zero_fraction": round(1 - X.nnz / (n_cells * n_genes), 4),
        "matrix_gib": round(matrix_gib, 2),
        "mean_total_counts": round(float(totals.mean()), 1),
        "min_total_counts": float(totals.min()),
        "machine": f"{platform.machine()}, {len(__import__('os').sched_getaffinity(0))} cores",
    }
    print(json.dumps(row), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cells", type=int, nargs="+", default=[1_000_000])
    parser.add_argument("--genes", type=int, default=2_000)
    parser.add_argument("--n-jobs", type=int, default=None)
    parser.add_argument(
        "--no-copy-counts", action="store_true", help='share .X with .layers["counts"] (copy_counts=False)'
    )
    parser.add_argument("--write", type=Path, default=None, help="also write the rows to this JSON file")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.cells[0], args.genes, args.n_jobs, not args.no_copy_counts)
        return

    rows = []
    for n_cells in args.cells:
        command = [sys.executable, __file__, "--child", "--cells", str(n_cells), "--genes", str(args.genes)]
        if args.n_jobs is not None:
            command += ["--n-jobs", str(args.n_jobs)]
        if args.no_copy_counts:
            command.append("--no-copy-counts")
        proc = subprocess.run(command, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise RuntimeError(f"simulate({n_cells}, {args.genes}) failed:\n{proc.stderr[-3000:]}")
        row = json.loads([line for line in proc.stdout.splitlines() if line.startswith("{")][-1])
        rows.append(row)
        print(json.dumps(row), flush=True)
    if args.write is not None:
        args.write.write_text(json.dumps(rows, indent=1) + "\n")

    print("\n| cells x genes | counts layer | wall time (s) | peak RSS (GiB) | nnz | zeros | X size (GiB) | machine |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        print(
            f"| {r['n_cells']:,} x {r['n_genes']:,} | {'copy' if r['copy_counts'] else 'shared'} | {r['seconds']:.0f} | {r['peak_rss_gib']:.1f} "
            f"| {r['nnz']:,} | {r['zero_fraction']:.1%} | {r['matrix_gib']:.2f} | {r['machine']} |"
        )


if __name__ == "__main__":
    main()
