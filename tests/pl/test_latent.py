"""pl.latent refuses what it would otherwise overwrite or pass on twice."""

import matplotlib.pyplot as plt
import numpy as np
import pytest

import scdgm as dgm


def test_latent_keeps_an_embedding_it_did_not_compute(trained, monkeypatch):
    import scdgm.pl._latent as latent_module

    def no_projection(*args, **kwargs):
        raise AssertionError("pl.latent computed a view before refusing")

    monkeypatch.setattr(latent_module, "_project", no_projection)
    users = np.arange(600, dtype=np.float32).reshape(300, 2)
    trained.obsm["X_vae_pca"] = users.copy()
    uns_before = dict(trained.uns["vae"])
    with pytest.raises(ValueError, match=r"\.obsm\['X_vae_pca'\] already exists but was not computed by dgm\.pl"):
        dgm.pl.latent(trained, method="pca", show=False)
    with pytest.raises(ValueError, match=r"del adata\.obsm\['X_vae_pca'\]"):
        dgm.pl.latent(trained, method="pca", show=False)
    np.testing.assert_array_equal(trained.obsm["X_vae_pca"], users)
    assert dict(trained.uns["vae"]).keys() == uns_before.keys()
    plt.close("all")


def test_latent_recomputes_its_own_embedding(trained):
    dgm.pl.latent(trained, method="pca", show=False)
    first = trained.obsm["X_vae_pca"].copy()
    trained.obsm["X_vae"] = trained.obsm["X_vae"] * np.array([1.0, 4.0, 1.0, 1.0], dtype=np.float32)
    dgm.pl.latent(trained, method="pca", show=False)  # recorded by pl.latent: recomputed, no error
    assert not np.allclose(np.abs(trained.obsm["X_vae_pca"]), np.abs(first))
    plt.close("all")


def test_latent_refuses_basis(trained):
    with pytest.raises(TypeError, match=r"takes no basis=.*chosen by key= and method=.*sc\.pl\.embedding"):
        dgm.pl.latent(trained, basis="X_umap", method="pca", show=False)
    assert "X_vae_pca" not in trained.obsm
    plt.close("all")


def test_latent_after_retraining_under_the_same_key(simulated):
    dgm.tl.vae(simulated, n_latent=2, n_hidden=8, max_epochs=2, batch_size=32, seed=0)
    dgm.pl.latent(simulated, method="pca", show=False)
    first = simulated.obsm["X_vae_pca"].copy()
    dgm.tl.vae(simulated, n_latent=2, n_hidden=8, max_epochs=2, batch_size=32, seed=1)
    # the view pl.latent cached is its own: it is recomputed for the new latent space, not refused
    dgm.pl.latent(simulated, method="pca", show=False)
    assert not np.allclose(simulated.obsm["X_vae_pca"], first)
    plt.close("all")
