"""tl.dbm on small binarised data: what it writes, reproducibility, h5ad round trip, generation and bad input."""

import anndata as ad
import numpy as np
import pytest
import scipy.sparse as sp
import torch

import scdgm as dgm
from scdgm.cli import main

from .conftest import binary_simulation

TINY = {
    "pretrain_epochs": 2,
    "max_epochs": 4,
    "cooldown_epochs": 2,
    "batch_size": 16,
    "n_chains": 20,
    "gibbs_steps": 1,
    "n_ais_runs": 20,
    "n_ais_temperatures": 100,
    "seed": 0,
}


def _binary(n_obs=120, n_vars=24, seed=0):
    return binary_simulation(n_obs, n_vars, seed)


@pytest.fixture(scope="module")
def _trained():
    adata = _binary()
    dgm.tl.dbm(adata, n_hidden=(8, 4), **TINY)
    return adata


@pytest.fixture
def trained(_trained):
    """120 binarised cells x 24 genes with a small DBM under "dbm"."""
    return _trained.copy()


def _state(adata):
    return set(adata.uns), set(adata.obsm), set(adata.layers)


def test_writes_latent_params_history_metrics_and_model(trained):
    latent = trained.obsm["X_dbm"]
    assert latent.shape == (120, 4) and latent.dtype == np.float32
    assert latent.min() >= 0 and latent.max() <= 1
    entry = trained.uns["dbm"]
    params = entry["params"]
    assert params["tool"] == "dbm" and list(params["n_hidden"]) == [8, 4] and params["seed"] == 0
    assert params["layer"] == "binary" and params["max_epochs"] == 4 and params["device"] == "cpu"
    assert {"epoch", "train_reconstruction", "validation_reconstruction", "validation_pseudo_nll"} <= set(
        entry["history"]
    )
    # the epochs of early-stopped training, then the cooldown's, which hold no validation cells
    history = entry["history"]
    assert entry["metrics"]["n_epochs"] == 4 and entry["metrics"]["cooldown_epochs"] == 2
    np.testing.assert_array_equal(history["epoch"], np.arange(6))
    assert (
        np.isfinite(history["validation_pseudo_nll"][:4]).all() and np.isnan(history["validation_pseudo_nll"][4:]).all()
    )
    assert np.isfinite(history["train_pseudo_nll"]).all()
    assert set(entry["pretraining"]) == {"rbm_1", "rbm_2"}
    assert len(entry["pretraining"]["rbm_1"]["train_reconstruction"]) == 2
    metrics = entry["metrics"]
    for name in ("validation_loglik", "train_loglik", "validation_loglik_independent", "log_partition"):
        assert np.isfinite(metrics[name])
    assert metrics["validation_loglik"] < 0 and metrics["log_partition_standard_error"] > 0
    assert metrics["monitor"] == "pseudo_nll" and metrics["n_validation"] == 12
    # 12 held-out cells are too few to choose the epoch by: every epoch runs, the last is kept
    assert not metrics["epoch_chosen_by_validation"] and metrics["best_epoch"] == metrics["n_epochs"] - 1
    assert entry["model"]["class_name"] == "DBMModule"
    assert list(entry["model"]["var_names"]) == list(trained.var_names)
    assert len(entry["split"]["validation_indices"]) == 12
    history = dgm.get.history(trained, key="dbm")
    assert "validation_pseudo_nll" in history


def test_rbm_log_likelihood_agrees_with_enumeration():
    adata = _binary()
    dgm.tl.dbm(adata, n_hidden=6, **{**TINY, "n_ais_runs": 100, "n_ais_temperatures": 500})
    entry = adata.uns["dbm"]
    assert "pretraining" not in entry or not entry["pretraining"]
    module = dgm.get_model(adata, "dbm")
    train = np.setdiff1d(np.arange(adata.n_obs), entry["split"]["validation_indices"])
    x = torch.as_tensor(adata.layers["binary"][train].toarray())
    exact = float(module.log_likelihood_exact(x).mean())
    assert entry["metrics"]["train_loglik"] == pytest.approx(exact, abs=0.1)
    assert np.isclose(entry["metrics"]["log_partition"], module.log_partition_exact(), atol=0.1)


def test_same_seed_same_model_and_global_rng_untouched():
    a, b = _binary(), _binary()
    torch_state, numpy_state = torch.random.get_rng_state(), np.random.get_state()[1].copy()
    dgm.tl.dbm(a, n_hidden=(8, 4), **TINY)
    dgm.tl.dbm(b, n_hidden=(8, 4), **TINY)
    np.testing.assert_array_equal(a.obsm["X_dbm"], b.obsm["X_dbm"])
    assert a.uns["dbm"]["metrics"]["log_partition"] == b.uns["dbm"]["metrics"]["log_partition"]
    assert torch.equal(torch.random.get_rng_state(), torch_state)
    np.testing.assert_array_equal(np.random.get_state()[1], numpy_state)
    c = _binary()
    dgm.tl.dbm(c, n_hidden=(8, 4), **{**TINY, "seed": 1})
    assert not np.array_equal(a.obsm["X_dbm"], c.obsm["X_dbm"])


def test_copy_leaves_the_input_alone():
    adata = _binary()
    before = _state(adata)
    out = dgm.tl.dbm(adata, n_hidden=5, copy=True, **TINY)
    assert _state(adata) == before
    assert "X_dbm" in out.obsm and "dbm" in out.uns


def test_h5ad_round_trip_then_generate(trained, tmp_path):
    path = tmp_path / "dbm.h5ad"
    trained.write_h5ad(path)
    reread = ad.read_h5ad(path)
    first = dgm.tl.generate(trained, model_key="dbm", n_cells=50, burn_in=20, seed=3)
    second = dgm.tl.generate(reread, model_key="dbm", n_cells=50, burn_in=20, seed=3)
    assert (first.X != second.X).nnz == 0
    np.testing.assert_allclose(
        dgm.get_model(reread, "dbm").weights[0].detach(), dgm.get_model(trained, "dbm").weights[0].detach()
    )


def test_generate_draws_binary_cells_by_gibbs_sampling(trained):
    before = _state(trained)
    synthetic = dgm.tl.generate(trained, model_key="dbm", n_cells=300, latent="prior", burn_in=30, thinning=2, seed=0)
    assert synthetic.shape == (300, 24) and sp.issparse(synthetic.X) and synthetic.X.dtype == np.float32
    assert set(np.unique(synthetic.X.toarray())) <= {0.0, 1.0}
    provenance = synthetic.uns["synthetic"]
    assert provenance["model_class"] == "DBMModule" and provenance["params"]["burn_in"] == 30
    assert provenance["params"]["thinning"] == 2
    assert _state(trained) == before
    # every gene's detection rate is near the training cells'
    real = np.asarray(trained.layers["binary"].mean(0)).ravel()
    assert np.abs(np.asarray(synthetic.X.mean(0)).ravel() - real).mean() < 0.15
    # without burn-in, a posterior chain's first cell is its starting (training) cell; only cells a
    # chain yields later (a training cell picked twice) have moved
    copies = dgm.tl.generate(trained, model_key="dbm", n_cells=40, burn_in=0, seed=0)
    training = {tuple(row) for row in trained.layers["binary"].toarray()}
    assert np.mean([tuple(row) in training for row in copies.X.toarray()]) > 0.7
    # more cells than training cells: chains yield several cells, thinning sweeps apart
    many = dgm.tl.generate(trained, model_key="dbm", n_cells=500, burn_in=5, thinning=3, seed=0)
    assert many.n_obs == 500


def test_synthetic_quality_judges_dbm_cells(trained):
    reference = trained[:60].copy()
    synthetic = dgm.tl.generate(trained, model_key="dbm", n_cells=60, latent="prior", burn_in=20, seed=0)
    table = dgm.tl.synthetic_quality(
        synthetic, reference=reference, reference_layer="binary", n_permutations=20, n_pcs=5, seed=0
    )
    assert set(table["comparison"]) == {"synthetic", "control"}
    assert table.query("metric == 'log_odds_ratio_pearson'")["value"].notna().all()


def test_sampler_options_are_refused_for_vaes(trained):
    dgm.tl.vae(
        trained, layer="binary", likelihood="bernoulli", n_latent=2, n_hidden=8, max_epochs=2, batch_size=32, seed=0
    )
    with pytest.raises(ValueError, match="burn_in=10 applies to models sampled by Markov chains"):
        dgm.tl.generate(trained, model_key="vae", burn_in=10)
    with pytest.raises(ValueError, match="thinning must be an integer >= 1"):
        dgm.tl.generate(trained, model_key="dbm", thinning=0)


def test_non_binary_layer_is_refused_before_any_work():
    adata = _binary()
    before = _state(adata)
    with pytest.raises(ValueError, match=r"layer='counts'.*binary \(0/1\).*dgm\.pp\.binarize"):
        dgm.tl.dbm(adata, layer="counts", **TINY)
    with pytest.raises(KeyError, match=r"layer='missing'.*dgm\.pp\.binarize"):
        dgm.tl.dbm(adata, layer="missing", **TINY)
    assert _state(adata) == before


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"n_hidden": (8, 0)}, "n_hidden must be a positive integer"),
        ({"n_hidden": ()}, "n_hidden must name at least one hidden layer"),
        ({"n_hidden": "8"}, "n_hidden must be a positive integer"),
        ({"batch_size": 500}, "batch_size=500 is larger than the training set"),
        ({"gibbs_steps": 0}, "gibbs_steps must be an integer >= 1"),
        ({"pretrain_epochs": -1}, "pretrain_epochs must be an integer >= 0"),
        ({"validation_fraction": 1.0}, "validation_fraction"),
        ({"key_added": "a/b"}, "key_added='a/b' is not a usable key"),
    ],
)
def test_bad_arguments(arguments, message):
    adata = _binary()
    before = _state(adata)
    with pytest.raises(ValueError, match=message):
        dgm.tl.dbm(adata, **{**TINY, **arguments})
    assert _state(adata) == before


def test_nan_is_refused():
    adata = _binary()
    binary = adata.layers["binary"].toarray()
    binary[0, 0] = np.nan
    adata.layers["binary"] = binary
    with pytest.raises(ValueError, match="NaN"):
        dgm.tl.dbm(adata, **TINY)
    assert "dbm" not in adata.uns


def test_command_line(tmp_path):
    source, target = tmp_path / "in.h5ad", tmp_path / "out.h5ad"
    _binary().write_h5ad(source)
    options = (
        "--n-hidden 6 3 --max-epochs 2 --pretrain-epochs 1 --cooldown-epochs 1 --n-ais-temperatures 50 --n-ais-runs 10"
    )
    options = options.split()
    assert main(["dbm", str(source), str(target), *options]) == 0
    written = ad.read_h5ad(target)
    assert list(written.uns["dbm"]["params"]["n_hidden"]) == [6, 3] and written.obsm["X_dbm"].shape[1] == 3


def test_enough_held_out_cells_choose_the_epoch():
    adata = _binary(n_obs=320)
    dgm.tl.dbm(adata, n_hidden=6, **{**TINY, "max_epochs": 3})
    metrics = adata.uns["dbm"]["metrics"]
    assert metrics["n_validation"] >= 30 and metrics["epoch_chosen_by_validation"]
    history = adata.uns["dbm"]["history"]["validation_pseudo_nll"][: metrics["n_epochs"]]
    assert metrics["best_epoch"] == int(np.argmin(history))
