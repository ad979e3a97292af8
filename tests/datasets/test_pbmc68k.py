"""pbmc68k: integer counts recovered from scanpy's bundled file, offline, and checked to be right."""

import warnings
from importlib.machinery import ModuleSpec

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

import scdgm as dgm
from scdgm.datasets import _pbmc68k


@pytest.fixture(scope="module")
def pbmc():
    return dgm.datasets.pbmc68k()


@pytest.fixture(scope="module")
def bundled():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the file's old layout
        return ad.read_h5ad(_pbmc68k._bundled_path())


def test_shape_and_names(pbmc, bundled):
    assert pbmc.shape == (700, 765)
    assert list(pbmc.var_names) == list(bundled.raw.var_names)
    assert list(pbmc.obs_names) == list(bundled.obs_names)
    assert pbmc.var_names.is_unique and pbmc.obs_names.is_unique


def test_counts_are_sparse_integers(pbmc):
    X = pbmc.X
    assert isinstance(X, sp.csr_matrix)
    assert X.dtype == np.float32
    assert X.has_canonical_format
    assert np.array_equal(X.data, np.rint(X.data))
    assert X.data.min() >= 1  # stored entries are real counts, no explicit zeros
    assert 0.6 < 1 - X.nnz / np.prod(X.shape) < 0.8  # the file's known sparsity (67%)


def test_counts_layer_is_an_equal_copy(pbmc):
    counts = pbmc.layers["counts"]
    assert counts is not pbmc.X
    assert counts.data is not pbmc.X.data and not np.shares_memory(counts.data, pbmc.X.data)
    assert (counts != pbmc.X).nnz == 0


def test_obs_fields(pbmc, bundled):
    cell_type = pbmc.obs["cell_type"]
    assert isinstance(cell_type.dtype, pd.CategoricalDtype)
    assert len(cell_type.cat.categories) == 10
    assert {"CD14+ Monocyte", "CD19+ B", "CD56+ NK", "Dendritic"} <= set(cell_type.cat.categories)
    assert (cell_type.astype(str).to_numpy() == bundled.obs["bulk_labels"].astype(str).to_numpy()).all()
    assert cell_type.value_counts()["Dendritic"] == 240

    totals = np.asarray(pbmc.X.sum(axis=1)).ravel()
    np.testing.assert_array_equal(pbmc.obs["n_counts"].to_numpy(), totals)
    assert (totals > 0).all()
    np.testing.assert_array_equal(pbmc.obs["n_genes"].to_numpy(), np.diff(pbmc.X.indptr))
    # Library sizes cover only the 765 genes kept: smaller than the whole-transcriptome totals.
    all_genes = pbmc.obs["n_counts_all_genes"].to_numpy()
    np.testing.assert_array_equal(all_genes, bundled.obs["n_counts"].to_numpy())
    assert (totals < all_genes).all()
    assert 0.1 < np.median(totals / all_genes) < 0.4


def test_normalised_counts_reproduce_scanpy_raw(pbmc, bundled):
    """log1p(counts / n_counts * 1e4) gives back the file's .raw.X: the recovery is exact."""
    raw = sp.csr_matrix(bundled.raw.X)
    X = pbmc.X
    assert ((X != 0) != (raw != 0)).nnz == 0  # same detected genes in every cell
    normalised = sp.csr_matrix(X.multiply(1e4 / pbmc.obs["n_counts_all_genes"].to_numpy()[:, None]))
    normalised.data = np.log1p(normalised.data)
    difference = np.abs((normalised - raw).toarray()).max()
    assert difference <= 1e-3
    assert pbmc.uns["dataset"]["max_log_mismatch"] == pytest.approx(5e-4, abs=1e-5)  # the file's 3 decimals


def test_uns_describes_origin(pbmc, tmp_path):
    from importlib.metadata import version

    dataset = pbmc.uns["dataset"]
    assert dataset["name"] == "pbmc68k"
    assert dataset["scanpy_version"] == version("scanpy")
    assert "10x_pbmc68k_reduced.h5ad" in dataset["source"]
    assert "expm1" in dataset["counts_recovery"]
    assert not pbmc.obsm and not pbmc.varm and set(pbmc.uns) == {"dataset"}
    pbmc.write_h5ad(tmp_path / "pbmc.h5ad")
    back = ad.read_h5ad(tmp_path / "pbmc.h5ad")
    assert back.uns["dataset"]["scanpy_version"] == dataset["scanpy_version"]
    assert (back.X != pbmc.X).nnz == 0


def test_perturbed_file_fails_loudly(monkeypatch):
    original = _pbmc68k._read_reduced

    def perturbed(path):
        reduced = original(path)
        raw = reduced.raw.to_adata()
        raw.X = sp.csr_matrix(raw.X, copy=True)
        raw.X.data[::50] += 0.01  # no longer log1p of integer counts
        reduced.raw = raw
        return reduced

    monkeypatch.setattr(_pbmc68k, "_read_reduced", perturbed)
    with pytest.raises(RuntimeError, match=r"bundled with scanpy \S+ changed: .*not a matrix of integer counts"):
        dgm.datasets.pbmc68k()


def test_file_without_raw_fails_loudly(monkeypatch):
    original = _pbmc68k._read_reduced

    def without_raw(path):
        reduced = original(path)
        del reduced.raw
        return reduced

    monkeypatch.setattr(_pbmc68k, "_read_reduced", without_raw)
    with pytest.raises(RuntimeError, match=r"changed: it has no \.raw"):
        dgm.datasets.pbmc68k()


def test_missing_file_is_a_clear_error(monkeypatch, tmp_path):
    fake = ModuleSpec("scanpy", None, origin=str(tmp_path / "__init__.py"))
    monkeypatch.setattr(_pbmc68k, "find_spec", lambda name: fake)
    with pytest.raises(FileNotFoundError, match=r"does not ship 10x_pbmc68k_reduced\.h5ad"):
        dgm.datasets.pbmc68k()
    monkeypatch.setattr(_pbmc68k, "find_spec", lambda name: None)
    with pytest.raises(FileNotFoundError, match="install scanpy"):
        dgm.datasets.pbmc68k()


def test_does_not_import_scanpy():
    import subprocess
    import sys

    code = "import sys, scdgm; scdgm.datasets.pbmc68k(); print('scanpy' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
