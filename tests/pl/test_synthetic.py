"""pl.synthetic draws real against synthetic cells, and refuses what it cannot draw before drawing anything."""

import matplotlib.pyplot as plt
import numpy as np
import pytest

import scdgm as dgm


@pytest.fixture(scope="module")
def _cells():
    real = dgm.datasets.simulate(240, 40, n_cell_types=3, marker_fold_change=10.0, seed=1)
    dgm.tl.vae(real, n_latent=3, n_hidden=16, max_epochs=20, batch_size=64, seed=0)
    fake = dgm.tl.generate(real, n_cells=200, seed=0)
    return real, fake


@pytest.fixture
def cells(_cells):
    yield _cells[0].copy(), _cells[1].copy()
    plt.close("all")


def test_every_panel_is_drawn_in_order(cells):
    real, fake = cells
    axes = dgm.pl.synthetic(fake, reference=real, n_top_genes=10, show=False)
    titles = [ax.get_title() for ax in axes]
    assert len(axes) == 7
    assert titles[0].startswith("real: correlation of top 10") and titles[1].startswith("synthetic: correlation")
    assert titles[2].startswith("log1p mean per gene") and titles[3].startswith("log1p variance per gene")
    assert titles[4].startswith("zero fraction per gene")
    assert titles[5].startswith("PCA of real and synthetic") and titles[6].startswith("log odds ratio per gene pair")


def test_the_mean_panel_shows_the_gene_means(cells):
    real, fake = cells
    ax = dgm.pl.synthetic(fake, reference=real, kind="mean", show=False)
    points = ax.collections[0].get_offsets()
    expected_real = np.log1p(np.asarray(real.X.mean(0)).ravel())
    expected_fake = np.log1p(np.asarray(fake.X.mean(0)).ravel())
    np.testing.assert_allclose(points[:, 0], expected_real, rtol=1e-6)
    np.testing.assert_allclose(points[:, 1], expected_fake, rtol=1e-6)


def test_the_reference_is_matched_by_gene_name(cells):
    real, fake = cells
    shuffled = real[:, np.random.default_rng(0).permutation(real.n_vars)].copy()
    ax = dgm.pl.synthetic(fake, reference=shuffled, kind="mean", show=False)
    expected_real = np.log1p(np.asarray(real.X.mean(0)).ravel())
    np.testing.assert_allclose(ax.collections[0].get_offsets()[:, 0], expected_real, rtol=1e-6)


def test_embedding_colours_both_origins(cells):
    real, fake = cells
    ax = dgm.pl.synthetic(fake, reference=real, kind="embedding", max_cells=100, show=False)
    assert len(ax.collections[0].get_offsets()) == 200
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["real", "synthetic"]


def test_returns_the_figure_and_draws_into_a_given_ax(cells):
    real, fake = cells
    fig = dgm.pl.synthetic(fake, reference=real, kind=["mean", "log_odds"], return_fig=True)
    assert len([a for a in fig.axes if a.get_visible()]) == 2
    _, ax = plt.subplots()
    assert dgm.pl.synthetic(fake, reference=real, kind="variance", ax=ax, show=False) is ax


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"kind": "violin"}, ValueError, "kind='violin' is not supported"),
        ({"n_top_genes": 1}, ValueError, "n_top_genes must be an integer >= 2"),
        ({"kind": "correlation", "ax": "axes"}, ValueError, "takes no ax="),
        ({"kind": ["mean", "variance"], "ax": "axes"}, ValueError, "ax= takes one panel"),
        ({"reference_layer": "nope"}, KeyError, "reference_layer='nope' is not in reference.layers"),
    ],
)
def test_bad_input(cells, kwargs, error, match):
    real, fake = cells
    if kwargs.get("ax") == "axes":
        _, kwargs["ax"] = plt.subplots()
    with pytest.raises(error, match=match):
        dgm.pl.synthetic(fake, reference=real, show=False, **kwargs)


def test_a_reference_without_the_genes_is_refused(cells):
    real, fake = cells
    with pytest.raises(ValueError, match="reference lacks 5 of the 40 genes"):
        dgm.pl.synthetic(fake, reference=real[:, 5:].copy(), show=False)


def test_binary_against_counts_is_refused(cells):
    real, fake = cells
    dgm.pp.binarize(real)
    with pytest.raises(ValueError, match="holds counts values but reference.layers\\['binary'\\] holds binary"):
        dgm.pl.synthetic(fake, reference=real, reference_layer="binary", show=False)
