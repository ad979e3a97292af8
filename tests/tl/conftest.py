"""A perturbation simulation with one cell type's perturbed cells held out, and a small VAE trained once on the rest."""

import numpy as np
import pytest

import scdgm as dgm
from scdgm.datasets._simulate import expected_proportions

HELD_OUT = "type_0"
PERTURBATION = {"condition_key": "condition", "control": "control", "perturbed": "condition_1", "groupby": "cell_type"}


def binary_simulation(n_obs=120, n_vars=24, seed=0):
    """Binarised simulated counts (``.layers["binary"]``) of ``n_vars`` genes detected in 10-90 % of the cells."""
    adata = dgm.datasets.simulate(n_obs, 4 * n_vars, n_cell_types=2, seed=seed)
    rate = np.asarray((adata.layers["counts"] > 0).mean(0)).ravel()
    adata = adata[:, np.flatnonzero((rate > 0.1) & (rate < 0.9))[:n_vars]].copy()
    dgm.pp.binarize(adata, layer="counts")
    return adata


def expected_log_expression(adata):
    """Per cell, the simulator's noise-free expected ``log1p`` counts per 10,000 (cells x genes)."""
    return np.log1p(1e4 * expected_proportions(adata))


@pytest.fixture(scope="session")
def _perturbation_data():
    """600 cells x 40 genes, 3 types, control and condition_1 (a strong, mostly shared response)."""
    return dgm.datasets.simulate(
        600,
        40,
        n_cell_types=3,
        n_conditions=2,
        n_programs=4,
        response_fraction=0.2,
        response_sd=1.5,
        response_type_sd=0.2,
        seed=0,
    )


@pytest.fixture(scope="session")
def _perturbation_model(_perturbation_data):
    adata = _perturbation_data
    held = ((adata.obs["cell_type"] == HELD_OUT) & (adata.obs["condition"] == "condition_1")).to_numpy()
    train = adata[~held].copy()
    dgm.tl.vae(train, n_latent=6, n_hidden=32, max_epochs=50, batch_size=64, seed=0)
    return train


@pytest.fixture
def perturbation_data(_perturbation_data):
    """The full simulation, held-out cells included (a fresh copy)."""
    return _perturbation_data.copy()


@pytest.fixture
def perturbation_model(_perturbation_model):
    """The simulation without type_0's perturbed cells, with an NB VAE under "vae" (a fresh copy)."""
    return _perturbation_model.copy()
