"""dgm.get: tidy tables of stored results, read from hand-built .uns entries in the current layout."""

import re

import anndata as ad
import numpy as np
import pandas as pd
import pytest

import scdgm as dgm
import scdgm.get as get

GENES = [f"g{i}" for i in range(6)]
GROUPS = np.array(["B cell", "CD4+/CD25 T Reg"], dtype=object)  # "/" would break an h5ad key
CLASSES = np.array(["T/NK", "B"], dtype=object)


def _roundtrip(adata, tmp_path):
    path = tmp_path / "stored.h5ad"
    adata.write_h5ad(path)
    return ad.read_h5ad(path)


@pytest.fixture
def stored():
    """Six genes with an LDVAE, integrated gradients over two classes, a classifier and a VAE stored."""
    rng = np.random.default_rng(0)
    adata = ad.AnnData(np.zeros((4, len(GENES)), dtype=np.float32))
    adata.var_names = GENES
    loadings = np.array([[3.0, -1], [2, 0], [1, 5], [0, 4], [-1, -3], [-2, 2]])
    adata.varm["ldvae_loadings"] = loadings
    adata.varm["ldvae_loadings_unrotated"] = loadings[:, ::-1].copy()
    adata.uns["ldvae"] = {
        "top_genes": {
            "targets": np.array(["factor_0", "factor_1"], dtype=object),
            "positive": np.array([["g0", "g1", "g2"], ["g2", "g3", "g5"]], dtype=object),
            "negative": np.array([["g5", "g4", "g3"], ["g4", "g0", "g1"]], dtype=object),
        }
    }
    attribution = rng.normal(size=(len(GENES), 2))
    adata.varm["ig_bayes"] = attribution
    adata.varm["ig_bayes_abs"] = np.abs(attribution) + 1
    adata.uns["ig_bayes"] = {
        "targets": CLASSES,
        "top_genes": {
            "targets": CLASSES,
            "positive": np.array([["g1", "g0"], ["g3", "g2"]], dtype=object),
            "negative": np.array([["g4", "g5"], ["g0", "g1"]], dtype=object),
        },
        "groupby": "cell_type",
        "group_means": {
            "groups": GROUPS,
            "sizes": np.array([3, 1]),
            "values": rng.normal(size=(len(GROUPS), len(GENES), 2)).astype(np.float32),
        },
    }
    adata.uns["bayes"] = {
        "calibration": {
            "edges": np.linspace(0, 1, 5),
            "confidence": np.array([np.nan, 0.4, 0.6, 0.9]),
            "accuracy": np.array([np.nan, 0.5, 0.5, 1.0]),
            "count": np.array([0, 2, 4, 10]),
        },
        "metrics": {"accuracy": 0.875, "n_validation": 16, "ece": 0.1},
    }
    adata.uns["vae"] = {
        "history": {
            "epoch": np.arange(3),
            "kl_weight": np.array([0.0, 0.5, 1.0]),
            "train_loss": np.array([9.0, 8, 7]),
            "train_elbo": np.array([10.0, 9, 8]),
            "validation_elbo": np.array([11.0, 10, 9.5]),
        },
        "metrics": {
            "validation_elbo": 9.5,
            "n_train": 12,
            "stopped_early": False,
            "monitor": "elbo",
            "per_gene": np.arange(3.0),
            "nested": {"a": 1},
        },
    }
    return adata


def test_top_genes_table(stored):
    table = get.top_genes(stored, "ldvae")
    assert list(table.columns) == ["target", "direction", "rank", "gene", "value"]
    assert len(table) == 2 * 2 * 3
    assert list(table["target"].unique()) == ["factor_0", "factor_1"]
    first = table[(table["target"] == "factor_1") & (table["direction"] == "negative")]
    assert first["rank"].tolist() == [0, 1, 2]
    assert first["gene"].tolist() == ["g4", "g0", "g1"]
    np.testing.assert_array_equal(first["value"], [-3.0, -1.0, 0.0])


def test_top_genes_filters(stored):
    table = get.top_genes(stored, "ldvae", target="factor_1", direction="positive", n_top=2)
    assert table["gene"].tolist() == ["g2", "g3"]
    assert table["value"].tolist() == [5.0, 4.0]
    assert set(table["direction"]) == {"positive"}
    both = get.top_genes(stored, "ldvae", target=["factor_1", "factor_0"], n_top=1)
    assert both["target"].tolist() == ["factor_1", "factor_1", "factor_0", "factor_0"]


def test_top_genes_errors(stored):
    with pytest.raises(KeyError, match=re.escape("target 'factor_9' is not in .uns['ldvae']['top_genes']")) as err:
        get.top_genes(stored, "ldvae", target="factor_9")
    assert "factor_0" in str(err.value)
    with pytest.raises(ValueError, match="direction must be"):
        get.top_genes(stored, "ldvae", direction="up")
    with pytest.raises(ValueError, match="n_top must be at least 1"):
        get.top_genes(stored, "ldvae", n_top=0)
    with pytest.raises(KeyError, match=re.escape("Run `dgm.tl.integrated_gradients(adata, model_key='vae')` first")):
        get.top_genes(stored, "ig_vae")
    with pytest.raises(KeyError, match=re.escape("Did not find .uns['vae']['top_genes']")):
        get.top_genes(stored, "vae")


def test_top_genes_of_attributions_survive_h5ad(stored, tmp_path):
    table = get.top_genes(_roundtrip(stored, tmp_path), "ig_bayes", target="T/NK")
    assert table["gene"].tolist() == ["g1", "g0", "g4", "g5"]
    expected = stored.varm["ig_bayes"][[1, 0, 4, 5], 0]
    np.testing.assert_allclose(table["value"], expected)


def test_top_genes_without_varm_values(stored):
    del stored.varm["ig_bayes"]
    table = get.top_genes(stored, "ig_bayes")
    assert len(table) == 2 * 2 * 2
    assert table["value"].isna().all()


def test_top_genes_old_layout(stored, tmp_path):
    stored.uns["ldvae"]["top_genes"] = {
        "factor_0": {"positive": np.array(["g0", "g1"]), "negative": np.array(["g5", "g4"])},
        "factor_1": {"positive": np.array(["g2", "g3"]), "negative": np.array(["g4", "g0"])},
    }
    table = get.top_genes(_roundtrip(stored, tmp_path), "ldvae", direction="negative")
    assert table["target"].tolist() == ["factor_0"] * 2 + ["factor_1"] * 2
    assert table["gene"].tolist() == ["g5", "g4", "g4", "g0"]
    assert table["value"].tolist() == [-2.0, -1.0, -3.0, -1.0]


def test_loadings(stored):
    table = get.loadings(stored)
    assert table.shape == (6, 2)
    assert list(table.columns) == ["factor_0", "factor_1"]
    assert table.index.tolist() == GENES
    np.testing.assert_array_equal(table.to_numpy(), stored.varm["ldvae_loadings"])
    unrotated = get.loadings(stored, rotated=False)
    np.testing.assert_array_equal(unrotated.to_numpy(), stored.varm["ldvae_loadings_unrotated"])
    stored.uns["ldvae"]["top_genes"]["targets"] = np.array(["immune", "stress"], dtype=object)
    assert list(get.loadings(stored).columns) == ["immune", "stress"]
    assert list(get.loadings(stored, rotated=False).columns) == ["factor_0", "factor_1"]
    del stored.uns["ldvae"]
    assert list(get.loadings(stored).columns) == ["factor_0", "factor_1"]


def test_loadings_missing(stored):
    with pytest.raises(
        KeyError, match=re.escape("Did not find .varm['lin_loadings']. Run `dgm.tl.ldvae_loadings(adata")
    ):
        get.loadings(stored, "lin")


def test_attributions_overall(stored):
    table = get.attributions(stored, "ig_bayes")
    assert list(table.columns) == ["gene", "target", "attribution"]
    assert len(table) == len(GENES) * 2
    pivot = table.pivot(index="gene", columns="target", values="attribution").loc[GENES, list(CLASSES)]
    np.testing.assert_array_equal(pivot.to_numpy(), stored.varm["ig_bayes"])
    absolute = get.attributions(stored, "ig_bayes", absolute=True)
    np.testing.assert_array_equal(absolute["attribution"], stored.varm["ig_bayes_abs"].ravel())


def test_attributions_per_group_survive_h5ad(stored, tmp_path):
    adata = _roundtrip(stored, tmp_path)
    values = stored.uns["ig_bayes"]["group_means"]["values"]
    table = get.attributions(adata, "ig_bayes", group="CD4+/CD25 T Reg")
    assert list(table.columns) == ["group", "gene", "target", "attribution"]
    assert set(table["group"]) == {"CD4+/CD25 T Reg"}
    np.testing.assert_allclose(table["attribution"], values[1].ravel())
    everything = get.attributions(adata, "ig_bayes", group="all")
    assert len(everything) == len(GROUPS) * len(GENES) * 2
    assert everything["group"].unique().tolist() == list(GROUPS)
    listed = get.attributions(adata, "ig_bayes", group=["CD4+/CD25 T Reg", "B cell"])
    assert listed["group"].unique().tolist() == ["CD4+/CD25 T Reg", "B cell"]
    row = listed[(listed["group"] == "B cell") & (listed["gene"] == "g2") & (listed["target"] == "B")]
    assert row["attribution"].item() == pytest.approx(values[0, 2, 1])


def test_attributions_errors(stored):
    with pytest.raises(KeyError, match=re.escape("group 'NK' is not in .uns['ig_bayes']['group_means'] (cell_type)")):
        get.attributions(stored, "ig_bayes", group="NK")
    with pytest.raises(ValueError, match="stored signed only"):
        get.attributions(stored, "ig_bayes", group="all", absolute=True)
    with pytest.raises(
        KeyError,
        match=re.escape(
            "Did not find .uns['ig_vae']. Run `dgm.tl.integrated_gradients(adata, model_key='vae')` first."
        ),
    ):
        get.attributions(stored)
    del stored.uns["ig_bayes"]["group_means"]
    with pytest.raises(
        KeyError,
        match=re.escape(
            "Did not find .uns['ig_bayes']['group_means']. Run `dgm.tl.integrated_gradients(adata, model_key='bayes', groupby=...)`"
        ),
    ):
        get.attributions(stored, "ig_bayes", group="all")


def test_attributions_of_each_class_in_its_own_cells(stored, tmp_path):
    stored.uns["ig_bayes"]["group_means"]["groups"] = np.array(["B", "T/NK"], dtype=object)  # the classes, reversed
    adata = _roundtrip(stored, tmp_path)
    values = stored.uns["ig_bayes"]["group_means"]["values"]
    table = get.attributions(adata, "ig_bayes", groupby="cell_type")
    assert list(table.columns) == ["group", "gene", "target", "attribution"]
    assert (table["group"] == table["target"]).all() and len(table) == len(GENES) * 2
    pivot = table.pivot(index="gene", columns="target", values="attribution").loc[GENES]
    np.testing.assert_allclose(pivot["T/NK"], values[1, :, 0])  # class 0 over the cells of group "T/NK"
    np.testing.assert_allclose(pivot["B"], values[0, :, 1])
    with pytest.raises(ValueError, match=re.escape("are over 'cell_type', not groupby='bayes_pred'")):
        get.attributions(stored, "ig_bayes", groupby="bayes_pred")
    with pytest.raises(ValueError, match="not both"):
        get.attributions(stored, "ig_bayes", groupby="cell_type", group="B")
    with pytest.raises(ValueError, match="stored signed only"):
        get.attributions(stored, "ig_bayes", groupby="cell_type", absolute=True)


def test_attributions_groupby_needs_classes_named_like_groups(stored):
    with pytest.raises(ValueError, match=re.escape("no target of .uns['ig_bayes'] (['T/NK', 'B']) names a group")):
        get.attributions(stored, "ig_bayes", groupby="cell_type")
    del stored.uns["ig_bayes"]["group_means"]
    with pytest.raises(KeyError, match=re.escape("model_key='bayes', groupby='cell_type')")):
        get.attributions(stored, "ig_bayes", groupby="cell_type")


def test_attributions_old_group_layout(stored):
    stored.uns["ig_bayes"]["group_means"] = {"B cell": np.zeros((len(GENES), 2))}
    with pytest.raises(ValueError, match="layout of scdgm 0.1"):
        get.attributions(stored, "ig_bayes", group="B cell")


def test_calibration(stored, tmp_path):
    table = get.calibration(_roundtrip(stored, tmp_path))
    assert list(table.columns) == ["bin_lower", "bin_upper", "confidence", "accuracy", "count"]
    assert table["bin_lower"].tolist() == [0.0, 0.25, 0.5, 0.75]
    assert table["bin_upper"].tolist() == [0.25, 0.5, 0.75, 1.0]
    assert table["count"].tolist() == [0, 2, 4, 10]
    assert np.isnan(table["accuracy"].iloc[0])
    assert table["accuracy"].iloc[3] == 1.0


def test_calibration_errors(stored):
    with pytest.raises(
        KeyError, match=re.escape("Run `dgm.tl.bayes_classify(adata, labels_key, key_added='clf')` first")
    ):
        get.calibration(stored, "clf")
    stored.uns["bayes"]["calibration"] = {}
    with pytest.raises(ValueError, match="held out no cells"):
        get.calibration(stored)


def test_history(stored, tmp_path):
    adata = _roundtrip(stored, tmp_path)
    wide = get.history(adata)
    assert wide.shape == (3, 5)
    assert wide.columns[0] == "epoch"
    assert wide["validation_elbo"].tolist() == [11.0, 10.0, 9.5]
    long = get.history(adata, long=True)
    assert list(long.columns) == ["epoch", "split", "term", "value"]
    assert len(long) == 3 * 3  # kl_weight is per epoch, not per split
    assert set(long["split"]) == {"train", "validation"}
    assert set(long["term"]) == {"loss", "elbo"}
    row = long[(long["epoch"] == 2) & (long["split"] == "train") & (long["term"] == "elbo")]
    assert row["value"].item() == 8.0


def test_history_errors(stored):
    stored.uns["vae"]["history"]["train_loss"] = np.ones(2)
    with pytest.raises(ValueError, match="different lengths"):
        get.history(stored)
    with pytest.raises(KeyError, match=re.escape("Run `dgm.tl.vae(adata, key_added='scvi')` first")):
        get.history(stored, "scvi")


def test_metrics(stored, tmp_path):
    adata = _roundtrip(stored, tmp_path)
    series = get.metrics(adata)
    assert isinstance(series, pd.Series)
    assert series.name == "vae"
    assert set(series.index) == {"validation_elbo", "n_train", "stopped_early", "monitor"}
    assert series["validation_elbo"] == 9.5
    assert series["monitor"] == "elbo"
    assert get.metrics(adata, "bayes")["accuracy"] == 0.875
    with pytest.raises(KeyError, match=re.escape("Did not find .uns['ldvae']['metrics']")):
        get.metrics(adata, "ldvae")


def test_history_of_a_trained_vae():
    adata = dgm.datasets.simulate(120, 30, n_cell_types=3, seed=0)
    dgm.tl.vae(adata, n_latent=2, n_hidden=8, max_epochs=3, batch_size=32, seed=0)
    table = get.history(adata)
    assert len(table) == 3
    assert "validation_elbo" in table
    assert table["epoch"].tolist() == [0, 1, 2]
    assert np.isfinite(get.metrics(adata)["validation_elbo"])


def test_synthetic_quality_tidy_and_wide_survive_h5ad(stored, tmp_path):
    comparison = np.array(["synthetic"] * 4 + ["control"] * 4, dtype=object)
    group = np.array(["all", "all", GROUPS[1], GROUPS[1]] * 2, dtype=object)
    metric = np.array(["mmd2", "classifier_auroc"] * 4, dtype=object)
    stored.uns["quality"] = {
        "comparison": comparison,
        "group": group,
        "metric": metric,
        "value": np.arange(8.0),
        "params": {"tool": "synthetic_quality"},
    }
    adata = _roundtrip(stored, tmp_path)
    table = get.synthetic_quality(adata, "quality")
    assert list(table.columns) == ["comparison", "group", "metric", "value"]
    assert table["group"].tolist() == group.tolist()
    assert table["value"].tolist() == list(range(8))
    wide = get.synthetic_quality(adata, "quality", wide=True)
    assert list(wide.columns) == ["comparison", "group", "mmd2", "classifier_auroc"]
    assert wide[["comparison", "group"]].values.tolist() == [
        ["synthetic", "all"],
        ["synthetic", "CD4+/CD25 T Reg"],
        ["control", "all"],
        ["control", "CD4+/CD25 T Reg"],
    ]
    assert wide["classifier_auroc"].tolist() == [1.0, 3.0, 5.0, 7.0]
    with pytest.raises(KeyError, match=re.escape("Run `dgm.tl.synthetic_quality(adata")):
        get.synthetic_quality(adata)
    with pytest.raises(KeyError, match=re.escape("lacks ['comparison'")):
        get.synthetic_quality(adata, "vae")
