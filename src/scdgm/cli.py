"""``scdgm``: the command line, for pipelines (``scdgm vae in.h5ad out.h5ad``) and the README's demo."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def _demo(args: argparse.Namespace) -> int:
    import anndata as ad
    import matplotlib

    matplotlib.use("agg")
    import matplotlib.pyplot as plt

    import scdgm as dgm
    from scdgm._metrics import knn_label_accuracy

    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    adata = dgm.datasets.pbmc68k()
    print(f"pbmc68k: {adata.n_obs} cells x {adata.n_vars} genes, integer counts in .X and .layers['counts']")
    print(adata.obs["cell_type"].value_counts().to_string())

    dgm.tl.vae(adata, likelihood=args.likelihood, max_epochs=args.max_epochs, seed=args.seed)
    metrics = adata.uns["vae"]["metrics"]
    accuracy = knn_label_accuracy(adata.obsm["X_vae"], adata.obs["cell_type"].to_numpy(), seed=args.seed)
    print(
        f"\nVAE ({args.likelihood}): {metrics['n_epochs']} epochs in {metrics['seconds']:.1f} s "
        f"({metrics['train_cells_per_second']:.0f} training cells/s)"
    )
    print(f"held-out negative ELBO per cell: {metrics['validation_elbo']:.2f}")
    print(f"5-fold kNN (k=15) cell-type accuracy on X_vae: {accuracy:.3f}")

    dgm.pl.latent(adata, color="cell_type", show=False)
    plt.savefig(out / "latent_umap.png", dpi=120, bbox_inches="tight")
    plt.close("all")
    dgm.pl.history(adata, show=False)
    plt.savefig(out / "history.png", dpi=120, bbox_inches="tight")
    plt.close("all")
    adata.write_h5ad(out / "pbmc68k_vae.h5ad")
    reread = ad.read_h5ad(out / "pbmc68k_vae.h5ad")
    print(
        f"\nwrote {out}/latent_umap.png, {out}/history.png, {out}/pbmc68k_vae.h5ad (model inside: {'model' in reread.uns['vae']})"
    )
    return 0


def _vae(args: argparse.Namespace) -> int:
    import anndata as ad

    import scdgm as dgm

    adata = ad.read_h5ad(args.input)
    dgm.tl.vae(
        adata,
        layer=args.layer,
        batch_key=args.batch_key,
        n_latent=args.n_latent,
        kind=args.kind,
        likelihood=args.likelihood,
        max_epochs=args.max_epochs,
        device=args.device,
        seed=args.seed,
        key_added=args.key_added,
    )
    adata.write_h5ad(args.output)
    return 0


def _denoise(args: argparse.Namespace) -> int:
    import anndata as ad

    import scdgm as dgm

    adata = ad.read_h5ad(args.input)
    dgm.tl.denoise(adata, vae_key=args.vae_key, library_size=args.library_size, device=args.device, seed=args.seed)
    adata.write_h5ad(args.output)
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``scdgm`` command."""
    parser = argparse.ArgumentParser(prog="scdgm", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    demo = commands.add_parser("demo", help="train a VAE on the bundled PBMC data and save plots")
    demo.add_argument("--output", default="demo_output")
    demo.add_argument("--likelihood", default="nb")
    demo.add_argument("--max-epochs", type=int, default=None)
    demo.add_argument("--seed", type=int, default=0)
    demo.set_defaults(run=_demo)

    vae = commands.add_parser("vae", help="train dgm.tl.vae on an h5ad file")
    vae.add_argument("input")
    vae.add_argument("output")
    vae.add_argument("--layer", default=None)
    vae.add_argument("--batch-key", default=None)
    vae.add_argument("--n-latent", type=int, default=10)
    vae.add_argument("--kind", default="vae")
    vae.add_argument("--likelihood", default="nb")
    vae.add_argument("--max-epochs", type=int, default=None)
    vae.add_argument("--device", default="auto")
    vae.add_argument("--seed", type=int, default=0)
    vae.add_argument("--key-added", default="vae")
    vae.set_defaults(run=_vae)

    denoise = commands.add_parser("denoise", help="write denoised expression of a trained model")
    denoise.add_argument("input")
    denoise.add_argument("output")
    denoise.add_argument("--vae-key", default="vae")
    denoise.add_argument("--library-size", type=float, default=1e4)
    denoise.add_argument("--device", default="auto")
    denoise.add_argument("--seed", type=int, default=0)
    denoise.set_defaults(run=_denoise)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the ``scdgm`` command line."""
    args = build_parser().parse_args(argv)
    return int(args.run(args))


if __name__ == "__main__":
    sys.exit(main())
