import anndata as ad
import numpy as np
import pytest
import scipy.sparse as sp

import scdgm as dgm


def test_writes_documented_keys(trained):
    assert trained.obsm["X_vae"].shape == (300, 4)
    assert np.isfinite(trained.obsm["X_vae"]).all()
    entry = trained.uns["vae"]
    assert set(entry) >= {"params", "history", "metrics", "model", "split"}
    params = entry["params"]
    assert params["likelihood"] == "nb" and params["n_latent"] == 4 and params["seed"] == 0
    assert params["max_epochs"] == 60 and params["kl_warmup_epochs"] == 20
    assert "scdgm_version" in params
    hist = entry["history"]
    assert len(hist["train_elbo"]) == entry["metrics"]["n_epochs"]
    assert {"train_reconstruction", "train_kl", "validation_elbo"} <= set(hist)
    metrics = entry["metrics"]
    assert metrics["n_validation"] == 30 and metrics["n_train"] == 270
    assert np.isfinite(metrics["validation_elbo"]) and metrics["validation_elbo"] > 0
    assert metrics["validation_elbo"] == pytest.approx(
        metrics["validation_reconstruction"] + metrics["validation_kl"], rel=1e-4
    )


def test_training_lowers_the_heldout_loss(trained):
    hist = trained.uns["vae"]["history"]
    assert hist["validation_reconstruction"][-1] < hist["validation_reconstruction"][0]


def test_same_seed_same_latent(simulated):
    a, b, c = simulated.copy(), simulated.copy(), simulated.copy()
    for adata, seed in ((a, 1), (b, 1), (c, 2)):
        dgm.tl.vae(adata, n_latent=3, n_hidden=16, max_epochs=3, batch_size=64, seed=seed)
    np.testing.assert_array_equal(a.obsm["X_vae"], b.obsm["X_vae"])
    assert not np.allclose(a.obsm["X_vae"], c.obsm["X_vae"])


def test_h5ad_round_trip_rebuilds_the_model(trained, tmp_path):
    import torch

    path = tmp_path / "trained.h5ad"
    trained.write_h5ad(path)
    reread = ad.read_h5ad(path)
    module = dgm.get_model(reread, "vae")
    x = torch.as_tensor(reread.X.toarray(), dtype=torch.float32)
    batch = {
        "x": x,
        "library": x.sum(1, keepdim=True),
        "batch": torch.as_tensor(reread.obs["batch"].cat.codes.to_numpy(), dtype=torch.int64),
    }
    with torch.inference_mode():
        latent = module.latent_mean(batch).numpy()
    np.testing.assert_allclose(latent, trained.obsm["X_vae"], atol=1e-6)


@pytest.mark.parametrize(
    ("kind", "likelihood", "decoder"),
    [("ae", "nb", "mlp"), ("dae", "zinb", "mlp"), ("vae", "poisson", "linear"), ("vae", "zinb", "mlp")],
)
def test_kinds_and_likelihoods_train(simulated, kind, likelihood, decoder):
    dgm.tl.vae(
        simulated,
        kind=kind,
        likelihood=likelihood,
        decoder=decoder,
        n_latent=3,
        n_hidden=16,
        max_epochs=3,
        batch_size=64,
    )
    assert simulated.obsm["X_vae"].shape == (300, 3)
    assert simulated.uns["vae"]["params"]["kind"] == kind
    if kind != "vae":
        assert simulated.uns["vae"]["metrics"]["train_kl"] == 0


def test_normal_likelihood_on_log_normalised_data(simulated):
    import scanpy as sc

    sc.pp.normalize_total(simulated, target_sum=1e4)
    sc.pp.log1p(simulated)
    with pytest.raises(ValueError, match="non-integer"):
        dgm.tl.vae(simulated, max_epochs=1)
    dgm.tl.vae(simulated, likelihood="normal", n_latent=3, max_epochs=3, batch_size=64)
    assert np.isfinite(simulated.obsm["X_vae"]).all()


def test_bernoulli_needs_binary_data(simulated):
    with pytest.raises(ValueError, match="binary"):
        dgm.tl.vae(simulated, likelihood="bernoulli", max_epochs=1)
    dgm.pp.binarize(simulated, layer="counts")
    dgm.tl.vae(simulated, layer="binary", likelihood="bernoulli", n_latent=3, max_epochs=2, batch_size=64)
    assert simulated.uns["vae"]["params"]["layer"] == "binary"


def test_copy_returns_new_object_and_leaves_input(simulated):
    before = set(simulated.obsm) | set(simulated.uns)
    out = dgm.tl.vae(simulated, n_latent=3, max_epochs=1, batch_size=64, copy=True, key_added="mine")
    assert "X_mine" in out.obsm and "mine" in out.uns
    assert set(simulated.obsm) | set(simulated.uns) == before


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"likelihood": "gaussian"}, "likelihood='gaussian' is not supported"),
        ({"kind": "gan"}, "kind='gan' is not supported"),
        ({"decoder": "conv"}, "decoder='conv' is not supported"),
        ({"n_latent": 60}, "n_latent=60 must be smaller than the number of genes"),
        ({"batch_size": 1000}, "batch_size=1000 is larger than the training set"),
        ({"batch_key": "donor"}, "donor"),
        ({"layer": "spliced"}, "spliced"),
        ({"dispersion": "gene-batch"}, "needs batches"),
        ({"kl_warmup_epochs": 10, "max_epochs": 5}, "never reach beta"),
        ({"validation_fraction": 1.0}, "validation_fraction"),
        ({"loadings_l1": 0.01}, 'penalises the gene loadings of a linear decoder; pass decoder="linear"'),
        ({"loadings_l1": -1.0, "decoder": "linear"}, "loadings_l1 must be a finite number >= 0"),
    ],
)
def test_bad_input_is_rejected_before_training(simulated, kwargs, match):
    snapshot = simulated.copy()
    with pytest.raises((ValueError, KeyError), match=match):
        dgm.tl.vae(simulated, **{"max_epochs": 1, **kwargs})
    assert set(simulated.obsm) == set(snapshot.obsm) and set(simulated.uns) == set(snapshot.uns)
    assert (simulated.X != snapshot.X).nnz == 0


def test_interrupted_training_writes_nothing(simulated, monkeypatch):
    import scdgm.train._fit as fit_module

    def boom(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(fit_module, "_run_epoch", boom)
    with pytest.raises(KeyboardInterrupt):
        dgm.tl.vae(simulated, max_epochs=2, batch_size=64)
    assert "X_vae" not in simulated.obsm and "vae" not in simulated.uns


def test_dense_and_sparse_inputs_agree(simulated):
    dense = simulated.copy()
    dense.X = simulated.X.toarray()
    for adata in (simulated, dense):
        dgm.tl.vae(adata, n_latent=3, n_hidden=16, max_epochs=2, batch_size=64, seed=5)
    assert sp.issparse(simulated.X)
    np.testing.assert_allclose(simulated.obsm["X_vae"], dense.obsm["X_vae"], atol=1e-5)


def test_data_parallel_on_two_cpu_processes(simulated):
    """DDP through the same fit: two spawned processes share each epoch and agree on one model."""
    dgm.tl.vae(simulated, n_latent=3, n_hidden=16, max_epochs=4, batch_size=32, devices=2, device="cpu", seed=0)
    entry = simulated.uns["vae"]
    assert entry["params"]["devices"] == 2
    history = entry["history"]
    assert len(history["train_elbo"]) == 4 and np.all(np.isfinite(history["validation_elbo"]))
    assert history["train_loss"][-1] < history["train_loss"][0]
    # the stored weights are the ones process 0 trained: rebuilding them gives the written latent space
    from scdgm.tl._common import apply_stored_model

    applied = apply_stored_model(simulated, "vae", device="cpu")
    np.testing.assert_allclose(applied.predict(lambda m, b: m.latent_mean(b)), simulated.obsm["X_vae"], atol=1e-6)


def test_devices_must_be_positive(simulated):
    with pytest.raises(ValueError, match="devices must be"):
        dgm.tl.vae(simulated, devices=0)
    assert "vae" not in simulated.uns


# --------------------------------------------------------------------------------------------------
# regression tests of the reliability sweep
FAST = {"n_latent": 3, "n_hidden": 8, "max_epochs": 2, "batch_size": 32}


def _keys(adata):
    return {slot: set(getattr(adata, slot).keys()) for slot in ("obs", "obsm", "varm", "layers", "uns")}


@pytest.fixture
def no_training(monkeypatch):
    """Fail the test if an epoch starts: the refusals below must come before any training."""
    import scdgm.train._fit as fit_module

    def started(*args, **kwargs):
        msg = "training started"
        raise AssertionError(msg)

    monkeypatch.setattr(fit_module, "_run_epoch", started)


@pytest.fixture
def _restore_settings():
    seed, device = dgm.settings.seed, dgm.settings.device
    yield
    dgm.settings.seed, dgm.settings.device = seed, device


@pytest.mark.usefixtures("no_training")
@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"key_added": ""}, "key_added='' is not a usable key"),
        ({"key_added": "run/1"}, "key_added='run/1' is not a usable key"),
        ({"lr": 0}, r"lr must be a finite number > 0, not 0"),
        ({"lr": "0.1"}, r"lr must be a finite number > 0, not '0.1'"),
        ({"beta": "1"}, r"beta must be a finite number >= 0, not '1'"),
        ({"dropout": "0.1"}, r"dropout must be a finite number in \[0, 1\), not '0.1'"),
        ({"validation_fraction": None}, r"validation_fraction must be a finite number in \[0, 1\), not None"),
        ({"precision": "16-mixed", "device": "cpu"}, "precision='16-mixed' needs a CUDA GPU"),
        ({"seed": 2**64}, r"seed must be an integer in \[0, 2\*\*32\)"),
        ({"seed": -1}, r"seed must be an integer in \[0, 2\*\*32\)"),
        ({"seed": 1.5}, r"seed must be an integer in \[0, 2\*\*32\)"),
        ({"device": 0}, r"device must be .* \(a string\), not 0"),
        ({"n_restarts": 0}, r"n_restarts must be an integer >= 1, not 0"),
        ({"n_restarts": 2, "validation_fraction": 0}, r"n_restarts=2 keeps the restart with the best held-out loss"),
    ],
)
def test_bad_arguments_are_named_before_training(simulated, kwargs, match):
    before = _keys(simulated)
    with pytest.raises(ValueError, match=match):
        dgm.tl.vae(simulated, **{**FAST, **kwargs})
    assert _keys(simulated) == before


@pytest.mark.usefixtures("no_training")
def test_mps_is_refused_where_it_is_not_available(simulated):
    import torch

    if torch.backends.mps.is_available():
        pytest.skip("this machine has MPS")
    with pytest.raises(ValueError, match="MPS backend is not available"):
        dgm.tl.vae(simulated, device="mps", **FAST)
    assert "vae" not in simulated.uns


@pytest.mark.usefixtures("no_training")
def test_repeated_gene_names_are_refused(simulated):
    simulated.var_names = [*simulated.var_names[:-1], simulated.var_names[0]]
    before = _keys(simulated)
    with pytest.raises(ValueError, match=r"repeats 1 name\(s\).*`adata.var_names_make_unique\(\)`"):
        dgm.tl.vae(simulated, **FAST)
    assert _keys(simulated) == before


@pytest.mark.usefixtures("no_training")
@pytest.mark.parametrize(
    ("n_obs", "kwargs", "match"),
    [
        (1, {"batch_size": 1}, r"batch_size must be an integer >= 2, not 1"),
        (2, {"batch_size": 1}, r"batch_size must be an integer >= 2, not 1"),
        (1, {}, r"Only 1 cell\(s\) are left to train on \(none held out for validation\): a model needs at least 2"),
        (2, {"batch_size": 2}, r"Only 1 cell\(s\) are left to train on after holding out 1 for validation"),
    ],
)
def test_too_few_cells_get_a_clear_error(simulated, n_obs, kwargs, match):
    tiny = simulated[:n_obs].copy()
    tiny = tiny[:, np.asarray(tiny.X.sum(0)).ravel() > 0].copy()  # the all-zero genes warn otherwise
    before = _keys(tiny)
    with pytest.raises(ValueError, match=match):
        dgm.tl.vae(tiny, n_latent=1, n_hidden=8, max_epochs=2, **kwargs)
    assert _keys(tiny) == before


@pytest.mark.usefixtures("no_training")
def test_copy_of_a_backed_anndata_is_refused_before_training(simulated, tmp_path):
    path = tmp_path / "cells.h5ad"
    simulated.write_h5ad(path)
    backed = ad.read_h5ad(path, backed="r")
    try:
        with pytest.raises(ValueError, match=r"copy=True cannot copy a backed AnnData.*to_memory\(\)"):
            dgm.tl.vae(backed, copy=True, **FAST)
        assert "vae" not in backed.uns
    finally:
        backed.file.close()


@pytest.mark.usefixtures("no_training")
def test_scaled_counts_are_not_raw_counts(simulated):
    simulated.X = simulated.X * 1e30
    before = _keys(simulated)
    with pytest.raises(ValueError, match="These are not raw counts"):
        dgm.tl.vae(simulated, **FAST)
    assert _keys(simulated) == before


def test_numpy_integer_seed_is_the_same_seed(simulated):
    a, b = simulated.copy(), simulated.copy()
    dgm.tl.vae(a, seed=np.int64(3), **FAST)
    dgm.tl.vae(b, seed=3, **FAST)
    np.testing.assert_array_equal(a.obsm["X_vae"], b.obsm["X_vae"])
    assert a.uns["vae"]["params"]["seed"] == 3


@pytest.mark.usefixtures("_restore_settings")
def test_settings_seed_is_the_default_seed(simulated):
    a, b = simulated.copy(), simulated.copy()
    dgm.tl.vae(a, seed=5, **FAST)
    dgm.settings.seed = 5
    dgm.tl.vae(b, **FAST)
    np.testing.assert_array_equal(a.obsm["X_vae"], b.obsm["X_vae"])
    assert b.uns["vae"]["params"]["seed"] == 5


@pytest.mark.usefixtures("_restore_settings", "no_training")
def test_settings_device_is_the_default_device(simulated):
    import torch

    if torch.backends.mps.is_available():
        pytest.skip("this machine has MPS")
    dgm.settings.device = "mps"
    with pytest.raises(ValueError, match="device='mps' was asked for"):
        dgm.tl.vae(simulated, **FAST)
    assert "vae" not in simulated.uns


def test_mask_var_trains_on_the_chosen_genes_without_a_view(simulated):
    simulated.var["chosen"] = np.arange(simulated.n_vars) % 2 == 0
    before = simulated.X.copy()
    dgm.tl.vae(simulated, mask_var="chosen", n_latent=2, n_hidden=8, max_epochs=2, batch_size=32, seed=0)
    record = simulated.uns["vae"]["model"]
    assert list(record["var_names"]) == list(simulated.var_names[simulated.var["chosen"].to_numpy()])
    assert simulated.obsm["X_vae"].shape == (simulated.n_obs, 2)
    assert simulated.uns["vae"]["params"]["mask_var"] == "chosen"
    assert (simulated.X != before).nnz == 0
    # the same genes through a view give the same model
    view = simulated[:, simulated.var["chosen"].to_numpy()].copy()
    dgm.tl.vae(view, n_latent=2, n_hidden=8, max_epochs=2, batch_size=32, seed=0)
    np.testing.assert_allclose(view.obsm["X_vae"], simulated.obsm["X_vae"], atol=1e-5)
    dgm.tl.denoise(simulated)
    denoised = simulated.layers["vae_denoised"]
    assert np.isnan(denoised[:, ~simulated.var["chosen"].to_numpy()]).all()
    assert np.isfinite(denoised[:, simulated.var["chosen"].to_numpy()]).all()


@pytest.mark.parametrize(
    ("mask_var", "error", "match"),
    [
        ("nope", KeyError, "mask_var='nope' is not a column of adata.var"),
        ("name", ValueError, "mask_var must be a boolean"),
        (np.zeros(60, dtype=bool), ValueError, "mask_var selects no gene"),
    ],
)
def test_bad_mask_var_is_refused(simulated, mask_var, error, match):
    simulated.var["name"] = simulated.var_names.to_numpy()
    keys = set(simulated.uns) | set(simulated.obsm)
    with pytest.raises(error, match=match):
        dgm.tl.vae(simulated, mask_var=mask_var, max_epochs=2)
    assert set(simulated.uns) | set(simulated.obsm) == keys


def test_restarts_keep_the_best_heldout_loss_on_one_split(simulated):
    kwargs = {**FAST, "max_epochs": 4, "seed": 3}
    dgm.tl.vae(simulated, n_restarts=3, **kwargs)
    metrics = simulated.uns["vae"]["metrics"]
    losses, chosen = metrics["restart_validation_loss"], metrics["chosen_restart"]
    assert len(losses) == 3 and chosen == int(np.argmin(losses))
    assert metrics["validation_elbo"] == pytest.approx(losses[chosen])
    assert simulated.uns["vae"]["params"]["n_restarts"] == 3
    # restart 0 is the run of the same seed without restarts, on the same held-out cells
    single = simulated.copy()
    dgm.tl.vae(single, **kwargs)
    assert single.uns["vae"]["metrics"]["validation_elbo"] == pytest.approx(losses[0])
    np.testing.assert_array_equal(
        single.uns["vae"]["split"]["validation_indices"], simulated.uns["vae"]["split"]["validation_indices"]
    )
    if chosen == 0:
        np.testing.assert_allclose(single.obsm["X_vae"], simulated.obsm["X_vae"])
