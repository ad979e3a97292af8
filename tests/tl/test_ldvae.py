import anndata as ad
import numpy as np
import pytest

import scdgm as dgm


@pytest.fixture(scope="module")
def _ldvae(_simulated):
    adata = _simulated.copy()
    dgm.tl.ldvae_loadings(adata, n_latent=4, max_epochs=20, batch_size=64, n_top=5, seed=0)
    return adata


def test_writes_loadings_latent_and_top_genes(_ldvae):
    adata = _ldvae
    assert adata.varm["ldvae_loadings"].shape == (60, 4)
    assert adata.varm["ldvae_loadings_unrotated"].shape == (60, 4)
    assert adata.obsm["X_ldvae"].shape == (300, 4) and adata.obsm["X_ldvae_unrotated"].shape == (300, 4)
    entry = adata.uns["ldvae"]
    assert entry["params"]["rotation"] == "varimax"
    assert entry["model"]["init_kwargs"]["decoder"] == "linear"
    top = dgm.get.top_genes(adata, "ldvae", target="factor_0", direction="positive")
    assert len(top) == 5
    best = np.argmax(adata.varm["ldvae_loadings"][:, 0])
    assert top["gene"].iloc[0] == adata.var_names[best]
    assert top["value"].iloc[0] == pytest.approx(adata.varm["ldvae_loadings"][best, 0])


def test_trains_with_the_l1_penalty_by_default_and_it_sparsifies(_ldvae, _simulated):
    from scdgm.tl._ldvae import DEFAULT_LOADINGS_L1

    params = _ldvae.uns["ldvae"]["params"]
    assert params["loadings_l1"] == DEFAULT_LOADINGS_L1
    # resolved, not the None of the defaults
    assert isinstance(params["max_epochs"], int) and isinstance(params["kl_warmup_epochs"], int)
    assert params["decoder"] == "linear" and params["tool"] == "ldvae_loadings"
    assert "train_penalty" in _ldvae.uns["ldvae"]["history"]
    adata = _simulated.copy()
    common = {"n_latent": 4, "max_epochs": 20, "batch_size": 64, "seed": 0}
    dgm.tl.ldvae_loadings(adata, loadings_l1=0.0, key_added="plain", **common)
    dgm.tl.ldvae_loadings(adata, loadings_l1=2.0, key_added="sparse", **common)
    assert "train_penalty" not in adata.uns["plain"]["history"]

    def small_share(key):
        return np.mean(np.abs(adata.varm[f"{key}_loadings_unrotated"]) < 0.05)

    assert small_share("sparse") > small_share("plain") + 0.2


def test_rotation_is_applied_to_loadings_and_latent_alike(_ldvae):
    adata = _ldvae
    transform = adata.uns["ldvae"]["rotation"]
    np.testing.assert_allclose(transform @ transform.T, np.eye(4), atol=1e-5)
    np.testing.assert_allclose(
        adata.varm["ldvae_loadings_unrotated"] @ transform, adata.varm["ldvae_loadings"], atol=1e-4
    )
    np.testing.assert_allclose(adata.obsm["X_ldvae_unrotated"] @ transform, adata.obsm["X_ldvae"], atol=1e-4)
    # the decoded log-scale is unchanged by the rotation
    np.testing.assert_allclose(
        adata.obsm["X_ldvae"] @ adata.varm["ldvae_loadings"].T,
        adata.obsm["X_ldvae_unrotated"] @ adata.varm["ldvae_loadings_unrotated"].T,
        atol=1e-3,
    )
    # oriented: each factor's largest loadings are positive; ordered by sum of squares
    values = adata.varm["ldvae_loadings"]
    assert ((values**3).sum(0) >= 0).all()
    ss = (values**2).sum(0)
    assert (np.diff(ss) <= 1e-6).all()


def test_loadings_match_the_linear_decoder(_ldvae):
    import torch

    module = dgm.get_model(_ldvae, "ldvae")
    direct = module.linear_loadings().detach().numpy()
    np.testing.assert_allclose(_ldvae.varm["ldvae_loadings_unrotated"], direct, atol=1e-6)
    assert isinstance(module, torch.nn.Module)


def test_reads_a_stored_linear_model_and_survives_h5ad(_ldvae, tmp_path):
    path = tmp_path / "l.h5ad"
    _ldvae.write_h5ad(path)
    reread = ad.read_h5ad(path)
    dgm.tl.ldvae_loadings(reread, vae_key="ldvae", key_added="again", rotation="none")
    np.testing.assert_allclose(reread.obsm["X_again_unrotated"], _ldvae.obsm["X_ldvae_unrotated"], atol=1e-5)
    assert reread.uns["again"]["params"]["vae_key"] == "ldvae"
    assert "model" not in reread.uns["again"]


def test_mlp_model_is_refused_with_advice(trained):
    with pytest.raises(ValueError, match="decoder='mlp'.*decoder='linear'"):
        dgm.tl.ldvae_loadings(trained, vae_key="vae")
    assert "ldvae_loadings" not in trained.varm


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"decoder": "mlp"}, ValueError, "linear decoder"),
        ({"n_latents": 3}, TypeError, "Unknown arguments \\['n_latents'\\]"),
        ({"rotation": "promax"}, ValueError, "rotation='promax'"),
        ({"likelihood": "gaussian"}, ValueError, "likelihood='gaussian'"),
        ({"vae_key": "vae", "n_latent": 3}, ValueError, "only apply when a model is trained here"),
        ({"loadings_l1": -0.5}, ValueError, "loadings_l1 must be a finite number >= 0"),
    ],
)
def test_bad_input(simulated, kwargs, error, match):
    with pytest.raises(error, match=match):
        dgm.tl.ldvae_loadings(simulated, max_epochs=1, **kwargs) if "vae_key" not in kwargs else dgm.tl.ldvae_loadings(
            simulated, **kwargs
        )
    assert "ldvae" not in simulated.uns


# --------------------------------------------------------------------------------------------------
# regression tests of the reliability sweep
@pytest.mark.parametrize("key_added", ["", "run/1"])
def test_unusable_key_added_is_refused_before_training(simulated, monkeypatch, key_added):
    import scdgm.train._fit as fit_module

    def started(*args, **kwargs):
        msg = "training started"
        raise AssertionError(msg)

    monkeypatch.setattr(fit_module, "_run_epoch", started)
    before = {slot: set(getattr(simulated, slot).keys()) for slot in ("obs", "obsm", "varm", "layers", "uns")}
    with pytest.raises(ValueError, match=f"key_added={key_added!r} is not a usable key"):
        dgm.tl.ldvae_loadings(simulated, n_latent=3, n_hidden=8, max_epochs=2, batch_size=32, key_added=key_added)
    assert {slot: set(getattr(simulated, slot).keys()) for slot in before} == before


def test_default_run_is_twice_as_long_as_a_vae_s(simulated, monkeypatch):
    from scdgm.tl import _vae
    from scdgm.train import default_max_epochs

    seen = {}

    def capture(adata, options, *, device, seed):
        seen["options"] = options
        raise RuntimeError("stop before training")

    monkeypatch.setattr(_vae, "train_vae", capture)
    with pytest.raises(RuntimeError, match="stop before training"):
        dgm.tl.ldvae_loadings(simulated, n_latent=4)
    assert seen["options"].max_epochs == 2 * default_max_epochs(270)  # 300 cells, 10 % held out
    with pytest.raises(RuntimeError, match="stop before training"):
        dgm.tl.ldvae_loadings(simulated, n_latent=4, max_epochs=7)
    assert seen["options"].max_epochs == 7
    with pytest.raises(ValueError, match="validation_fraction must be"):
        dgm.tl.ldvae_loadings(simulated, n_latent=4, validation_fraction=1.5)
