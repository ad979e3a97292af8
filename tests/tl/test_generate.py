import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import torch

import scdgm as dgm
from scdgm.tl._common import apply_stored_model
from scdgm.tl._generate import (
    GENERATORS,
    _check_groups,
    _plan,
    _posterior,
    generate,
    scott_bandwidth,
    vae_latents,
)

TRAIN = {"n_latent": 3, "n_hidden": 16, "batch_size": 64, "seed": 0}


def _data():
    # strong markers: with the default fold change two of the three types overlap so much in 40 genes
    # (10-NN accuracy 0.77 on the data) that a 3-dimensional VAE blurs them into each other
    return dgm.datasets.simulate(300, 40, n_cell_types=3, n_batches=2, marker_fold_change=10.0, seed=0)


def _dense(X):
    return X.toarray() if sp.issparse(X) else np.asarray(X)


def _log_normalised(X):
    X = _dense(X)
    return np.log1p(X / np.maximum(X.sum(1, keepdims=True), 1) * 1e2)


@pytest.fixture(scope="module")
def _batch_model():
    adata = _data()
    dgm.tl.vae(adata, batch_key="batch", max_epochs=100, **TRAIN)
    return adata


@pytest.fixture
def batch_model(_batch_model):
    """NB VAE with batch covariates, trained long enough to match the gene means."""
    return _batch_model.copy()


@pytest.fixture(scope="module")
def plain_model():
    """NB VAE without batches (not modified by the tests)."""
    adata = _data()
    dgm.tl.vae(adata, max_epochs=30, **TRAIN)
    return adata


def test_counts_are_sparse_integers_with_provenance(batch_model):
    before = batch_model.copy()
    synthetic = generate(batch_model, seed=1)
    assert synthetic.shape == (300, 40)
    assert sp.issparse(synthetic.X) and synthetic.X.format == "csr" and synthetic.X.dtype == np.float32
    values = synthetic.X.data
    assert values.min() >= 0 and np.array_equal(values, np.round(values)) and values.max() > 1
    np.testing.assert_array_equal(synthetic.var_names, batch_model.uns["vae"]["model"]["var_names"])
    assert list(synthetic.obs_names[:2]) == ["synthetic_0", "synthetic_1"]
    assert "dispersion" in synthetic.var  # the genes' annotations travel
    batches = synthetic.obs["batch"]
    assert isinstance(batches.dtype, pd.CategoricalDtype) and set(batches) == {"batch_0", "batch_1"}
    provenance = synthetic.uns["synthetic"]
    assert provenance["model_key"] == "vae" and provenance["latent"] == "posterior" and provenance["seed"] == 1
    assert provenance["params"]["tool"] == "generate" and provenance["model_params"]["tool"] == "vae"
    assert provenance["model_class"] == "VAEModule" and "model" not in provenance
    # adata is untouched
    assert set(batch_model.uns) == set(before.uns) and set(batch_model.obs) == set(before.obs)
    assert (batch_model.X != before.X).nnz == 0


def test_gene_means_match_training(batch_model):
    synthetic = generate(batch_model, n_cells=3000, seed=1)
    real = _dense(batch_model.X).mean(0)
    fake = _dense(synthetic.X).mean(0)
    # measured 0.997 (100 epochs, 3 seeds); 30 epochs still underfit (0.89-0.96)
    assert np.corrcoef(np.log1p(real), np.log1p(fake))[0, 1] > 0.98
    # library sizes are inherited from the cells: same mean depth
    assert abs(synthetic.X.sum(1).mean() / batch_model.X.sum(1).mean() - 1) < 0.05


def test_groups_in_proportion_or_as_asked(batch_model):
    synthetic = generate(batch_model, n_cells=101, groupby="cell_type", seed=0)
    shares = batch_model.obs["cell_type"].value_counts(normalize=True)
    counts = synthetic.obs["cell_type"].value_counts()
    assert counts.sum() == 101
    for group, share in shares.items():
        assert abs(counts[group] - 101 * share) <= 1
    asked = generate(batch_model, groupby="cell_type", n_per_group={"type_0": 7, "type_2": 3}, seed=0)
    assert asked.obs["cell_type"].value_counts().to_dict() == {"type_0": 7, "type_2": 3, "type_1": 0}
    params = asked.uns["synthetic"]["params"]
    assert list(params["groups"]) == ["type_0", "type_1", "type_2"] and list(params["n_per_group"]) == [7, 0, 3]


def test_groups_match_their_own_profile_and_keep_their_variation(batch_model):
    synthetic = generate(batch_model, n_cells=1500, groupby="cell_type", seed=0)
    real, fake = _log_normalised(batch_model.X), _log_normalised(synthetic.X)
    types = batch_model.obs["cell_type"].cat.categories
    real_means = {t: real[(batch_model.obs["cell_type"] == t).to_numpy()].mean(0) for t in types}
    for t in types:
        in_type = fake[(synthetic.obs["cell_type"] == t).to_numpy()]
        distances = {u: np.linalg.norm(in_type.mean(0) - real_means[u]) for u in types}
        assert min(distances, key=distances.get) == t
        # within-group variance of the same order as the data's (measured ratios 1.14-1.44 over 3 seeds)
        real_variance = real[(batch_model.obs["cell_type"] == t).to_numpy()].var(0).sum()
        assert 0.7 < in_type.var(0).sum() / real_variance < 2.0


def test_latent_draws_follow_each_groups_aggregate_posterior(batch_model):
    # The counts' NB noise hides the latent spread at this depth (a generator that decoded every cell
    # at its group's mean code gave expression variance ratios of 1.1-1.4 too), so the draws are checked
    # where they are made: per group, z has the aggregate posterior's mean and variance (spread of the
    # cells' means plus their posterior variance), not only the posterior variance around one centre.
    applied = apply_stored_model(batch_model, "vae", device="cpu")
    groups = _check_groups(batch_model, "cell_type", None, None, "posterior")
    plan = _plan(applied, groups, 6000, "posterior", None, None, seed=0)
    z = np.concatenate([z.numpy() for _, z in vae_latents(applied, plan, torch.Generator().manual_seed(0))])
    encoded = applied.predict(_posterior)
    means, variances = encoded[:, :3], encoded[:, 3:]
    for g in range(len(groups.names)):
        cells, drawn = groups.codes == g, z[plan.pool_of_cell == g]
        spread_of_means = means[cells].var(0).sum()
        expected = spread_of_means + variances[cells].mean(0).sum()
        # a draw around one centre would miss the spread of the means: >= 20% off, beyond the 10% allowed
        assert spread_of_means > 0.2 * expected  # measured 0.28
        np.testing.assert_allclose(drawn.var(0).sum(), expected, rtol=0.1)
        np.testing.assert_allclose(drawn.mean(0), means[cells].mean(0), atol=0.1)


def test_batch_decodes_every_cell_into_one_batch(batch_model, plain_model):
    synthetic = generate(batch_model, n_cells=50, batch="batch_1", seed=0)
    assert (synthetic.obs["batch"] == "batch_1").all()
    assert list(synthetic.obs["batch"].cat.categories) == ["batch_0", "batch_1"]
    other = generate(batch_model, n_cells=50, batch="batch_0", seed=0)
    assert (synthetic.X != other.X).nnz > 0
    with pytest.raises(ValueError, match="batch='batch_9'"):
        generate(batch_model, batch="batch_9")
    with pytest.raises(ValueError, match="no batch covariate"):
        generate(plain_model, batch="batch_0")
    assert "batch" not in generate(plain_model, n_cells=5).obs


def test_library_size_fixes_depth(batch_model):
    synthetic = generate(batch_model, n_cells=2000, library_size=500, seed=0)
    assert abs(synthetic.X.sum(1).mean() / 500 - 1) < 0.05


def test_prior_draws_resample_libraries(batch_model):
    synthetic = generate(batch_model, n_cells=200, latent="prior", seed=0)
    assert synthetic.shape == (200, 40) and synthetic.uns["synthetic"]["latent"] == "prior"
    assert set(synthetic.obs["batch"]) == {"batch_0", "batch_1"}
    with pytest.raises(ValueError, match='latent="posterior"'):
        generate(batch_model, latent="prior", groupby="cell_type")


def test_seeded_and_rng_untouched(batch_model):
    torch_state, numpy_state = torch.get_rng_state(), np.random.get_state()
    first = generate(batch_model, n_cells=100, seed=3)
    assert torch.equal(torch_state, torch.get_rng_state())
    assert np.array_equal(numpy_state[1], np.random.get_state()[1])
    again = generate(batch_model, n_cells=100, seed=3)
    other = generate(batch_model, n_cells=100, seed=4)
    assert (first.X != again.X).nnz == 0 and first.obs.equals(again.obs)
    assert (first.X != other.X).nnz > 0


def test_after_h5ad_round_trip(batch_model, tmp_path):
    path = tmp_path / "trained.h5ad"
    batch_model.write_h5ad(path)
    reread = ad.read_h5ad(path)
    before = generate(batch_model, n_cells=80, groupby="cell_type", seed=2)
    after = generate(reread, n_cells=80, groupby="cell_type", seed=2)
    assert (before.X != after.X).nnz == 0
    asked = generate(reread, groupby="cell_type", n_per_group={"type_1": 4}, seed=2)
    synthetic_path = tmp_path / "synthetic.h5ad"
    asked.write_h5ad(synthetic_path)
    back = ad.read_h5ad(synthetic_path)
    assert back.uns["synthetic"]["model_params"]["tool"] == "vae"
    assert list(back.uns["synthetic"]["params"]["n_per_group"]) == [0, 4, 0]
    assert back.obs["cell_type"].tolist() == ["type_1"] * 4


@pytest.mark.parametrize("likelihood", ["poisson", "zinb"])
def test_other_count_likelihoods(likelihood):
    adata = _data()
    dgm.tl.vae(adata, likelihood=likelihood, max_epochs=10, **TRAIN)
    synthetic = generate(adata, n_cells=50, seed=0)
    values = synthetic.X.data
    assert sp.issparse(synthetic.X) and values.min() >= 0 and np.array_equal(values, np.round(values))


def test_bernoulli_gives_zeros_and_ones():
    adata = _data()
    dgm.pp.binarize(adata)
    dgm.tl.vae(adata, layer="binary", likelihood="bernoulli", max_epochs=100, **TRAIN)
    synthetic = generate(adata, n_cells=2000, seed=0)
    assert sp.issparse(synthetic.X) and set(np.unique(synthetic.X.data)) == {1.0}
    real = _dense(adata.layers["binary"]).mean(0)
    fake = _dense(synthetic.X).mean(0)
    assert np.corrcoef(real, fake)[0, 1] > 0.95  # measured 0.99
    with pytest.raises(ValueError, match="library_size"):
        generate(adata, library_size=100)


def test_normal_gives_finite_values():
    adata = _data()
    adata.layers["log"] = _log_normalised(adata.X).astype(np.float32)
    dgm.tl.vae(adata, layer="log", likelihood="normal", max_epochs=100, **TRAIN)
    synthetic = generate(adata, n_cells=500, seed=0)
    assert isinstance(synthetic.X, np.ndarray) and synthetic.X.dtype == np.float32
    assert np.isfinite(synthetic.X).all()
    assert np.corrcoef(adata.layers["log"].mean(0), synthetic.X.mean(0))[0, 1] > 0.95  # measured 0.99


def test_linear_decoder():
    adata = _data()
    dgm.tl.vae(adata, decoder="linear", batch_key="batch", max_epochs=10, **TRAIN)
    synthetic = generate(adata, n_cells=40, groupby="cell_type", seed=0)
    assert synthetic.shape == (40, 40) and "batch" in synthetic.obs


@pytest.mark.parametrize("kind", ["ae", "dae"])
def test_autoencoders_draw_around_their_codes(kind):
    adata = _data()
    dgm.tl.vae(adata, kind=kind, max_epochs=30, **TRAIN)
    synthetic = generate(adata, n_cells=300, groupby="cell_type", seed=0)
    assert synthetic.shape == (300, 40)
    first, second = synthetic.X[:2].toarray()
    assert not np.array_equal(first, second)
    with pytest.raises(ValueError, match='latent="prior" needs a VAE'):
        generate(adata, latent="prior")


def test_scott_bandwidth_matches_scipy():
    from scipy.stats import gaussian_kde

    codes = np.random.default_rng(0).normal(size=(50, 3)) * [1.0, 2.0, 0.5]
    expected = codes.std(0, ddof=1) * gaussian_kde(codes.T).factor
    np.testing.assert_allclose(scott_bandwidth(codes), expected)
    np.testing.assert_array_equal(scott_bandwidth(codes[:1]), 0)


def test_registry_knows_the_vae():
    assert "VAEModule" in GENERATORS and "BayesianClassifierModule" not in GENERATORS


def test_models_that_do_not_generate_are_refused(plain_model):
    adata = plain_model.copy()
    adata.uns["classifier"] = {**adata.uns["vae"], "model": {**adata.uns["vae"]["model"]}}
    adata.uns["classifier"]["model"]["class_name"] = "BayesianClassifierModule"
    with pytest.raises(ValueError, match="BayesianClassifierModule"):
        generate(adata, model_key="classifier")


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"model_key": "missing"}, KeyError, "Did not find"),
        ({"n_cells": 0}, ValueError, "n_cells"),
        ({"n_cells": 2.5}, ValueError, "n_cells"),
        ({"groupby": "not_a_column"}, KeyError, "groupby"),
        ({"groupby": "cell_type", "n_per_group": {"type_9": 3}}, ValueError, "type_9"),
        ({"groupby": "cell_type", "n_per_group": {"type_0": -1}}, ValueError, "n_per_group"),
        ({"groupby": "cell_type", "n_per_group": {"type_0": 0}}, ValueError, "n_per_group"),
        ({"groupby": "cell_type", "n_per_group": {"type_0": 3}, "n_cells": 3}, ValueError, "not both"),
        ({"n_per_group": {"type_0": 3}}, ValueError, "groupby"),
        ({"latent": "uniform"}, ValueError, "latent"),
        ({"batch": "batch_9"}, ValueError, "batch"),
        ({"key_added": ""}, ValueError, "key_added"),
        ({"key_added": "a/b"}, ValueError, "key_added"),
        ({"library_size": 0}, ValueError, "library_size"),
        ({"library_size": -5.0}, ValueError, "library_size"),
    ],
)
def test_bad_input_is_refused_before_any_work(batch_model, kwargs, error, match):
    uns_before = set(batch_model.uns)
    with pytest.raises(error, match=match):
        generate(batch_model, **kwargs)
    assert set(batch_model.uns) == uns_before


def test_empty_uns_entry_is_not_a_model(plain_model):
    adata = plain_model.copy()
    adata.uns["params_only"] = {"params": {}}
    with pytest.raises(KeyError, match="holds no trained model"):
        generate(adata, model_key="params_only")
