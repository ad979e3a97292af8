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
