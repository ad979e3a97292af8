"""Tiny seeded AnnData for the data-layer tests, in every storage format the layer accepts."""

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

N_OBS, N_VARS = 40, 20


def make_counts(n_obs: int = N_OBS, n_vars: int = N_VARS, seed: int = 0) -> np.ndarray:
    """Poisson counts with no empty cell and no all-zero gene."""
    rng = np.random.default_rng(seed)
    counts = rng.poisson(1.0, size=(n_obs, n_vars)).astype(np.float32)
    counts[np.arange(n_obs), np.arange(n_obs) % n_vars] += 1
    counts[np.arange(n_vars) % n_obs, np.arange(n_vars)] += 1
    return counts


def make_adata(X=None, seed: int = 0) -> ad.AnnData:
    counts = make_counts(seed=seed)
    n_obs, n_vars = counts.shape
    rng = np.random.default_rng(seed + 1)
    obs = pd.DataFrame(
        {
            "batch": pd.Categorical(rng.choice(["b1", "b0"], n_obs), categories=["b1", "b0"]),
            "cell_type": rng.choice(["T", "B", "NK"], n_obs),
        },
        index=[f"cell_{i}" for i in range(n_obs)],
    )
    var = pd.DataFrame(index=[f"gene_{j}" for j in range(n_vars)])
    adata = ad.AnnData(counts if X is None else X, obs=obs, var=var)
    adata.layers["counts"] = counts.copy()
    adata.obsm["X_pca"] = rng.normal(size=(n_obs, 5)).astype(np.float32)
    return adata


@pytest.fixture
def adata() -> ad.AnnData:
    """40 cells x 20 genes of dense float32 counts, with batch, cell_type, a counts layer and X_pca."""
    return make_adata()


@pytest.fixture
def in_format(tmp_path):
    """Build the toy AnnData in a storage format; returns ``(adata, dense X as numpy)``."""
    opened = []

    def build(fmt: str):
        base = make_adata()
        dense = np.asarray(base.X)
        if fmt == "dense":
            return base, dense
        if fmt == "csr":
            base.X = sp.csr_matrix(dense)
            return base, dense
        if fmt == "csc":
            base.X = sp.csc_matrix(dense)
            return base, dense
        if fmt == "view":
            keep = np.arange(base.n_obs)[::-1][: base.n_obs - 5]
            base.X = sp.csr_matrix(dense)
            return base[keep], dense[keep]
        if fmt.startswith("backed"):
            if fmt == "backed_csr":
                base.X = sp.csr_matrix(dense)
            path = tmp_path / f"{fmt}.h5ad"
            base.write_h5ad(path)
            backed = ad.read_h5ad(path, backed="r")
            opened.append(backed)
            return backed, dense
        raise ValueError(fmt)

    yield build
    for backed in opened:
        backed.file.close()
