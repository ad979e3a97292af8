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
