import matplotlib.pyplot as plt
import numpy as np
import pytest

import scdgm as dgm


def test_latent_umap_is_cached_until_the_latent_changes(trained, monkeypatch):
    import scdgm.pl._latent as latent_module

    calls = []
    original = latent_module._project

    def counting(*args, **kwargs):
        calls.append(kwargs)
        return original(*args, **kwargs)

    monkeypatch.setattr(latent_module, "_project", counting)
    ax = dgm.pl.latent(trained, color="cell_type", show=False)
    assert ax.get_xlabel() or ax.collections  # something was drawn
    assert trained.obsm["X_vae_umap"].shape == (300, 2)
    dgm.pl.latent(trained, color="batch", show=False)
    assert len(calls) == 1  # cached
    trained.obsm["X_vae"] = trained.obsm["X_vae"] + 1.0
    dgm.pl.latent(trained, color="batch", show=False)
    assert len(calls) == 2  # recomputed after the latent changed
    plt.close("all")


@pytest.mark.parametrize("method", ["pca", "none"])
def test_latent_other_methods(trained, method):
    fig = dgm.pl.latent(trained, color="cell_type", method=method, return_fig=True)
    assert isinstance(fig, plt.Figure)
    if method == "pca":
        emb = trained.obsm["X_vae_pca"]
        assert emb.shape == (300, 2)
        assert np.var(emb[:, 0]) >= np.var(emb[:, 1])
    plt.close("all")


def test_latent_into_given_axes(trained):
    fig, ax = plt.subplots()
    out = dgm.pl.latent(trained, color="cell_type", method="pca", ax=ax, show=False)
    assert out is ax
    plt.close("all")


def test_latent_errors(simulated, trained):
    with pytest.raises(KeyError, match="Run `dgm.tl.vae"):
        dgm.pl.latent(simulated)
    with pytest.raises(ValueError, match="method='mds'"):
        dgm.pl.latent(trained, method="mds")


def test_history_one_panel_per_term(trained):
    axes = dgm.pl.history(trained, show=False)
    assert [a.get_title() for a in axes] == ["elbo", "kl", "loss", "reconstruction"]
    labels = [line.get_label() for line in axes[0].get_lines()]
    assert "train" in labels and "validation" in labels
    n_epochs = trained.uns["vae"]["metrics"]["n_epochs"]
    assert len(axes[0].get_lines()[0].get_xdata()) == n_epochs
    plt.close("all")


def test_history_of_a_bayesian_classifier(trained):
    dgm.tl.bayes_classify(trained, "cell_type", use_rep="X_vae", max_epochs=8, batch_size=64, num_samples=10, seed=0)
    axes = dgm.pl.history(trained, key="bayes", show=False)
    ylabels = {a.get_title(): a.get_ylabel() for a in axes}
    assert ylabels == {
        "kl": "KL(q(w) ‖ p(w)) / n_train",
        "loss": "training objective per cell",
        "nll": "label NLL per cell",
    }
    # the VAE keeps the latent KL label
    vae_axes = dgm.pl.history(trained, key="vae", terms=["kl"], show=False)
    assert vae_axes[0].get_ylabel() == "KL(q(z|x) ‖ p(z)) per cell"
    plt.close("all")


def test_history_errors(simulated, trained):
    with pytest.raises(KeyError, match="Train a model first"):
        dgm.pl.history(simulated)
    with pytest.raises(ValueError, match="recorded terms"):
        dgm.pl.history(trained, terms=["accuracy"])
    _, ax = plt.subplots()
    with pytest.raises(ValueError, match="one panel"):
        dgm.pl.history(trained, ax=ax)
    plt.close("all")


def test_loadings_plot(trained):
    rng = np.random.default_rng(0)
    trained.varm["ldvae_loadings"] = rng.normal(size=(trained.n_vars, 3))
    axes = dgm.pl.loadings(trained, n_top=4, show=False)
    assert len(axes) == 3
    labels = [t.get_text() for t in axes[1].get_yticklabels()]
    top = trained.var_names[np.argmax(trained.varm["ldvae_loadings"][:, 1])]
    assert labels[-1] == top and len(labels) == 8
    with pytest.raises(ValueError, match="out of range"):
        dgm.pl.loadings(trained, factors=[5])
    with pytest.raises(KeyError, match="ldvae_loadings"):
        dgm.pl.loadings(trained, key="other")
    plt.close("all")
