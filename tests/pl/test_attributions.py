"""``pl.attributions``: which genes are shown, in which order, with which values, and bad input."""

import anndata as ad
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest

import scdgm as dgm

TARGETS = ["t_a", "t_b", "t_c"]
GENES = [f"g{i}" for i in range(8)]
# genes x targets; g7 is a gene the model lacks (NaN), g5 cancels over cells for t_a (small mean, large |.|)
MEAN = np.array(
    [
        [0.9, 0.0, 0.1],
        [-1.0, 0.2, 0.0],
        [0.5, 0.8, -0.3],
        [0.0, -0.9, 0.7],
        [0.1, 0.1, -0.8],
        [-0.2, 0.5, 0.2],
        [0.3, -0.1, 0.05],
        [np.nan, np.nan, np.nan],
    ]
)
MEAN_ABS = np.array(
    [
        [1.0, 0.1, 0.2],
        [1.2, 0.3, 0.1],
        [0.6, 0.9, 0.4],
        [0.1, 1.0, 0.8],
        [0.2, 0.2, 0.9],
        [2.0, 0.6, 0.3],
        [0.4, 0.2, 0.1],
        [np.nan, np.nan, np.nan],
    ]
)
GROUP_A = np.zeros_like(MEAN)
GROUP_A[1] = [0.1, 0.0, 0.0]
GROUP_A[6] = [-2.0, 1.0, 0.5]
GROUP_A[7] = np.nan


@pytest.fixture
def result():
    """8 cells x 8 genes holding a hand-made ``tl.integrated_gradients`` result under the key "ig_vae"."""
    adata = ad.AnnData(
        np.zeros((8, len(GENES)), dtype=np.float32),
        obs=pd.DataFrame({"group": pd.Categorical(["A"] * 4 + ["B"] * 4)}, index=[f"c{i}" for i in range(8)]),
        var=pd.DataFrame(index=GENES),
    )
    adata.varm["ig_vae"] = MEAN.astype(np.float32)
    adata.varm["ig_vae_abs"] = MEAN_ABS.astype(np.float32)
    adata.uns["ig_vae"] = {
        "targets": np.asarray(TARGETS, dtype=object),
        "group_means": {
            "groups": np.asarray(["A", "B"], dtype=object),
            "sizes": np.asarray([4, 4]),
            "values": np.stack([GROUP_A, -MEAN]).astype(np.float32),
        },
        "groupby": "group",
    }
    yield adata
    plt.close("all")


def _xlabels(ax):
    return [t.get_text() for t in ax.get_xticklabels()]


def _ylabels(ax):
    return [t.get_text() for t in ax.get_yticklabels()]


def test_heatmap_shows_the_union_of_top_genes_in_order(result):
    ax = dgm.pl.attributions(result, n_top=2, show=False)
    # by mean |attribution|: t_a -> g5, g1; t_b -> g3, g2; t_c -> g4, g3 (already shown)
    assert _xlabels(ax) == ["g5", "g1", "g3", "g2", "g4"]
    assert _ylabels(ax) == TARGETS
    (image,) = ax.images
    shown = [GENES.index(g) for g in ["g5", "g1", "g3", "g2", "g4"]]
    np.testing.assert_allclose(image.get_array(), MEAN[shown].T, rtol=1e-6)  # colour: signed mean, targets x genes
    assert image.norm.vcenter == 0.0
    assert image.norm.vmin == pytest.approx(-1.0) and image.norm.vmax == pytest.approx(1.0)
    assert ax.get_title() == "integrated gradients (ig_vae)"
    fig = ax.figure
    assert len(fig.axes) == 2  # the heatmap and its colorbar
    assert fig.axes[1].get_ylabel() == "mean attribution"


@pytest.mark.parametrize(
    ("rank_by", "n_top", "expected"),
    [
        ("positive", 2, ["g0", "g2", "g5", "g3"]),
        ("negative", 1, ["g1", "g3", "g4"]),
        ("absolute", 1, ["g5", "g3", "g4"]),
        # more than there are genes: t_a lists them all, NaN (as zero) last
        ("absolute", 20, ["g5", "g1", "g0", "g2", "g6", "g4", "g3", "g7"]),
    ],
)
def test_rank_by(result, rank_by, n_top, expected):
    ax = dgm.pl.attributions(result, n_top=n_top, rank_by=rank_by, show=False)
    labels = _xlabels(ax)
    assert labels == expected
    assert len(set(labels)) == len(labels)  # each gene once


def test_missing_genes_are_shown_as_zero(result):
    ax = dgm.pl.attributions(result, n_top=20, targets=["t_a"], show=False)
    labels = _xlabels(ax)
    assert labels[-1] == "g7" and sorted(labels) == GENES
    values = ax.images[0].get_array()
    assert np.all(np.isfinite(values)) and values[0, -1] == 0.0


def test_targets_by_name_and_index_keep_the_given_order(result):
    ax = dgm.pl.attributions(result, targets=["t_c", "t_a"], n_top=1, show=False)
    assert _ylabels(ax) == ["t_c", "t_a"]
    assert _xlabels(ax) == ["g4", "g5"]
    np.testing.assert_allclose(ax.images[0].get_array(), [[-0.8, 0.2], [0.1, -0.2]], rtol=1e-6)
    ax = dgm.pl.attributions(result, targets=1, n_top=2, show=False)
    assert _ylabels(ax) == ["t_b"] and _xlabels(ax) == ["g3", "g2"]
    ax = dgm.pl.attributions(result, targets="t_b", n_top=2, show=False)
    assert _ylabels(ax) == ["t_b"] and _xlabels(ax) == ["g3", "g2"]
    ax = dgm.pl.attributions(result, targets=np.int64(2), n_top=1, show=False)
    assert _ylabels(ax) == ["t_c"] and _xlabels(ax) == ["g4"]


def test_dotplot_colour_is_the_mean_and_area_the_mean_absolute(result):
    ax = dgm.pl.attributions(result, kind="dotplot", n_top=1, show=False)
    genes = ["g5", "g3", "g4"]
    assert _xlabels(ax) == genes and _ylabels(ax) == TARGETS
    assert not ax.images
    (dots,) = ax.collections
    rows = [GENES.index(g) for g in genes]
    n = len(TARGETS) * len(genes)
    offsets = np.asarray(dots.get_offsets())
    assert offsets.shape == (n, 2)
    # row-major over targets (y) x genes (x)
    np.testing.assert_array_equal(offsets[:, 0], np.tile(np.arange(3), 3))
    np.testing.assert_array_equal(offsets[:, 1], np.repeat(np.arange(3), 3))
    np.testing.assert_allclose(dots.get_array(), MEAN[rows].T.ravel(), rtol=1e-6)
    magnitude = MEAN_ABS[rows].T.ravel()
    np.testing.assert_allclose(dots.get_sizes(), 300 * magnitude / magnitude.max(), rtol=1e-5)
    assert ax.get_xlim() == (-0.5, 2.5) and ax.get_ylim() == (2.5, -0.5)  # first target on top


def test_group_means(result):
    ax = dgm.pl.attributions(result, group="A", n_top=1, show=False)
    # genes are picked by the group's own |mean|: g6 leads every target
    assert _xlabels(ax) == ["g6"]
    np.testing.assert_allclose(ax.images[0].get_array(), [[-2.0], [1.0], [0.5]], rtol=1e-6)
    assert ax.images[0].norm.vmax == pytest.approx(2.0)
    assert ax.get_title() == "integrated gradients (ig_vae), A"
    ax = dgm.pl.attributions(result, group="B", n_top=1, rank_by="positive", show=False)
    assert _xlabels(ax) == ["g1", "g3", "g4"]  # the most negative genes of all cells
    # dot sizes stay those of all cells
    ax = dgm.pl.attributions(result, group="A", n_top=1, kind="dotplot", show=False)
    (dots,) = ax.collections
    np.testing.assert_allclose(dots.get_array(), [-2.0, 1.0, 0.5], rtol=1e-6)
    np.testing.assert_allclose(dots.get_sizes(), 300 * MEAN_ABS[6] / MEAN_ABS[6].max(), rtol=1e-5)


@pytest.fixture
def classes(result):
    """``result`` as a classifier's: group means over groups named like two of the three classes."""
    own = np.zeros((2, len(GENES), len(TARGETS)))
    own[0, :, 0] = [0.1, 0.9, -0.4, 0.0, 0.3, 0.2, -1.0, np.nan]  # t_a in its own cells
    own[1, :, 2] = [0.0, 0.2, 0.6, -0.7, 0.1, 0.5, 0.3, np.nan]  # t_c in its own cells
    own[0, :, 2] = own[1, :, 0] = 5.0  # a class in the other group's cells: never shown
    result.uns["ig_vae"]["group_means"] = {
        "groups": np.asarray(["t_c", "t_a"], dtype=object),
        "sizes": np.asarray([4, 4]),
        "values": own[::-1].astype(np.float32),
    }
    return result


def test_groupby_shows_each_class_in_its_own_cells(classes):
    ax = dgm.pl.attributions(classes, groupby="group", n_top=2, show=False)
    # one row per class with a group of its name (t_b has none); genes by each row's |mean|
    assert _ylabels(ax) == ["t_a", "t_c"]
    assert _xlabels(ax) == ["g6", "g1", "g3", "g2"]
    np.testing.assert_allclose(ax.images[0].get_array(), [[-1.0, 0.9, 0.0, -0.4], [0.3, 0.2, -0.7, 0.6]], rtol=1e-6)
    assert ax.get_title() == "integrated gradients (ig_vae), each class in its own cells (group)"
    ax = dgm.pl.attributions(classes, groupby="group", targets=["t_c"], n_top=2, rank_by="positive", show=False)
    assert _ylabels(ax) == ["t_c"] and _xlabels(ax) == ["g2", "g5"]
    ax = dgm.pl.attributions(classes, groupby="group", n_top=1, kind="dotplot", show=False)
    (dots,) = ax.collections
    np.testing.assert_allclose(dots.get_array(), [-1.0, 0.0, 0.3, -0.7], rtol=1e-6)  # rows t_a, t_c x genes g6, g3
    np.testing.assert_allclose(dots.get_sizes(), 300 * np.array([1.0, 0.0, 0.3, 0.7]), rtol=1e-5)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"groupby": "cell_type"}, ValueError, "are over 'group', not groupby='cell_type'"),
        ({"groupby": "group", "targets": ["t_b"]}, KeyError, "target 't_b' names no group of 'group'"),
        ({"groupby": "group", "group": "t_a"}, ValueError, "not both"),
    ],
)
def test_groupby_bad_input(classes, kwargs, error, match):
    before = plt.get_fignums()
    with pytest.raises(error, match=match):
        dgm.pl.attributions(classes, show=False, **kwargs)
    assert plt.get_fignums() == before


def test_groupby_needs_classes_named_like_groups(result):
    with pytest.raises(ValueError, match="no target of .uns\\['ig_vae'\\] .* names a group"):
        dgm.pl.attributions(result, groupby="group", show=False)


def test_returns_axes_figure_or_none(result):
    fig = dgm.pl.attributions(result, n_top=1, return_fig=True)
    assert isinstance(fig, plt.Figure) and len(fig.axes) == 2
    width, height = fig.get_size_inches()
    assert width >= 4.0 and height >= 2.0
    wide = dgm.pl.attributions(result, n_top=20, return_fig=True)
    assert wide.get_size_inches()[0] > width  # grows with the genes shown
    _, given = plt.subplots()
    assert dgm.pl.attributions(result, n_top=1, ax=given, show=False) is given
    assert len(given.figure.axes) == 2  # the colorbar went into the given figure
    assert dgm.pl.attributions(result, n_top=1, show=True) is None


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"key": "ig_bayes"}, KeyError, r"Did not find .varm\['ig_bayes'\]. Run `dgm.tl.integrated_gradients"),
        ({"kind": "violin"}, ValueError, "kind='violin' is not supported"),
        ({"rank_by": "signed"}, ValueError, "rank_by='signed' is not supported"),
        ({"n_top": 0}, ValueError, "n_top must be an integer >= 1"),
        ({"n_top": 2.5}, ValueError, "n_top must be an integer >= 1"),
        ({"n_top": True}, ValueError, "n_top must be an integer >= 1"),
        ({"targets": ["t_z"]}, KeyError, "target 't_z' is not one of"),
        ({"targets": [3]}, IndexError, "target index 3 is out of range: there are 3 targets"),
        ({"targets": [-1]}, IndexError, "target index -1 is out of range"),
        ({"group": "C"}, KeyError, "group 'C' is not one of \\['A', 'B'\\]"),
    ],
)
def test_bad_input(result, kwargs, error, match):
    before = plt.get_fignums()
    with pytest.raises(error, match=match):
        dgm.pl.attributions(result, show=False, **kwargs)
    assert plt.get_fignums() == before  # failed before drawing


def test_group_needs_groupby(result):
    del result.uns["ig_vae"]["group_means"]
    with pytest.raises(KeyError, match="has no group means; run `dgm.tl.integrated_gradients\\(adata, groupby="):
        dgm.pl.attributions(result, group="A", show=False)


def test_key_needs_the_uns_entry_too(result):
    del result.uns["ig_vae"]
    with pytest.raises(KeyError, match="Run `dgm.tl.integrated_gradients"):
        dgm.pl.attributions(result, show=False)


@pytest.fixture(scope="module")
def _attributed():
    dgm.settings.progress_bar = False
    dgm.settings.verbosity = 1
    adata = dgm.datasets.simulate(200, 40, n_cell_types=3, n_programs=4, seed=0)
    adata = adata[:, np.asarray(adata.X.sum(0)).ravel() > 0].copy()  # no all-zero genes
    dgm.tl.vae(adata, n_latent=3, n_hidden=32, max_epochs=10, batch_size=64, seed=0)
    dgm.tl.integrated_gradients(adata, groupby="cell_type", n_top=5, n_steps=200, key_added="ig")
    return adata


def test_on_a_real_result(_attributed):
    adata = _attributed
    entry = adata.uns["ig"]
    ax = dgm.pl.attributions(adata, key="ig", targets=["latent_1"], rank_by="positive", n_top=5, show=False)
    assert _xlabels(ax) == list(entry["top_genes"]["positive"][1])
    ax = dgm.pl.attributions(adata, key="ig", targets=["latent_1"], rank_by="negative", n_top=5, show=False)
    assert _xlabels(ax) == list(entry["top_genes"]["negative"][1])
    ax = dgm.pl.attributions(adata, key="ig", n_top=3, kind="dotplot", show=False)
    assert _ylabels(ax) == ["latent_0", "latent_1", "latent_2"]
    assert 3 <= len(_xlabels(ax)) <= 9
    group = adata.obs["cell_type"].cat.categories[0]
    ax = dgm.pl.attributions(adata, key="ig", group=group, targets=[0], n_top=1, show=False)
    groups = list(entry["group_means"]["groups"])
    best = np.argmax(np.abs(entry["group_means"]["values"][groups.index(group)][:, 0]))
    assert _xlabels(ax) == [adata.var_names[best]]
    plt.close("all")
