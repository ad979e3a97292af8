import numpy as np
import pytest

import scdgm as dgm


def test_denoise_normalises_to_library_size(trained):
    dgm.tl.denoise(trained, library_size=1e4)
    denoised = trained.layers["vae_denoised"]
    assert denoised.shape == trained.shape and denoised.dtype == np.float32
    np.testing.assert_allclose(denoised.sum(1), 1e4, rtol=1e-3)
    assert trained.uns["vae_denoised"]["params"]["library_size"] == 1e4


def test_denoise_with_observed_library_tracks_counts(trained):
    dgm.tl.denoise(trained, library_size=None, key_added="observed")
    np.testing.assert_allclose(trained.layers["observed"].sum(1), np.asarray(trained.X.sum(1)).ravel(), rtol=1e-3)
    # the model knows more about each cell than a null model without cell structure does:
    # gene means scaled to each cell's library
    counts = trained.X.toarray()
    library = counts.sum(1, keepdims=True)
    null = library * (counts.sum(0) / counts.sum())

    def r(expected):
        return np.corrcoef(np.log1p(expected.ravel()), np.log1p(counts.ravel()))[0, 1]

    assert r(trained.layers["observed"]) > r(null) + 0.02


def test_decode_batch_removes_batch_differences(trained):
    dgm.tl.denoise(trained, decode_batch="batch_0", key_added="as_0")
    dgm.tl.denoise(trained, key_added="own")
    in_batch_1 = (trained.obs["batch"] == "batch_1").to_numpy()
    assert not np.allclose(trained.layers["as_0"][in_batch_1], trained.layers["own"][in_batch_1])
    np.testing.assert_allclose(trained.layers["as_0"][~in_batch_1], trained.layers["own"][~in_batch_1], rtol=1e-4)
    with pytest.raises(ValueError, match="batch_9"):
        dgm.tl.denoise(trained, decode_batch="batch_9")


def test_denoise_needs_a_model(simulated):
    with pytest.raises(KeyError, match="Did not find .uns\\['vae'\\]"):
        dgm.tl.denoise(simulated)
    simulated.uns["vae"] = {"params": {}}
    with pytest.raises(KeyError, match="holds no trained model"):
        dgm.tl.denoise(simulated)
    assert "vae_denoised" not in simulated.layers


def test_embed_maps_reordered_query_onto_reference(trained):
    query = trained[:, ::-1].copy()
    for key in ("X_vae", "vae"):
        query.obsm.pop(key, None)
        query.uns.pop(key, None)
    dgm.tl.embed(query, reference=trained)
    np.testing.assert_allclose(query.obsm["X_vae"], trained.obsm["X_vae"], atol=1e-5)
    dgm.tl.denoise(query)  # the model travelled with the query
    assert query.layers["vae_denoised"].shape == query.shape


def test_embed_rejects_missing_genes(trained):
    query = trained[:, :30].copy()
    with pytest.raises(ValueError, match="30 of them are missing"):
        dgm.tl.embed(query, reference=trained)


def test_embed_rejects_unknown_batches(trained):
    query = trained[:50].copy()
    for key in ("X_vae", "vae"):
        query.obsm.pop(key, None)
        query.uns.pop(key, None)
    query.obs["batch"] = query.obs["batch"].cat.rename_categories({"batch_0": "batch_new"})
    with pytest.raises(ValueError, match=r"unknown \['batch_new'\]"):
        dgm.tl.embed(query, reference=trained)
    assert "X_vae" not in query.obsm and "vae" not in query.uns


# --------------------------------------------------------------------------------------------------
# regression tests of the reliability sweep
def _keys(adata):
    return {slot: set(getattr(adata, slot).keys()) for slot in ("obs", "obsm", "varm", "layers", "uns")}


def _fit(adata, **kwargs):
    dgm.tl.vae(adata, **{"n_latent": 3, "n_hidden": 8, "max_epochs": 3, "batch_size": 32, "seed": 0, **kwargs})


def _query_of(adata):
    """``adata`` without the model and the outputs of its training, as a query for ``embed``."""
    query = adata.copy()
    for key in ("X_vae", "vae"):
        query.obsm.pop(key, None)
        query.uns.pop(key, None)
    return query


def test_denoise_writes_the_layer_in_the_gene_order_of_adata(trained):
    dgm.tl.denoise(trained)
    order = np.random.default_rng(0).permutation(trained.n_vars)
    permuted = trained[:, order].copy()
    del permuted.layers["vae_denoised"]
    dgm.tl.denoise(permuted)
    np.testing.assert_allclose(permuted.layers["vae_denoised"], trained.layers["vae_denoised"][:, order], rtol=1e-5)


def test_denoise_leaves_genes_the_model_lacks_nan(trained):
    import anndata as ad
    import scipy.sparse as sp

    dgm.tl.denoise(trained)
    extra = sp.csr_matrix(np.random.default_rng(0).poisson(1.0, (trained.n_obs, 3)).astype(np.float32))
    wider = ad.AnnData(sp.hstack([extra, trained.X]).tocsr(), obs=trained.obs.copy(), uns=dict(trained.uns))
    wider.var_names = ["extra_0", "extra_1", "extra_2", *trained.var_names]
    dgm.tl.denoise(wider, key_added="wide")
    layer = wider.layers["wide"]
    assert layer.shape == wider.shape
    assert np.isnan(layer[:, :3]).all()
    np.testing.assert_allclose(layer[:, 3:], trained.layers["vae_denoised"], rtol=1e-5)


@pytest.mark.parametrize("key_added", ["", "run/1"])
def test_denoise_refuses_an_unusable_key_added(trained, key_added):
    before = _keys(trained)
    with pytest.raises(ValueError, match="key_added"):
        dgm.tl.denoise(trained, key_added=key_added)
    assert _keys(trained) == before


@pytest.mark.parametrize("key_added", ["", "run/1"])
def test_embed_refuses_an_unusable_key_added(trained, key_added):
    query = _query_of(trained)
    before = _keys(query)
    with pytest.raises(ValueError, match="key_added"):
        dgm.tl.embed(query, reference=trained, key_added=key_added)
    assert _keys(query) == before


def test_embed_refuses_a_query_with_repeated_gene_names(trained):
    query = _query_of(trained)
    query.var_names = [*query.var_names[:-1], query.var_names[0]]
    before = _keys(query)
    with pytest.raises(ValueError, match=r"var_names_make_unique\(\)"):
        dgm.tl.embed(query, reference=trained)
    assert _keys(query) == before


def test_denoise_never_replaces_the_model_it_reads(trained):
    before = _keys(trained)
    with pytest.raises(ValueError, match=r"key_added='vae' would replace .uns\['vae'\], which holds a trained model"):
        dgm.tl.denoise(trained, key_added="vae")
    assert _keys(trained) == before
    assert "model" in trained.uns["vae"] and "history" in trained.uns["vae"]
    dgm.get_model(trained, "vae")


def test_embed_of_the_reference_into_itself_keeps_its_model(trained):
    entry = trained.uns["vae"]
    history = {k: np.array(v) for k, v in entry["history"].items()}
    split = np.array(entry["split"]["validation_indices"])
    params = dict(entry["params"])
    latent = trained.obsm["X_vae"].copy()
    dgm.tl.embed(trained, reference=trained)
    np.testing.assert_allclose(trained.obsm["X_vae_embed"], latent, atol=1e-5)
    assert trained.uns["vae_embed"]["params"]["tool"] == "embed"
    entry = trained.uns["vae"]
    assert set(entry) >= {"params", "history", "metrics", "model", "split"}
    assert dict(entry["params"]) == params
    np.testing.assert_array_equal(entry["split"]["validation_indices"], split)
    for name, values in history.items():
        np.testing.assert_array_equal(entry["history"][name], values)
    np.testing.assert_array_equal(trained.obsm["X_vae"], latent)


def _assert_rng_untouched(call):
    import torch

    torch.manual_seed(0)
    state = torch.get_rng_state()
    call()
    assert torch.equal(torch.get_rng_state(), state)


def test_denoise_leaves_the_torch_random_state_alone(trained):
    _assert_rng_untouched(lambda: dgm.tl.denoise(trained))


def test_embed_leaves_the_torch_random_state_alone(trained):
    query = _query_of(trained)
    _assert_rng_untouched(lambda: dgm.tl.embed(query, reference=trained))


@pytest.mark.parametrize("library_size", ["1e4", float("inf")])
def test_denoise_names_a_bad_library_size(trained, library_size):
    before = _keys(trained)
    with pytest.raises(ValueError, match="library_size must be a finite number > 0"):
        dgm.tl.denoise(trained, library_size=library_size)
    assert _keys(trained) == before


def test_denoise_refuses_a_damaged_or_newer_record(trained):
    from scdgm._models import ModelRecordError

    damaged = trained.copy()
    del damaged.uns["vae"]["model"]["state_dict"]
    with pytest.raises(ModelRecordError, match=r"\.uns\['vae'\]\['model'\] is damaged: it lacks \['state_dict'\]"):
        dgm.tl.denoise(damaged)
    assert "vae_denoised" not in damaged.layers
    newer = trained.copy()
    newer.uns["vae"]["model"]["schema_version"] = 99
    with pytest.raises(ModelRecordError, match="written by a newer scdgm.*Upgrade scdgm"):
        dgm.tl.denoise(newer)
    assert "vae_denoised" not in newer.layers


def test_embed_reads_the_query_x_when_it_lacks_the_training_layer(simulated):
    reference = simulated.copy()
    reference.X = np.log1p(reference.layers["counts"].toarray())  # .X is not counts: only the layer trains
    _fit(reference, layer="counts")
    query = simulated.copy()
    query.X = simulated.layers["counts"].copy()
    del query.layers["counts"]
    dgm.tl.embed(query, reference=reference)
    np.testing.assert_allclose(query.obsm["X_vae"], reference.obsm["X_vae"], atol=1e-5)


def test_embed_warns_about_all_zero_genes_without_advising_to_filter_them(trained):
    from scdgm._warnings import ScdgmWarning

    query = _query_of(trained)
    X = query.X.toarray()
    X[:, 5] = 0
    query.X = X
    with pytest.warns(ScdgmWarning, match="zero in every cell") as record:
        dgm.tl.embed(query, reference=trained)
    messages = " ".join(str(w.message) for w in record)
    assert "filter_genes" not in messages
    assert query.obsm["X_vae"].shape == (query.n_obs, 4)


def test_embed_missing_genes_error_says_where_the_model_names_are(trained):
    query = _query_of(trained)[:, 5:].copy()
    with pytest.raises(ValueError, match=r"5 of them are missing") as info:
        dgm.tl.embed(query, reference=trained)
    assert "model_var_names" not in str(info.value)
    assert ".uns['vae']['model']['var_names']" in str(info.value)
    assert "X_vae" not in query.obsm


@pytest.fixture
def _restore_settings():
    seed, device = dgm.settings.seed, dgm.settings.device
    yield
    dgm.settings.seed, dgm.settings.device = seed, device


@pytest.mark.usefixtures("_restore_settings")
def test_denoise_follows_the_settings_seed(trained):
    dgm.tl.denoise(trained, n_samples=3, seed=5, key_added="seed5")
    dgm.settings.seed = 5
    dgm.tl.denoise(trained, n_samples=3, key_added="default")
    np.testing.assert_array_equal(trained.layers["default"], trained.layers["seed5"])
    assert trained.uns["default"]["params"]["seed"] == 5


def test_denoise_log1p_and_its_warning_against_testing(trained):
    import logging

    assert "differential_expression" in dgm.tl.denoise.__doc__
    dgm.tl.denoise(trained, key_added="plain")
    records = []
    handler = logging.Handler()
    handler.emit = records.append
    logger = logging.getLogger("scdgm")
    logger.addHandler(handler)
    dgm.settings.verbosity = 2
    try:
        dgm.tl.denoise(trained, log1p=True, key_added="logged")
    finally:
        logger.removeHandler(handler)
        dgm.settings.verbosity = 1
    np.testing.assert_allclose(trained.layers["logged"], np.log1p(trained.layers["plain"]), rtol=1e-5)
    assert trained.uns["logged"]["params"]["log1p"] is True
    said = " ".join(record.getMessage() for record in records)
    assert "not data" in said and "dgm.tl.differential_expression" in said
    with pytest.raises(ValueError, match="log1p"):
        dgm.tl.denoise(trained, log1p="yes")
