"""pl.patterns: draws the stored patterns, scanpy-style returns, bad choices refused."""

import matplotlib.pyplot as plt
import numpy as np
import pytest
from anndata import AnnData

import scdgm as dgm


@pytest.fixture
def adata():
    adata = AnnData(np.zeros((3, 4), dtype=np.float32))
    adata.uns["patterns"] = {
        "genes": np.array(["A", "B"], dtype=object),
        "deviance": np.array([10.0, 5.0]),
        "hidden_units": np.array([0, 1]),
        "patterns": np.array([[0, 0], [1, 1], [1, 0]], dtype=np.int8),
        "labels": np.array(["00", "11", "10"], dtype=object),
        "frequency": np.array([0.5, 0.3, 0.1]),
        "frequency_observed": np.array([0.4, 0.4, 0.05]),
        "coordinates": np.array([[0.1, 0.0], [-0.2, 0.1], [0.05, -0.1]]),
    }
    return adata


def test_draws_points_sized_by_frequency(adata):
    ax = dgm.pl.patterns(adata, show=False)
    points = ax.collections[0]
    np.testing.assert_allclose(points.get_offsets(), adata.uns["patterns"]["coordinates"])
    sizes = points.get_sizes()
    assert sizes[0] > sizes[1] > sizes[2]
    assert [t.get_text() for t in ax.texts] == ["00", "11", "10"]
    assert "A, B" in ax.get_title()
    plt.close("all")


def test_returns_figure_and_uses_given_axes(adata):
    fig = dgm.pl.patterns(adata, color="frequency_observed", annotate=False, return_fig=True)
    assert isinstance(fig, plt.Figure)
    _, ax = plt.subplots()
    assert dgm.pl.patterns(adata, ax=ax, show=False) is ax
    plt.close("all")


def test_bad_input(adata):
    with pytest.raises(ValueError, match="color='size' is not supported"):
        dgm.pl.patterns(adata, color="size", show=False)
    with pytest.raises(KeyError, match=r"Run `dgm.tl.pattern_extractor\(adata, key_added='other'\)` first"):
        dgm.pl.patterns(adata, key="other", show=False)
