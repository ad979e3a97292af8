import numpy as np
import scipy.sparse as sp

import scdgm as dgm


def test_binarize_sparse_and_dense(simulated):
    dgm.pp.binarize(simulated, layer="counts", threshold=1)
    binary = simulated.layers["binary"]
    assert sp.issparse(binary)
    np.testing.assert_array_equal(binary.toarray(), (simulated.layers["counts"].toarray() > 1).astype(np.float32))
    dense = simulated.copy()
    dense.X = dense.X.toarray()
    out = dgm.pp.binarize(dense, key_added="detected", copy=True)
    np.testing.assert_array_equal(out.layers["detected"], (dense.X > 0).astype(np.float32))
    assert "detected" not in dense.layers


def test_binarize_unknown_layer(simulated):
    import pytest

    with pytest.raises(KeyError, match="available layers"):
        dgm.pp.binarize(simulated, layer="spliced")


def _unchanged(adata, before):
    assert list(adata.layers) == before


def test_binarize_refuses_backed_x(simulated, tmp_path):
    import anndata as ad
    import pytest

    path = tmp_path / "simulated.h5ad"
    simulated.write_h5ad(path)
    backed = ad.read_h5ad(path, backed="r")
    with pytest.raises(ValueError, match=r"needs the data in memory.*to_memory\(\)"):
        dgm.pp.binarize(backed)
    with pytest.raises(ValueError, match="copy=True cannot copy a backed AnnData"):
        dgm.pp.binarize(backed, layer="counts", copy=True)
    _unchanged(backed, ["counts"])
    dgm.pp.binarize(backed, layer="counts")  # layers of a backed AnnData are in memory
    assert sp.issparse(backed.layers["binary"])
    backed.file.close()


def test_binarize_refuses_nan(simulated):
    import pytest

    dense = simulated.layers["counts"].toarray().astype(np.float32)
    dense[0, :3] = np.nan
    simulated.X = dense
    with pytest.raises(ValueError, match=r"adata.X holds 3 NaN entries.*Fill them"):
        dgm.pp.binarize(simulated)
    sparse = simulated.layers["counts"].astype(np.float32)
    sparse.data[:2] = np.nan
    simulated.layers["counts"] = sparse
    with pytest.raises(ValueError, match=r"adata.layers\['counts'\] holds 2 NaN entries"):
        dgm.pp.binarize(simulated, layer="counts")
    _unchanged(simulated, ["counts"])
    simulated.X = np.where(np.isnan(dense), np.inf, dense)
    dgm.pp.binarize(simulated)  # infinite values are unambiguous
    assert simulated.layers["binary"][0, :3].tolist() == [1, 1, 1]


def test_binarize_checks_threshold(simulated):
    import pytest

    for bad in ["0.5", True, None, [1]]:
        with pytest.raises(TypeError, match=r"threshold=.* must be a real number"):
            dgm.pp.binarize(simulated, layer="counts", threshold=bad)
    with pytest.raises(ValueError, match=r"threshold=nan must be a finite number"):
        dgm.pp.binarize(simulated, layer="counts", threshold=float("nan"))
    _unchanged(simulated, ["counts"])
    dgm.pp.binarize(simulated, layer="counts", threshold=np.float32(1.0), key_added="numpy")
    dgm.pp.binarize(simulated, layer="counts", threshold=np.int64(1), key_added="integer")
    np.testing.assert_array_equal(simulated.layers["numpy"].toarray(), simulated.layers["integer"].toarray())


def test_binarize_checks_key_added(simulated):
    import pytest

    for bad in ["", "binary/detected"]:
        with pytest.raises(ValueError, match=r"key_added=.* must be a non-empty string without '/'"):
            dgm.pp.binarize(simulated, layer="counts", key_added=bad)
    with pytest.raises(TypeError, match=r"key_added=1 must be a string"):
        dgm.pp.binarize(simulated, layer="counts", key_added=1)
    _unchanged(simulated, ["counts"])
