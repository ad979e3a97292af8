"""Shared fixtures: tiny seeded data, so every test is fast and offline."""

import matplotlib
import pytest

import scdgm as dgm

matplotlib.use("agg")


@pytest.fixture(autouse=True)
def _quiet():
    dgm.settings.progress_bar = False
    dgm.settings.verbosity = 1
    yield


@pytest.fixture(scope="session")
def _simulated():
    return dgm.datasets.simulate(300, 60, n_cell_types=3, n_batches=2, n_programs=4, seed=0)


@pytest.fixture
def simulated(_simulated):
    """300 cells x 60 genes of NB counts, 3 cell types, 2 batches (a fresh copy per test)."""
    return _simulated.copy()


@pytest.fixture(scope="session")
def _trained(_simulated):
    adata = _simulated.copy()
    dgm.tl.vae(adata, n_latent=4, n_hidden=32, max_epochs=60, batch_size=64, seed=0, batch_key="batch")
    return adata


@pytest.fixture
def trained(_trained):
    """``simulated`` with a small batch-conditional NB VAE trained under the key "vae"."""
    return _trained.copy()
