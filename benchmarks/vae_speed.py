"""Training speed and held-out ELBO of scdgm's VAE against scvi-tools' SCVI, matched architecture.

128 hidden units, 10 latent dimensions, one layer, batch 128, NB and ZINB, the same epochs and the same
held-out cells, on simulate(20_000, 2_000) and simulate(200_000, 2_000); each run in a fresh process.

    python benchmarks/vae_speed.py [--cells 20000 200000] [--epochs-20k 20] [--epochs-200k 3]
Writes benchmarks/results/vae_speed.json and prints a Markdown table.
"""

from __future__ import annotations

import argparse

from _common import run_isolated, save


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--cells", type=int, nargs="+", default=[20_000, 200_000])
    parser.add_argument("--likelihoods", nargs="+", default=["nb", "zinb"])
    parser.add_argument(
        "--epochs", type=int, nargs="+", default=None, help="epochs per cell count (default: 20, then 3)"
    )
    parser.add_argument("--tools", nargs="+", default=["scdgm", "scvi"])
    parser.add_argument("--repeats", type=int, default=1, help="runs of each configuration, tools interleaved")
    parser.add_argument("--name", default="vae_speed", help="results/<name>.json")
    args = parser.parse_args()
    epochs = args.epochs or [20 if n <= 50_000 else 3 for n in args.cells]
    rows = []
    for n_cells, n_epochs in zip(args.cells, epochs, strict=True):
        for likelihood in args.likelihoods:
            for repeat in range(args.repeats):
                for tool in args.tools:
                    row = run_isolated("vae_speed_one.py", tool, str(n_cells), likelihood, str(n_epochs))
                    row["repeat"] = repeat
                    rows.append(row)
                    print(row, flush=True)
    save(args.name, rows)
    print("\n| cells | likelihood | tool | epochs | train cells/s | held-out −ELBO/cell | peak RSS (GB) |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        print(
            f"| {r['n_cells']:,} | {r['likelihood']} | {r['tool']} | {r['epochs']} | {r['train_cells_per_second']:,.0f} "
            f"| {r['heldout_negative_elbo']:.2f} | {r['peak_rss_gb']:.2f} |"
        )
    if {"scdgm", "scvi"} <= set(args.tools):
        # the ratio of each interleaved pair: the machine's speed drifts between pairs more than within one
        print("\n| cells | likelihood | scdgm / scvi-tools, each repeat | median |")
        print("| --- | --- | --- | --- |")
        for n_cells in args.cells:
            for likelihood in args.likelihoods:
                by = {
                    (r["tool"], r["repeat"]): r["train_cells_per_second"]
                    for r in rows
                    if r["n_cells"] == n_cells and r["likelihood"] == likelihood
                }
                ratios = [by["scdgm", k] / by["scvi", k] for k in range(args.repeats)]
                shown = ", ".join(f"{x:.2f}" for x in ratios)
                print(f"| {n_cells:,} | {likelihood} | {shown} | {sorted(ratios)[len(ratios) // 2]:.2f} |")


if __name__ == "__main__":
    main()
