"""Trained models and results survive ``write_h5ad`` and ``write_zarr``, whatever names users chose."""

import warnings

import anndata as ad
import matplotlib.pyplot as plt
import numpy as np
import pytest

import scdgm as dgm

SLASHED = {"type_0": "CD4+/CD25 T Reg", "type_1": "T/NK", "type_2": "B"}


@pytest.fixture(scope="module")
def _fitted():
    adata = dgm.datasets.simulate(150, 30, n_cell_types=3, seed=3)
    dgm.tl.vae(adata, n_latent=2, n_hidden=8, max_epochs=3, batch_size=32, seed=0)
    # pbmc68k's own "CD4+/CD25 T Reg": a "/" that h5ad would read as nesting were it a key
    adata.obs["label"] = adata.obs["cell_type"].astype(str).map(SLASHED).astype("category")
    dgm.tl.bayes_classify(adata, "label", max_epochs=5, num_samples=10, batch_size=32, seed=0)
    dgm.tl.integrated_gradients(adata, model_key="bayes", n_steps=64, n_samples=10, groupby="label", n_top=3)
    return adata


def _write_read(adata, path):
    if path.suffix == ".zarr":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # anndata's notice about the zarr format version
            adata.write_zarr(path)
        return ad.read_zarr(path)
    adata.write_h5ad(path)
    return ad.read_h5ad(path)


@pytest.mark.parametrize("suffix", [".h5ad", ".zarr"])
def test_names_with_slashes_survive(_fitted, tmp_path, suffix):
    back = _write_read(_fitted.copy(), tmp_path / f"fitted{suffix}")
    assert sorted(back.uns["bayes"]["classes"]) == sorted(SLASHED.values())
    assert list(back.uns["bayes"]["model"]["classes"]) == list(_fitted.uns["bayes"]["classes"])
    assert sorted(back.uns["ig_bayes"]["group_means"]["groups"]) == sorted(SLASHED.values())
    assert list(back.uns["ig_bayes"]["top_genes"]["targets"]) == list(_fitted.uns["ig_bayes"]["targets"])
    top = dgm.get.top_genes(back, "ig_bayes", target="CD4+/CD25 T Reg", direction="positive")
    assert len(top) == 3
    ax = dgm.pl.attributions(back, key="ig_bayes", group="T/NK", targets=[0], n_top=2, show=False)
    assert len(ax.get_xticklabels()) == 2
    plt.close("all")


@pytest.mark.parametrize("suffix", [".h5ad", ".zarr"])
def test_stored_models_apply_after_reading(_fitted, tmp_path, suffix):
    original = _fitted.copy()
    dgm.tl.denoise(original, seed=0)
    back = _write_read(_fitted.copy(), tmp_path / f"fitted{suffix}")
    dgm.tl.denoise(back, seed=0)
    np.testing.assert_allclose(back.layers["vae_denoised"], original.layers["vae_denoised"], rtol=1e-5)
    query = back.copy()
    dgm.tl.embed(query, reference=back, key_added="query")
    np.testing.assert_allclose(query.obsm["X_query"], _fitted.obsm["X_vae"], atol=1e-5)
    dgm.tl.bayes_predict(back, back, key_added="again", seed=0)
    np.testing.assert_allclose(back.obsm["again_proba"], _fitted.obsm["bayes_proba"], atol=1e-5)
    dgm.tl.integrated_gradients(back, model_key="bayes", n_steps=64, n_samples=10, key_added="ig_again")
    np.testing.assert_allclose(back.varm["ig_again"], _fitted.varm["ig_bayes"], rtol=1e-4, atol=1e-7)
