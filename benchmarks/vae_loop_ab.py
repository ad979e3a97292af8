"""The epoch loop of ``tl.vae`` under two versions of scdgm, run alternately so both see the same machine.

Each run is a fresh process importing scdgm from one ``src`` folder (e.g. a ``git worktree`` of an older
commit, and this checkout's ``src``): 20,000 x 2,000 simulated counts, 128 hidden, 10 latent, batch 128,
no validation, a 1-epoch warm-up call on 2,000 cells, then the timed call; it reports the engine's epoch
loop cells/s (``.uns["vae"]["metrics"]["train_cells_per_second"]``).

    git worktree add /tmp/before <commit>
    python benchmarks/vae_loop_ab.py /tmp/before/src ../src [--likelihood nb] [--epochs 3] [--repeats 3]
Prints one line per run and the median per version.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

_ONE = """
import json, sys
import scdgm as dgm
likelihood, epochs = sys.argv[1], int(sys.argv[2])
adata = dgm.datasets.simulate(20_000, 2_000, n_cell_types=8, n_programs=10, seed=0)
dgm.settings.progress_bar = False
kwargs = dict(n_hidden=128, n_latent=10, likelihood=likelihood, batch_size=128, validation_fraction=0.0,
              early_stopping=False, device="cpu", seed=0)
dgm.tl.vae(adata[:2000].copy(), max_epochs=1, **kwargs)  # imports and first-call costs
dgm.tl.vae(adata, max_epochs=epochs, **kwargs)
print(json.dumps({"scdgm": dgm.__file__, "loop_cells_per_second": adata.uns["vae"]["metrics"]["train_cells_per_second"]}))
"""


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("sources", nargs=2, help="two src folders to import scdgm from: before, after")
    parser.add_argument("--likelihood", default="nb")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    speeds: dict[str, list[float]] = {source: [] for source in args.sources}
    for _ in range(args.repeats):
        for source in args.sources:
            env = {**os.environ, "PYTHONPATH": os.path.abspath(source)}
            out = subprocess.run(
                [sys.executable, "-c", _ONE, args.likelihood, str(args.epochs)],
                env=env,
                capture_output=True,
                text=True,
                check=True,
            )
            row = json.loads(out.stdout.strip().splitlines()[-1])
            speeds[source].append(row["loop_cells_per_second"])
            print(source, f"{row['loop_cells_per_second']:,.0f} cells/s", flush=True)
    for source, values in speeds.items():
        print(f"{source}: median {statistics.median(values):,.0f} cells/s ({', '.join(f'{v:,.0f}' for v in values)})")


if __name__ == "__main__":
    main()
