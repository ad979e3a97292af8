"""tl.differential_expression: planted differences found, scanpy's readers and plots unchanged, bad input refused."""

import anndata as ad
import matplotlib.pyplot as plt
import numpy as np
import pytest
import scanpy as sc
import torch

import scdgm as dgm
from scdgm.tl._differential_expression import compare_samples, posterior_fdr

from .conftest import expected_log_expression

KEY = "rank_genes_groups_vae"


@pytest.fixture(scope="module")
def _tested(_perturbation_model):
    adata = _perturbation_model.copy()
    dgm.tl.differential_expression(adata, groupby="cell_type", n_samples=40, seed=0)
    return adata


@pytest.fixture
def tested(_tested):
    """The perturbation model with DE of each cell type against the rest (a fresh copy)."""
    return _tested.copy()


def _truth_change(adata, mask):
    truth = expected_log_expression(adata)
    return truth[mask].mean(0) - truth[~mask].mean(0)


def test_scanpy_reads_the_layout(tested, tmp_path):
    entry = tested.uns[KEY]
    assert entry["params"]["groupby"] == "cell_type" and entry["params"]["method"] == "scdgm"
    assert entry["params"]["reference"] == "rest" and entry["params"]["tool"] == "differential_expression"
    table = sc.get.rank_genes_groups_df(tested, "type_1", key=KEY)
    assert list(table.columns) == ["names", "scores", "logfoldchanges", "pvals", "pvals_adj"]
    assert len(table) == tested.n_vars and set(table["names"]) == set(tested.var_names)
    assert np.all(np.diff(table["scores"]) <= 0)  # ranked by score
    np.testing.assert_allclose(table["pvals"], 1 - np.asarray(entry["proba_de"]["type_1"]))
    called = sc.get.rank_genes_groups_df(tested, "type_1", key=KEY, pval_cutoff=0.05)
    assert 0 < len(called) < tested.n_vars
    # every field ours in one table, after h5ad
    path = tmp_path / "de.h5ad"
    tested.write_h5ad(path)
    ours = dgm.get.differential_expression(ad.read_h5ad(path), "type_1")
    assert list(ours["names"]) == list(table["names"])
    assert ours["is_de"].sum() == np.count_nonzero(table["pvals_adj"] <= 0.05)
    assert (ours["lfc_sd"] > 0).all() and ours["proba_de"].between(0, 1).all()
    # dendrogram=False: scanpy's own dendrogram fails on a sparse .X without X_pca, whatever the result
    dotplot = sc.pl.rank_genes_groups_dotplot(tested, key=KEY, n_genes=3, dendrogram=False, show=False)
    assert dotplot
    plt.close("all")


def test_finds_planted_differences(tested):
    from sklearn.metrics import roc_auc_score

    table = dgm.get.differential_expression(tested)
    for group in ("type_0", "type_1", "type_2"):
        rows = table[table["group"] == group].set_index("names").loc[tested.var_names]
        true_change = _truth_change(tested, (tested.obs["cell_type"] == group).to_numpy())
        assert np.corrcoef(rows["logfoldchanges"], true_change)[0, 1] > 0.6, group
        changed = np.abs(true_change) > 0.5
        assert roc_auc_score(changed, rows["proba_de"]) > 0.65, group
        # called genes are changed genes: no call where the true change is negligible
        assert not (rows["is_de"] & (np.abs(true_change) < 0.05)).any(), group


def test_condition_against_a_reference_group(perturbation_model):
    dgm.tl.differential_expression(
        perturbation_model, groupby="condition", groups="condition_1", reference="control", n_samples=40, seed=0
    )
    assert perturbation_model.uns[KEY]["names"].dtype.names == ("condition_1",)
    rows = dgm.get.differential_expression(perturbation_model, "condition_1").set_index("names")
    rows = rows.loc[perturbation_model.var_names]
    true_change = _truth_change(perturbation_model, (perturbation_model.obs["condition"] == "condition_1").to_numpy())
    assert np.corrcoef(rows["logfoldchanges"], true_change)[0, 1] > 0.6


def test_seeded_and_leaves_the_global_random_state(perturbation_model):
    torch_state, numpy_state = torch.get_rng_state(), np.random.get_state()
    arguments = {"groupby": "cell_type", "groups": ["type_1"], "n_samples": 10}
    first = dgm.tl.differential_expression(perturbation_model, **arguments, seed=1, copy=True)
    again = dgm.tl.differential_expression(perturbation_model, **arguments, seed=1, copy=True)
    other = dgm.tl.differential_expression(perturbation_model, **arguments, seed=2, copy=True)
    assert KEY not in perturbation_model.uns  # copy=True left it alone
    assert np.array_equal(first.uns[KEY]["lfc_sd"]["type_1"], again.uns[KEY]["lfc_sd"]["type_1"])
    assert not np.array_equal(first.uns[KEY]["lfc_sd"]["type_1"], other.uns[KEY]["lfc_sd"]["type_1"])
    assert torch.equal(torch_state, torch.get_rng_state())
    assert np.array_equal(numpy_state[1], np.random.get_state()[1])


def test_batches_are_averaged_out(trained):
    # a batch-conditional model decodes every cell in every batch: the simulated batch effect (log sd 0.5
    # per gene) is in the data but not in the comparison of batches
    dgm.tl.differential_expression(trained, groupby="batch", n_samples=20, seed=0)
    through_model = dgm.get.differential_expression(trained, "batch_0")
    sc.pp.normalize_total(trained, target_sum=1e4)
    sc.pp.log1p(trained)
    sc.tl.rank_genes_groups(trained, "batch", groups=["batch_0"], method="t-test", key_added="t-test")
    t_test = sc.get.rank_genes_groups_df(trained, "batch_0", key="t-test")
    assert through_model["is_de"].sum() <= 1 < (t_test["pvals_adj"] < 0.05).sum()
    assert through_model["logfoldchanges"].abs().max() < 0.5


@pytest.mark.parametrize(
    ("change", "error", "match"),
    [
        ({"groupby": "cluster"}, KeyError, "groupby='cluster'"),
        ({"groupby": "batch"}, ValueError, "at least two"),
        ({"groups": ["type_9"]}, ValueError, "groups="),
        ({"reference": "type_9"}, ValueError, "reference='type_9'"),
        ({"groups": ["type_1"], "reference": "type_1"}, ValueError, "nothing to compare"),
        ({"fdr": 0.0}, ValueError, "fdr"),
        ({"fdr": 1.5}, ValueError, "fdr"),
        ({"delta": -0.1}, ValueError, "delta"),
        ({"n_samples": 1}, ValueError, "n_samples"),
        ({"model_key": "scvi"}, KeyError, "scvi"),
        ({"key_added": "vae"}, ValueError, "holds a trained model"),
    ],
)
def test_bad_input_fails_before_any_work(perturbation_model, change, error, match):
    before = set(perturbation_model.uns)
    with pytest.raises(error, match=match):
        dgm.tl.differential_expression(perturbation_model, **{"groupby": "cell_type", **change})
    assert set(perturbation_model.uns) == before


def test_a_group_of_one_cell_is_refused(perturbation_model):
    labels = perturbation_model.obs["cell_type"].astype(str).to_numpy()
    labels[0] = "alone"
    perturbation_model.obs["cluster"] = labels
    with pytest.raises(ValueError, match="'alone'.* 1 cell"):
        dgm.tl.differential_expression(perturbation_model, groupby="cluster")


def test_posterior_fdr_and_scores():
    proba = np.array([0.99, 0.5, 0.9, 0.9, 0.0])
    # ranked 0.99, 0.9, 0.9, 0.5, 0.0: ties share the FDR of calling both
    np.testing.assert_allclose(posterior_fdr(proba), [0.01, 0.1775, 0.07, 0.07, 0.342])
    rng = np.random.default_rng(0)
    group = np.exp(rng.normal(0, 0.05, size=(200, 3))) * [10.0, 10.0, 10.0]
    reference = np.exp(rng.normal(0, 0.05, size=(200, 3))) * [10.0, 40.0, 2.5]
    table = compare_samples(group, reference, 0.25, pseudocount=1e-6)
    np.testing.assert_allclose(table["logfoldchanges"], [0, -2, 2], atol=0.02)
    # scores: the end of the 90% credible interval nearest zero
    assert table["scores"][0] == 0 and -2 < table["scores"][1] < -1.8 and 1.8 < table["scores"][2] < 2
    np.testing.assert_allclose(table["proba_de"], [0, 1, 1], atol=0.05)
