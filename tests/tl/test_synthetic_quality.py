"""tl.synthetic_quality on simulated counts: layout, the real-vs-real control, what it detects, and refusals."""

import re

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

import scdgm as dgm
from scdgm._synthetic_metrics import METRICS

FAST = {"n_permutations": 200, "seed": 0}
MIN_PER_SIDE = 10


def _dense(adata):
    return adata.X.toarray() if sp.issparse(adata.X) else np.asarray(adata.X)


def _halves(adata):
    return adata[::2].copy(), adata[1::2].copy()


@pytest.fixture(scope="module")
def _plain():
    return _halves(dgm.datasets.simulate(400, 50, seed=0))


@pytest.fixture
def plain(_plain):
    """Synthetic = one half of a simulated data set, reference = the other half (same distribution)."""
    return _plain[0].copy(), _plain[1].copy()


@pytest.fixture(scope="module")
def _structured():
    adata = dgm.datasets.simulate(400, 50, n_cell_types=3, marker_fold_change=20, mean_library_size=1000, seed=0)
    return _halves(adata)


@pytest.fixture
def structured(_structured):
    """Like ``plain``, with strong gene-gene structure (three cell types with 20-fold markers)."""
    return _structured[0].copy(), _structured[1].copy()


def _values(table, comparison, group="all"):
    rows = table[(table["comparison"] == comparison) & (table["group"] == group)]
    return dict(zip(rows["metric"], rows["value"], strict=True))


def test_table_layout_and_record(plain):
    synthetic, reference = plain
    table = dgm.tl.synthetic_quality(synthetic, reference=reference, **FAST)
    assert list(table.columns) == ["comparison", "group", "metric", "value"]
    assert len(table) == 2 * len(METRICS)
    assert table["comparison"].tolist() == ["synthetic"] * len(METRICS) + ["control"] * len(METRICS)
    assert set(table["group"]) == {"all"}
    assert table["metric"].tolist() == list(METRICS) * 2
    assert table["value"].dtype == np.float64

    stored = synthetic.uns["synthetic_quality"]
    assert set(stored) == {"comparison", "group", "metric", "value", "params"}
    np.testing.assert_array_equal(stored["value"], table["value"].to_numpy())
    params = stored["params"]
    assert params["tool"] == "synthetic_quality"
    assert params["seed"] == 0 and params["n_permutations"] == 200 and params["max_cells"] == 5000
    assert params["data_kind"] == "counts"
    assert params["n_obs"] == 200 and params["n_obs_reference"] == 200
    pd.testing.assert_frame_equal(dgm.get.synthetic_quality(synthetic), table)
    assert "synthetic_quality" not in reference.uns

    # the reference is split 100 / 100; the 200 synthetic cells are subsampled to the 100 of half B
    for comparison in ("synthetic", "control"):
        values = _values(table, comparison)
        assert values["n_reference_cells"] == 100 and values["n_cells"] == 100
        assert 0 <= values["energy_pvalue"] <= 1 and 0 <= values["classifier_auroc"] <= 1


def test_same_distribution_looks_like_the_control(plain):
    synthetic, reference = plain
    table = dgm.tl.synthetic_quality(synthetic, reference=reference, **FAST)
    values, control = _values(table, "synthetic"), _values(table, "control")
    assert abs(values["classifier_auroc"] - 0.5) < 0.15
    assert values["energy_pvalue"] > 0.01
    assert values["gene_mean_pearson"] > 0.9 and control["gene_mean_pearson"] > 0.9
    assert values["cell_library_size_ks"] < 0.3 and control["cell_library_size_ks"] < 0.3


def test_scaled_counts_are_caught_by_the_marginals(plain):
    synthetic, reference = plain
    synthetic.X = sp.csr_matrix(_dense(synthetic) * 3)
    table = dgm.tl.synthetic_quality(synthetic, reference=reference, **FAST)
    values, control = _values(table, "synthetic"), _values(table, "control")
    assert values["cell_library_size_ks"] > control["cell_library_size_ks"] + 0.4
    assert values["gene_mean_ks"] > control["gene_mean_ks"] + 0.1
    assert values["gene_expression_ks"] > 2 * control["gene_expression_ks"]


def test_shuffled_genes_lose_the_correlations(structured):
    synthetic, reference = structured
    counts = _dense(synthetic)
    rng = np.random.default_rng(1)
    # each gene's values permuted across cells: marginals kept, gene-gene structure destroyed
    synthetic.X = np.stack([rng.permutation(counts[:, g]) for g in range(counts.shape[1])], axis=1)
    table = dgm.tl.synthetic_quality(synthetic, reference=reference, **FAST)
    values, control = _values(table, "synthetic"), _values(table, "control")
    assert control["correlation_pearson"] > 0.6
    assert values["correlation_pearson"] < control["correlation_pearson"] - 0.5
    assert values["correlation_mae"] > control["correlation_mae"] + 0.03
    assert values["log_odds_ratio_pearson"] < control["log_odds_ratio_pearson"] - 0.1
    assert values["classifier_auroc"] > 0.85 and abs(control["classifier_auroc"] - 0.5) < 0.15
    assert values["energy_pvalue"] < 0.02 and control["energy_pvalue"] > 0.05
    assert values["mmd2"] > control["mmd2"]
    assert values["gene_mean_pearson"] > 0.95  # the marginals are untouched


def test_groups_with_slashes_survive_h5ad(plain, tmp_path):
    synthetic, reference = plain
    for adata in (synthetic, reference):
        adata.obs["cell_type"] = adata.obs["cell_type"].astype(str).str.replace("type_", "CD4+/T ")
    table = dgm.tl.synthetic_quality(synthetic, reference=reference, groupby="cell_type", n_permutations=50, seed=0)
    groups = list(dict.fromkeys(table["group"]))
    assert groups[0] == "all" and len(groups) > 2
    assert all(g.startswith("CD4+/T ") for g in groups[1:])
    for group in groups[1:]:
        for comparison in ("synthetic", "control"):
            values = _values(table, comparison, group)
            in_group = (reference.obs["cell_type"] == group).sum()
            assert MIN_PER_SIDE <= values["n_cells"] <= in_group // 2
    path = tmp_path / "synthetic.h5ad"
    synthetic.write_h5ad(path)
    back = ad.read_h5ad(path)
    pd.testing.assert_frame_equal(dgm.get.synthetic_quality(back), table)
    wide = dgm.get.synthetic_quality(back, wide=True)
    assert list(wide.columns) == ["comparison", "group", *METRICS]
    assert len(wide) == 2 * len(groups)
    assert back.uns["synthetic_quality"]["params"]["groupby"] == "cell_type"


def test_small_groups_are_skipped_with_a_warning(plain, caplog):
    synthetic, reference = plain
    for adata in (synthetic, reference):
        adata.obs["tiny"] = np.where(np.arange(adata.n_obs) < 8, "few", "many")
    dgm.settings.verbosity = 1
    with caplog.at_level("WARNING", logger="scdgm"):
        table = dgm.tl.synthetic_quality(synthetic, reference=reference, groupby="tiny", n_permutations=0, seed=0)
    assert list(dict.fromkeys(table["group"])) == ["all", "many"]
    assert "'few'" in caplog.text


def test_gene_order_and_extra_reference_genes(plain):
    synthetic, reference = plain
    expected = dgm.tl.synthetic_quality(synthetic, reference=reference, **FAST)
    shuffled = reference[:, np.random.default_rng(0).permutation(reference.n_vars)].copy()
    extra = ad.AnnData(np.ones((reference.n_obs, 3), dtype=np.float32), obs=reference.obs)
    extra.var_names = ["extra_0", "extra_1", "extra_2"]
    wider = ad.concat([shuffled, extra], axis=1, merge="first")
    result = dgm.tl.synthetic_quality(synthetic, reference=wider, **FAST)
    pd.testing.assert_frame_equal(result, expected)


def test_seed_reproduces_and_changes(plain):
    synthetic, reference = plain
    first = dgm.tl.synthetic_quality(synthetic, reference=reference, n_permutations=50, seed=1)
    again = dgm.tl.synthetic_quality(synthetic, reference=reference, n_permutations=50, seed=1)
    other = dgm.tl.synthetic_quality(synthetic, reference=reference, n_permutations=50, seed=2)
    pd.testing.assert_frame_equal(first, again)
    assert not np.allclose(first["value"], other["value"])


def test_max_cells_and_no_permutations(plain):
    synthetic, reference = plain
    table = dgm.tl.synthetic_quality(
        synthetic, reference=reference, max_cells=30, n_permutations=0, seed=0, key_added="small"
    )
    assert "small" in synthetic.uns and "synthetic_quality" not in synthetic.uns
    pd.testing.assert_frame_equal(dgm.get.synthetic_quality(synthetic, "small"), table)
    values = _values(table, "synthetic")
    assert values["n_cells"] == 30 and values["n_reference_cells"] == 30
    assert np.isnan(values["energy_pvalue"]) and np.isfinite(values["energy_statistic"])


def test_fewer_synthetic_cells_than_a_half(plain):
    synthetic, reference = plain
    table = dgm.tl.synthetic_quality(synthetic[:40].copy(), reference=reference, n_permutations=0, seed=0)
    assert _values(table, "synthetic")["n_cells"] == 40
    assert _values(table, "control")["n_cells"] == 40  # the control is held to the same size
    assert _values(table, "control")["n_reference_cells"] == 100


def test_binary_and_layers(plain):
    synthetic, reference = plain
    synthetic.layers["on"] = (_dense(synthetic) > 0).astype(np.float32)
    reference.layers["on"] = sp.csr_matrix((_dense(reference) > 0).astype(np.float32))
    table = dgm.tl.synthetic_quality(
        synthetic, reference=reference, layer="on", reference_layer="on", n_permutations=0, seed=0
    )
    assert synthetic.uns["synthetic_quality"]["params"]["data_kind"] == "binary"
    assert _values(table, "synthetic")["log_odds_ratio_mae"] >= 0


def test_sparse_and_dense_agree(plain):
    synthetic, reference = plain
    expected = dgm.tl.synthetic_quality(synthetic, reference=reference, n_permutations=50, seed=0)
    reference.X = _dense(reference)
    synthetic.X = sp.csr_matrix(_dense(synthetic))
    pd.testing.assert_frame_equal(
        dgm.tl.synthetic_quality(synthetic, reference=reference, n_permutations=50, seed=0), expected
    )


@pytest.mark.parametrize(
    ("change", "error", "message"),
    [
        ({"reference": "cells.h5ad"}, TypeError, "reference must be an AnnData"),
        ({"n_top_genes": 1}, ValueError, "n_top_genes must be an integer >= 2"),
        ({"n_permutations": -1}, ValueError, "n_permutations must be an integer >= 0"),
        ({"n_pcs": 0}, ValueError, "n_pcs must be an integer >= 1"),
        ({"max_cells": 5}, ValueError, "max_cells must be an integer >= 10"),
        ({"binarize_threshold": "0"}, ValueError, "binarize_threshold must be a finite number"),
        ({"key_added": "a/b"}, ValueError, "key_added='a/b' is not a usable key"),
        ({"groupby": "cell_type_x"}, KeyError, "it is not in adata.obs and reference.obs"),
        ({"layer": "raw"}, KeyError, "layer='raw' is not in adata.layers"),
        ({"reference_layer": "raw"}, KeyError, "reference_layer='raw' is not in reference.layers"),
        ({"seed": -1}, ValueError, "seed must be an integer"),
    ],
)
def test_bad_arguments_write_nothing(plain, change, error, message):
    synthetic, reference = plain
    arguments = {"reference": reference, **change}
    with pytest.raises(error, match=re.escape(message)):
        dgm.tl.synthetic_quality(synthetic, **arguments)
    assert "synthetic_quality" not in synthetic.uns and "a/b" not in synthetic.uns


def test_refusals_about_the_data(plain):
    synthetic, reference = plain

    def refused(error, message, adata=synthetic, **arguments):
        with pytest.raises(error, match=message):
            dgm.tl.synthetic_quality(adata, **{"reference": reference, **arguments})
        assert "synthetic_quality" not in adata.uns

    missing = list(reference.var_names[[3, 7]])
    refused(
        ValueError,
        re.escape(f"reference lacks 2 of the 50 genes of adata: {missing[0]}, {missing[1]}."),
        reference=reference[:, [g for g in reference.var_names if g not in missing]].copy(),
    )
    duplicated = reference.copy()
    duplicated.var_names = [reference.var_names[0], *reference.var_names[:-1]]
    refused(ValueError, r"reference\.var_names repeats gene names", reference=duplicated)
    refused(KeyError, r"not in reference\.obs", groupby="only_here", adata=_with_column(synthetic, "only_here"))
    refused(ValueError, "at least 10 are needed", adata=synthetic[:9].copy())
    refused(ValueError, "at least 20 are needed", reference=reference[:19].copy())
    binary = synthetic.copy()
    binary.X = (_dense(synthetic) > 0).astype(np.float32)
    refused(ValueError, r"adata\.X holds binary values but reference\.X holds counts values.*dgm\.pp\.binarize", binary)
    normalised = reference.copy()
    normalised.X = np.log1p(_dense(reference))
    refused(ValueError, r"adata\.X holds counts values but reference\.X holds continuous values", reference=normalised)
    named_all = _with_column(synthetic, "g")
    refused(ValueError, "has a group named 'all'", adata=named_all, reference=_with_column(reference, "g"), groupby="g")


def _with_column(adata, name):
    out = adata.copy()
    out.obs[name] = "all"
    return out
