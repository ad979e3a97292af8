"""tl.predict_perturbation and tl.decode on a simulation whose held-out response is known."""

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import torch

import scdgm as dgm
from scdgm._perturbation_metrics import mean_log_expression

from .conftest import HELD_OUT, PERTURBATION, expected_log_expression


def _cells(adata, cell_type, condition):
    return ((adata.obs["cell_type"] == cell_type) & (adata.obs["condition"] == condition)).to_numpy()


def test_prediction_follows_the_held_out_response(perturbation_model, perturbation_data):
    before = perturbation_model.copy()
    predicted = dgm.tl.predict_perturbation(perturbation_model, **PERTURBATION, group=HELD_OUT, seed=0)
    control = _cells(perturbation_model, HELD_OUT, "control")
    assert predicted.n_obs == control.sum()
    assert list(predicted.var_names) == list(perturbation_model.var_names)
    assert sp.issparse(predicted.X) and np.array_equal(predicted.X.data, np.round(predicted.X.data))
    assert set(predicted.obs["condition"]) == {"condition_1"} and set(predicted.obs["cell_type"]) == {HELD_OUT}
    assert list(predicted.obs["control_cell"]) == list(perturbation_model.obs_names[control])
    entry = predicted.uns["perturbation"]
    assert list(entry["groups"]) == ["type_1", "type_2"]
    assert entry["params"]["group"] == HELD_OUT and entry["seed"] == 0 and entry["model_class"] == "VAEModule"

    # the delta is the equal-weight mean of each group's shift of the posterior means
    z = perturbation_model.obsm["X_vae"]
    shifts = [
        z[_cells(perturbation_model, g, "condition_1")].mean(0) - z[_cells(perturbation_model, g, "control")].mean(0)
        for g in ("type_1", "type_2")
    ]
    np.testing.assert_allclose(entry["group_deltas"], shifts, atol=1e-4)
    np.testing.assert_allclose(entry["delta"], np.mean(shifts, 0), atol=1e-4)
    np.testing.assert_array_equal(
        entry["n_control"], [_cells(perturbation_model, g, "control").sum() for g in ("type_1", "type_2")]
    )

    # the predicted change of the held-out type follows its true (noise-free) change and the real one
    control_mean = entry["control_mean"]
    np.testing.assert_allclose(control_mean, mean_log_expression(perturbation_model.X[control]), rtol=1e-6)
    truth = expected_log_expression(perturbation_data)
    true_change = truth[_cells(perturbation_data, HELD_OUT, "condition_1")].mean(0) - truth[
        _cells(perturbation_data, HELD_OUT, "control")
    ].mean(0)
    real_change = (
        mean_log_expression(perturbation_data.X[_cells(perturbation_data, HELD_OUT, "condition_1")]) - control_mean
    )
    predicted_change = mean_log_expression(predicted.X) - control_mean
    assert np.corrcoef(predicted_change, true_change)[0, 1] > 0.3
    assert np.corrcoef(predicted_change, real_change)[0, 1] > 0.3
    # adata is untouched
    assert set(perturbation_model.uns) == set(before.uns) and set(perturbation_model.obs) == set(before.obs)


def test_seeded_and_leaves_the_global_random_state(perturbation_model):
    torch_state, numpy_state = torch.get_rng_state(), np.random.get_state()
    first = dgm.tl.predict_perturbation(perturbation_model, **PERTURBATION, group=HELD_OUT, seed=3)
    again = dgm.tl.predict_perturbation(perturbation_model, **PERTURBATION, group=HELD_OUT, seed=3)
    other = dgm.tl.predict_perturbation(perturbation_model, **PERTURBATION, group=HELD_OUT, seed=4)
    assert (first.X != again.X).nnz == 0
    assert (first.X != other.X).nnz > 0
    assert torch.equal(torch_state, torch.get_rng_state())
    assert np.array_equal(numpy_state[1], np.random.get_state()[1])


def test_n_cells_resamples_control_cells_and_survives_h5ad(perturbation_model, tmp_path):
    predicted = dgm.tl.predict_perturbation(
        perturbation_model, **PERTURBATION, group=HELD_OUT, n_cells=50, seed=0, key_added="stim"
    )
    assert predicted.n_obs == 50
    control_names = set(perturbation_model.obs_names[_cells(perturbation_model, HELD_OUT, "control")])
    assert set(predicted.obs["control_cell"]) <= control_names
    path = tmp_path / "predicted.h5ad"
    predicted.write_h5ad(path)
    table = dgm.get.perturbation(ad.read_h5ad(path), key="stim")
    assert list(table["group"]) == ["type_1", "type_2", "delta"]
    np.testing.assert_allclose(table.filter(like="latent_").iloc[-1], predicted.uns["stim"]["delta"])


def _relabel(adata, cells, condition):
    labels = adata.obs["condition"].astype(object).copy()
    labels[cells] = condition
    adata.obs["condition"] = pd.Categorical(labels)
    return adata


@pytest.mark.parametrize(
    ("change", "error", "match"),
    [
        ({"condition_key": "treatment"}, KeyError, "condition_key='treatment'"),
        ({"control": "ctrl"}, ValueError, "control='ctrl'"),
        ({"perturbed": "stimulated"}, ValueError, "perturbed='stimulated'"),
        ({"perturbed": "control"}, ValueError, "control and perturbed"),
        ({"groupby": "cluster"}, KeyError, "groupby='cluster'"),
        ({"group": "type_9"}, ValueError, "group='type_9'"),
        ({"group": "type_1"}, ValueError, "nothing to predict"),
        ({"model_key": "scvi"}, KeyError, "scvi"),
        ({"n_cells": 0}, ValueError, "n_cells"),
        ({"key_added": "a/b"}, ValueError, "key_added"),
    ],
)
def test_bad_input_fails_before_any_work(perturbation_model, change, error, match):
    before = perturbation_model.copy()
    arguments = {**PERTURBATION, "group": HELD_OUT, **change}
    with pytest.raises(error, match=match):
        dgm.tl.predict_perturbation(perturbation_model, **arguments)
    assert set(perturbation_model.uns) == set(before.uns)
    assert perturbation_model.obs.equals(before.obs)


def test_groups_without_what_is_needed_are_named(perturbation_model):
    no_control = _relabel(perturbation_model.copy(), _cells(perturbation_model, HELD_OUT, "control"), "other")
    with pytest.raises(ValueError, match="group='type_0' has no 'control' cells"):
        dgm.tl.predict_perturbation(no_control, **PERTURBATION, group=HELD_OUT)
    # type_1 is seen in control only, type_2 perturbed only
    nothing_learnt = _relabel(perturbation_model.copy(), _cells(perturbation_model, "type_1", "condition_1"), "other")
    nothing_learnt = _relabel(nothing_learnt, _cells(nothing_learnt, "type_2", "control"), "other")
    with pytest.raises(ValueError, match="No group .* holds both"):
        dgm.tl.predict_perturbation(nothing_learnt, **PERTURBATION, group=HELD_OUT)


def test_decode_given_codes(perturbation_model):
    library = np.asarray(perturbation_model.X.sum(1)).ravel()
    means = dgm.tl.decode(perturbation_model, "X_vae", sample=False)
    assert list(means.obs_names) == list(perturbation_model.obs_names) and isinstance(means.X, np.ndarray)
    np.testing.assert_allclose(means.X.sum(1), library, rtol=1e-3)  # each cell's own library size
    counts = perturbation_model.X.toarray()
    assert np.corrcoef(np.log1p(means.X).ravel(), np.log1p(counts).ravel())[0, 1] > 0.6
    # an array: decoded at the given library size; the same codes give the same means as the .obsm key
    z = perturbation_model.obsm["X_vae"][:5]
    fixed = dgm.tl.decode(perturbation_model, z, library_size=1000.0, sample=False)
    assert list(fixed.obs_names) == [f"decoded_{i}" for i in range(5)]
    np.testing.assert_allclose(fixed.X.sum(1), 1000.0, rtol=1e-3)
    np.testing.assert_allclose(fixed.X / 1000.0, means.X[:5] / library[:5, None], rtol=1e-3, atol=1e-7)
    drawn = dgm.tl.decode(perturbation_model, z, seed=1)
    assert sp.issparse(drawn.X) and drawn.uns["decoded"]["params"]["latent"] == "array"
    with pytest.raises(ValueError, match="6 dimensions"):
        dgm.tl.decode(perturbation_model, z[:, :3])
    with pytest.raises(KeyError, match="X_pca"):
        dgm.tl.decode(perturbation_model, "X_pca")
