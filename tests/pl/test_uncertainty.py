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
    # every filled bin says how many held-out cells it holds, above its bar
    assert [t.get_text() for t in reliability.texts] == [f"n={n}" for n in calibration["count"][filled]]
    tops = np.maximum(calibration["accuracy"], calibration["confidence"])[filled]
    np.testing.assert_allclose([t.get_position()[1] for t in reliability.texts], tops + 0.01)
    flagged = int(classified.obs["bayes_unknown"].sum())
    assert embedding.get_title() == f"epistemic uncertainty (nats) ({flagged} of 150 flagged unknown)"
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
    with pytest.raises(ValueError, match=r"value='confidence' is not supported"):
        dgm.pl.uncertainty(classified, value="confidence")
    classified.obs = classified.obs.drop(columns=["bayes_unknown_score"], errors="ignore")
    with pytest.raises(KeyError, match=r"Did not find .obs\['bayes_unknown_score'\].*dgm.tl.bayes_classify"):
        dgm.pl.uncertainty(classified, kind="embedding", value="unknown_score", basis="X_rep")
    classified.uns["bayes"]["model"]["input"]["use_rep"] = "rep"
    with pytest.raises(ValueError, match=r"trained on .obsm\['rep'\].*pass basis="):
        dgm.pl.uncertainty(classified, kind="embedding")
    del classified.uns["bayes"]["model"]["input"]["use_rep"]
    with pytest.raises(ValueError, match="trained on genes.*pass basis="):
        dgm.pl.uncertainty(classified, kind="embedding")
    del classified.uns["bayes"]["calibration"]
    with pytest.raises(KeyError, match="holds no held-out calibration"):
        dgm.pl.uncertainty(classified, kind="reliability")
    del classified.obs["bayes_epistemic"]
    with pytest.raises(KeyError, match=r"Did not find .obs\['bayes_epistemic'\]"):
        dgm.pl.uncertainty(classified, kind="embedding", basis="X_rep")
    assert len(plt.get_fignums()) == n_figures  # failed calls leave no figure behind


def test_value_and_colour_scale(classified):
    values = classified.obs["bayes_epistemic"].to_numpy()
    ax = dgm.pl.uncertainty(classified, kind="embedding", method="pca", show=False)
    norm = ax.collections[0].norm
    assert norm.vmax == pytest.approx(np.percentile(values, 99))  # one outlier does not set the scale
    assert norm.vmax < values.max()
    ax = dgm.pl.uncertainty(classified, kind="embedding", method="pca", vmax=0.123, show=False)
    assert ax.collections[0].norm.vmax == pytest.approx(0.123)
    ax = dgm.pl.uncertainty(classified, kind="embedding", method="pca", value="entropy", show=False)
    colours = ax.collections[0].get_array()
    np.testing.assert_allclose(np.sort(colours), np.sort(classified.obs["bayes_entropy"]), rtol=1e-6)
    assert ax.get_title().startswith("predictive entropy (nats) (")
    classified.obs["bayes_unknown_score"] = np.linspace(-1.0, 2.0, classified.n_obs)
    ax = dgm.pl.uncertainty(classified, kind="embedding", method="pca", value="unknown_score", show=False)
    np.testing.assert_allclose(np.sort(ax.collections[0].get_array()), classified.obs["bayes_unknown_score"], rtol=1e-6)
    assert ax.get_title().startswith("unknown score (")
    plt.close("all")


@pytest.fixture(scope="module")
def _predicted(_trained):
    reference = _trained.copy()
    dgm.tl.bayes_classify(reference, "cell_type", use_rep="X_vae", max_epochs=15, batch_size=64, num_samples=20, seed=0)
    query = _trained[:120].copy()
    query.obsm.clear()
    query.uns.clear()
    dgm.tl.embed(query, reference=reference)
    dgm.tl.bayes_predict(query, reference, key_added="pred", seed=0)
    return query, reference


def test_after_bayes_predict(_predicted):
    query = _predicted[0].copy()
    assert "use_rep" not in query.uns["pred"]["params"]  # only the stored model record knows the input
    reliability, embedding = dgm.pl.uncertainty(query, key="pred", method="pca", show=False)
    np.testing.assert_allclose(
        np.sort(embedding.collections[0].get_array()), np.sort(query.obs["pred_epistemic"]), rtol=1e-6
    )
    flagged = int(query.obs["pred_unknown"].sum())
    assert embedding.get_title() == f"epistemic uncertainty (nats) ({flagged} of 120 flagged unknown)"
    assert query.obsm["X_vae_pca"].shape == (120, 2)
    # the reference's held-out calibration, copied by bayes_predict
    calibration = _predicted[1].uns["bayes"]["calibration"]
    assert [t.get_text() for t in reliability.texts] == [f"n={n}" for n in calibration["count"] if n > 0]
    # an older record kept the input under "data" (schema version 0)
    model = query.uns["pred"]["model"]
    model["data"] = model.pop("input")
    model["schema_version"] = 0
    ax = dgm.pl.uncertainty(query, key="pred", kind="embedding", method="pca", show=False)
    assert len(ax.collections[0].get_array()) == 120
    query.obs = query.obs.drop(columns=["pred_unknown_score"], errors="ignore")
    with pytest.raises(KeyError, match=r"Did not find .obs\['pred_unknown_score'\].*dgm.tl.bayes_predict\("):
        dgm.pl.uncertainty(query, key="pred", kind="embedding", value="unknown_score")
    plt.close("all")
