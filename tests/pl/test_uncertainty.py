"""``pl.uncertainty``: reliability diagram and the embedding coloured by epistemic uncertainty."""

import matplotlib.pyplot as plt
import numpy as np
import pytest

import scdgm as dgm


@pytest.fixture(scope="module")
def _classified():
    dgm.settings.progress_bar = False
    dgm.settings.verbosity = 1
    adata = dgm.datasets.simulate(150, 30, n_cell_types=3, marker_fold_change=10.0, seed=8)
    adata = adata[:, np.asarray(adata.X.sum(0)).ravel() > 0].copy()
    log = np.log1p(adata.X.toarray())
    centred = log - log.mean(0)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    adata.obsm["X_rep"] = (centred @ vt[:4].T).astype(np.float32)
    dgm.tl.bayes_classify(adata, "cell_type", use_rep="X_rep", max_epochs=15, batch_size=32, num_samples=20, seed=0)
    return adata


@pytest.fixture
def classified(_classified):
    return _classified.copy()


def test_both_panels(classified):
    axes = dgm.pl.uncertainty(classified, method="pca", show=False)
    assert isinstance(axes, list) and len(axes) == 2
    reliability, embedding = axes
    entry = classified.uns["bayes"]
    calibration = entry["calibration"]
    filled = calibration["count"] > 0
    bars = reliability.containers[0]
    np.testing.assert_allclose([b.get_height() for b in bars], calibration["accuracy"][filled])
    np.testing.assert_allclose([b.get_x() for b in bars], calibration["edges"][:-1][filled])
    assert reliability.get_title().startswith(f"ECE = {entry['metrics']['ece']:.3f}")
    diagonal = [line for line in reliability.get_lines() if line.get_label() == "perfect calibration"]
    np.testing.assert_array_equal(diagonal[0].get_xydata(), [[0, 0], [1, 1]])
    assert embedding.get_title() == "epistemic uncertainty (nats)"
    assert classified.obsm["X_rep_pca"].shape == (classified.n_obs, 2)  # laid out by pl.latent
    plt.close("all")


def test_one_panel_into_given_axes_and_basis(classified):
    fig, ax = plt.subplots()
    assert dgm.pl.uncertainty(classified, kind="reliability", ax=ax, show=False) is ax
    classified.obsm["X_umap"] = classified.obsm["X_rep"][:, :2]
    ax = dgm.pl.uncertainty(classified, kind=["embedding"], basis="X_umap", show=False)
    colours = ax.collections[0].get_array()
    assert len(colours) == classified.n_obs
    np.testing.assert_allclose(np.sort(colours), np.sort(classified.obs["bayes_epistemic"]), rtol=1e-6)
    fig = dgm.pl.uncertainty(classified, kind="reliability", return_fig=True)
    assert isinstance(fig, plt.Figure) and len(fig.axes) == 1
    plt.close("all")


def test_errors(classified):
    n_figures = len(plt.get_fignums())
    with pytest.raises(KeyError, match=r"Did not find a Bayesian classifier in .uns\['other'\].*bayes_classify"):
        dgm.pl.uncertainty(classified, key="other")
    with pytest.raises(ValueError, match="kind='violin' is not supported"):
        dgm.pl.uncertainty(classified, kind="violin")
    _, ax = plt.subplots()
    with pytest.raises(ValueError, match="ax= takes one panel"):
        dgm.pl.uncertainty(classified, ax=ax)
    plt.close(ax.figure)
    with pytest.raises(KeyError, match="basis='X_tsne' is not in adata.obsm"):
        dgm.pl.uncertainty(classified, kind="embedding", basis="X_tsne")
    classified.uns["bayes"]["params"]["use_rep"] = "rep"
    with pytest.raises(ValueError, match="pass basis="):
        dgm.pl.uncertainty(classified, kind="embedding")
    del classified.uns["bayes"]["calibration"]
    with pytest.raises(KeyError, match="holds no held-out calibration"):
        dgm.pl.uncertainty(classified, kind="reliability")
    del classified.obs["bayes_epistemic"]
    with pytest.raises(KeyError, match=r"Did not find .obs\['bayes_epistemic'\]"):
        dgm.pl.uncertainty(classified, kind="embedding", basis="X_rep")
    assert len(plt.get_fignums()) == n_figures  # failed calls leave no figure behind
