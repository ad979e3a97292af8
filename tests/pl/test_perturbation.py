"""pl.perturbation: predicted against real per-gene means and changes, with R² on all and on the top genes."""

import anndata as ad
import matplotlib.pyplot as plt
import numpy as np
import pytest
import scipy.sparse as sp

import scdgm as dgm
from scdgm._perturbation_metrics import mean_log_expression, perturbation_scores

GENES = [f"g{i}" for i in range(30)]


@pytest.fixture
def cells():
    """Hand-made predicted cells (with the provenance the plot reads), real perturbed cells and their control."""
    rng = np.random.default_rng(0)
    rate = rng.gamma(2.0, 3.0, size=len(GENES))
    change = np.where(np.arange(len(GENES)) < 5, 4.0, 1.0)
    control = rng.poisson(rate, size=(60, len(GENES))).astype(np.float32)
    real = rng.poisson(rate * change, size=(50, len(GENES))).astype(np.float32)
    predicted = rng.poisson(rate * np.sqrt(change), size=(70, len(GENES))).astype(np.float32)
    adata = ad.AnnData(sp.csr_matrix(predicted))
    adata.var_names = GENES
    adata.uns["perturbation"] = {"control_mean": mean_log_expression(control), "counts": True}
    reference = ad.AnnData(real[:, ::-1].copy())  # genes in another order
    reference.var_names = GENES[::-1]
    yield adata, reference, control
    plt.close("all")


def test_mean_and_change_panels_with_their_r2(cells):
    adata, reference, control = cells
    axes = dgm.pl.perturbation(adata, reference, n_top_genes=5, show=False)
    assert len(axes) == 2
    scores = perturbation_scores(
        mean_log_expression(adata.X), mean_log_expression(reference[:, GENES].X), mean_log_expression(control), 5
    )
    mean_title, change_title = axes[0].get_title(), axes[1].get_title()
    assert mean_title == f"mean: R² = {scores['r2_mean']:.2f} (all), {scores['r2_mean_top']:.2f} (top 5)"
    assert change_title == f"change: R² = {scores['r2_change']:.2f} (all), {scores['r2_change_top']:.2f} (top 5)"
    # the orange points are the 5 genes of largest real change: the first five
    top_points = axes[0].collections[1].get_offsets()
    np.testing.assert_allclose(np.sort(top_points[:, 0]), np.sort(mean_log_expression(reference[:, GENES].X)[:5]))


def test_one_panel_into_a_given_ax_and_the_figure(cells):
    adata, reference, _ = cells
    fig, ax = plt.subplots()
    assert dgm.pl.perturbation(adata, reference, kind="change", ax=ax, show=False) is ax
    assert ax.get_xlabel().startswith("real change")
    fig = dgm.pl.perturbation(adata, reference, return_fig=True)
    assert isinstance(fig, plt.Figure) and len(fig.axes) == 2


def test_without_real_cells_the_prediction_is_drawn_against_control(cells):
    adata, _, control = cells
    ax = dgm.pl.perturbation(adata, show=False)
    assert "against control" in ax.get_title()
    np.testing.assert_allclose(
        np.sort(np.concatenate([c.get_offsets()[:, 0] for c in ax.collections[:2]])),
        np.sort(mean_log_expression(control)),
    )


def test_bad_input(cells):
    adata, reference, _ = cells
    with pytest.raises(ValueError, match="kind="):
        dgm.pl.perturbation(adata, reference, kind="violin", show=False)
    with pytest.raises(ValueError, match="lacks 1 of the predicted genes"):
        dgm.pl.perturbation(adata, reference[:, 1:].copy(), show=False)
    with pytest.raises(KeyError, match="predict_perturbation"):
        dgm.pl.perturbation(adata, reference, key="stim", show=False)
    with pytest.raises(ValueError, match="ax= takes one panel"):
        dgm.pl.perturbation(adata, reference, ax=plt.subplots()[1], show=False)
