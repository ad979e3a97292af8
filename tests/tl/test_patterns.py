"""tl.pattern_extractor on small trained models: what it writes, reproducibility, round trip and bad input."""

import anndata as ad
import numpy as np
import pytest

import scdgm as dgm

from .conftest import binary_simulation

TINY = {"pretrain_epochs": 2, "max_epochs": 3, "cooldown_epochs": 2, "n_chains": 20, "gibbs_steps": 1, "n_ais_runs": 10}
FAST = {"n_samples": 600, "burn_in": 20, "thinning": 2, "seed": 0}


def _binary(n_obs=120, n_vars=20, seed=0):
    return binary_simulation(n_obs, n_vars, seed)


@pytest.fixture(scope="module")
def _trained():
    adata = _binary()
    dgm.tl.dbm(adata, n_hidden=(8, 3), n_ais_temperatures=50, seed=0, **TINY)
    return adata


@pytest.fixture
def trained(_trained):
    """120 binarised cells x 20 genes with a small DBM (8 + 3 hidden units) under "dbm"."""
    return _trained.copy()


def test_writes_genes_patterns_and_coordinates(trained):
    dgm.tl.pattern_extractor(trained, n_genes=4, n_patterns=6, **FAST)
    entry = trained.uns["patterns"]
    assert len(entry["genes"]) == 4 and set(entry["genes"]) <= set(trained.var_names)
    assert len(set(entry["genes"])) == 4
    assert entry["deviance"].shape == (4,) and np.all(entry["deviance"] > 0)
    assert entry["hidden_units"].max() < 3  # the top layer by default
    n = len(entry["labels"])
    assert 1 <= n <= 6
    assert entry["patterns"].shape == (n, 4) and entry["patterns"].dtype == np.int8
    assert list(entry["labels"]) == ["".join(map(str, p)) for p in entry["patterns"]]
    frequency = entry["frequency"]
    assert np.all(np.diff(frequency) <= 0) and frequency.sum() <= 1 + 1e-12
    assert np.all((entry["frequency_observed"] >= 0) & (entry["frequency_observed"] <= 1))
    assert entry["hidden_activity"].shape == (n, 3)
    assert entry["distances"].shape == (n, n) and entry["coordinates"].shape == (n, 2)
    params = entry["params"]
    assert params["tool"] == "pattern_extractor" and params["hidden_layer"] == 2 and params["burn_in"] == 20
    table = dgm.get.patterns(trained)
    assert list(table.columns[:5]) == ["pattern", "frequency", "frequency_observed", "x", "y"]
    assert list(table.columns[5:]) == list(entry["genes"])
    genes = dgm.get.patterns(trained, table="genes")
    assert list(genes["gene"]) == list(entry["genes"]) and list(genes["step"]) == [0, 1, 2, 3]


def test_observed_frequencies_count_the_cells(trained):
    dgm.tl.pattern_extractor(trained, n_genes=2, n_patterns=4, **FAST)
    entry = trained.uns["patterns"]
    states = trained[:, list(entry["genes"])].layers["binary"].toarray().astype(int)
    for pattern, observed in zip(entry["patterns"], entry["frequency_observed"], strict=True):
        assert observed == pytest.approx(np.mean(np.all(states == pattern, axis=1)))


def test_same_seed_same_result_and_first_hidden_layer(trained):
    first = dgm.tl.pattern_extractor(trained, n_genes=3, copy=True, **FAST)
    second = dgm.tl.pattern_extractor(trained, n_genes=3, copy=True, **FAST)
    assert "patterns" not in trained.uns
    np.testing.assert_array_equal(first.uns["patterns"]["coordinates"], second.uns["patterns"]["coordinates"])
    assert list(first.uns["patterns"]["genes"]) == list(second.uns["patterns"]["genes"])
    lower = dgm.tl.pattern_extractor(trained, n_genes=3, hidden_layer=1, copy=True, **FAST)
    assert lower.uns["patterns"]["hidden_activity"].shape[1] == 8


def test_bernoulli_vae(trained):
    dgm.tl.vae(trained, layer="binary", likelihood="bernoulli", n_latent=3, n_hidden=8, max_epochs=2, batch_size=32)
    dgm.tl.pattern_extractor(trained, model_key="vae", n_genes=3, n_samples=500, seed=0, key_added="vae_patterns")
    entry = trained.uns["vae_patterns"]
    assert entry["hidden_activity"].shape[1] == 3 and "burn_in" not in entry["params"]
    with pytest.raises(ValueError, match="burn_in applies to Boltzmann machines"):
        dgm.tl.pattern_extractor(trained, model_key="vae", burn_in=10)


def test_round_trip(trained, tmp_path):
    dgm.tl.pattern_extractor(trained, n_genes=3, **FAST)
    path = tmp_path / "patterns.h5ad"
    trained.write_h5ad(path)
    reread = ad.read_h5ad(path)
    assert dgm.get.patterns(reread).equals(dgm.get.patterns(trained))


@pytest.mark.parametrize(
    ("arguments", "error", "message"),
    [
        ({"n_genes": 21}, ValueError, "n_genes=21 is more than the 20 genes of the model"),
        ({"n_genes": 13}, ValueError, "n_genes=13 is more than 12"),
        ({"n_genes": 0}, ValueError, "n_genes must be an integer >= 1"),
        ({"n_samples": 5}, ValueError, "n_samples must be an integer >= 10"),
        ({"hidden_layer": 3}, ValueError, "hidden_layer=3, but the model in .uns\\['dbm'\\] has 2 hidden layer"),
        ({"thinning": 0}, ValueError, "thinning must be an integer >= 1"),
        ({"model_key": "missing"}, KeyError, "Did not find .uns\\['missing'\\]"),
        (
            {"key_added": "dbm"},
            ValueError,
            "key_added='dbm' would replace .uns\\['dbm'\\], which holds a trained model",
        ),
    ],
)
def test_bad_arguments(trained, arguments, error, message):
    before = set(trained.uns)
    with pytest.raises(error, match=message):
        dgm.tl.pattern_extractor(trained, **{**FAST, **arguments})
    assert set(trained.uns) == before


def test_models_without_binary_hidden_states_are_refused(trained):
    dgm.tl.vae(trained, layer="binary", likelihood="normal", n_latent=2, n_hidden=8, max_epochs=2, batch_size=32)
    with pytest.raises(ValueError, match=r"holds a VAEModule \(kind='vae', likelihood='normal'\).*dgm\.tl\.dbm"):
        dgm.tl.pattern_extractor(trained, model_key="vae")
    assert "patterns" not in trained.uns
