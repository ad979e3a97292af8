"""dgm.get.perturbation and dgm.get.differential_expression, read from hand-built .uns entries."""

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scanpy as sc

import scdgm as dgm

GROUPS = ["B cell", "CD4+/CD25 T Reg"]  # "/" would break an h5ad key, not a recarray field


def _roundtrip(adata, tmp_path):
    path = tmp_path / "stored.h5ad"
    adata.write_h5ad(path)
    return ad.read_h5ad(path)


def test_perturbation_table(tmp_path):
    adata = ad.AnnData(np.zeros((2, 3), dtype=np.float32))
    adata.uns["perturbation"] = {
        "delta": np.array([1.0, 0.0]),
        "groups": np.array(GROUPS, dtype=object),
        "group_deltas": np.array([[2.0, 0.0], [0.0, 1.0]]),
        "n_control": np.array([10, 20]),
        "n_perturbed": np.array([5, 7]),
    }
    table = dgm.get.perturbation(_roundtrip(adata, tmp_path))
    assert list(table["group"]) == [*GROUPS, "delta"]
    assert list(table["n_control"]) == [10, 20, 30] and list(table["n_perturbed"]) == [5, 7, 12]
    np.testing.assert_allclose(table["norm"], [2, 1, 1])
    np.testing.assert_allclose(table["cosine"], [1, 0, 1])
    np.testing.assert_allclose(table[["latent_0", "latent_1"]], [[2, 0], [0, 1], [1, 0]])
    with pytest.raises(KeyError, match=r"Run `dgm.tl.predict_perturbation\(adata, .*key_added='stim'"):
        dgm.get.perturbation(adata, key="stim")
    adata.uns["broken"] = {"delta": np.zeros(2)}
    with pytest.raises(KeyError, match="lacks"):
        dgm.get.perturbation(adata, key="broken")


@pytest.fixture
def de_result():
    """Three genes ranked for two groups, in the layout tl.differential_expression writes."""
    adata = ad.AnnData(np.zeros((4, 3), dtype=np.float32))
    adata.var_names = ["g0", "g1", "g2"]
    adata.obs["cell_type"] = pd.Categorical([GROUPS[0]] * 2 + [GROUPS[1]] * 2)
    ranked = {GROUPS[0]: ["g2", "g0", "g1"], GROUPS[1]: ["g1", "g0", "g2"]}
    proba = {GROUPS[0]: [1.0, 0.9, 0.1], GROUPS[1]: [0.98, 0.5, 0.2]}
    fields = {
        "names": (ranked, "O"),
        "scores": ({g: [3.0, 1.0, 0.0] for g in GROUPS}, "float32"),
        "logfoldchanges": ({g: [2.0, 0.5, 0.0] for g in GROUPS}, "float32"),
        "pvals": ({g: 1 - np.array(p) for g, p in proba.items()}, "float64"),
        "pvals_adj": ({GROUPS[0]: [0.0, 0.05, 0.37], GROUPS[1]: [0.02, 0.26, 0.44]}, "float64"),
        "lfc_median": ({g: [2.0, 0.4, 0.0] for g in GROUPS}, "float32"),
        "lfc_sd": ({g: [0.3, 0.2, 0.1] for g in GROUPS}, "float32"),
        "proba_de": (proba, "float64"),
        "expression_group": ({g: [10.0, 5.0, 1.0] for g in GROUPS}, "float32"),
        "expression_reference": ({g: [2.5, 3.5, 1.0] for g in GROUPS}, "float32"),
    }
    adata.uns["rank_genes_groups_vae"] = {
        name: pd.DataFrame(values).to_records(index=False, column_dtypes=dtype)
        for name, (values, dtype) in fields.items()
    }
    adata.uns["rank_genes_groups_vae"]["params"] = {
        "groupby": "cell_type",
        "reference": "rest",
        "method": "scdgm",
        "use_raw": False,
        "fdr": 0.05,
    }
    return adata


def test_differential_expression_table(de_result, tmp_path):
    adata = _roundtrip(de_result, tmp_path)
    one = dgm.get.differential_expression(adata, GROUPS[1])
    assert "group" not in one and list(one["names"]) == ["g1", "g0", "g2"]
    assert list(one["is_de"]) == [True, False, False]
    assert list(one.columns[:5]) == list(
        sc.get.rank_genes_groups_df(adata, GROUPS[1], key="rank_genes_groups_vae").columns
    )
    both = dgm.get.differential_expression(adata)
    assert list(both["group"].cat.categories) == GROUPS and len(both) == 6
    assert list(both.loc[both["group"] == GROUPS[0], "is_de"]) == [True, True, False]
    np.testing.assert_allclose(both["lfc_sd"], [0.3, 0.2, 0.1] * 2, rtol=1e-6)
    with pytest.raises(KeyError, match="group 'NK'"):
        dgm.get.differential_expression(adata, "NK")
    with pytest.raises(
        KeyError, match=r"Run `dgm.tl.differential_expression\(adata, key_added='other', groupby=...\)`"
    ):
        dgm.get.differential_expression(adata, key="other")
