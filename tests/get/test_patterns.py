"""dgm.get.patterns: the stored patterns and selected genes as tidy tables."""

import numpy as np
import pytest
from anndata import AnnData

import scdgm as dgm


@pytest.fixture
def adata():
    adata = AnnData(np.zeros((2, 3), dtype=np.float32))
    adata.uns["patterns"] = {
        "genes": np.array(["CD3D", "LYZ"], dtype=object),
        "deviance": np.array([12.0, 3.5]),
        "hidden_units": np.array([2, 0]),
        "patterns": np.array([[1, 0], [0, 1]], dtype=np.int8),
        "labels": np.array(["10", "01"], dtype=object),
        "frequency": np.array([0.6, 0.3]),
        "frequency_observed": np.array([0.5, 0.4]),
        "coordinates": np.array([[0.1, 0.2], [-0.1, -0.2]]),
    }
    return adata


def test_patterns_table(adata):
    table = dgm.get.patterns(adata)
    assert list(table.columns) == ["pattern", "frequency", "frequency_observed", "x", "y", "CD3D", "LYZ"]
    assert list(table["pattern"]) == ["10", "01"]
    assert list(table["CD3D"]) == [1, 0] and table.loc[1, "y"] == -0.2


def test_genes_table(adata):
    table = dgm.get.patterns(adata, table="genes")
    assert list(table.columns) == ["step", "gene", "deviance", "hidden_unit"]
    assert list(table["gene"]) == ["CD3D", "LYZ"] and list(table["hidden_unit"]) == [2, 0]


def test_errors(adata):
    with pytest.raises(KeyError, match=r"Run `dgm.tl.pattern_extractor\(adata\)` first"):
        dgm.get.patterns(AnnData(np.zeros((2, 3), dtype=np.float32)))
    del adata.uns["patterns"]["coordinates"]
    with pytest.raises(KeyError, match="not written by `dgm.tl.pattern_extractor`"):
        dgm.get.patterns(adata)
    adata.uns["patterns"]["coordinates"] = np.zeros((2, 2))
    with pytest.raises(ValueError, match="table='all' is not supported"):
        dgm.get.patterns(adata, table="all")
