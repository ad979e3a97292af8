"""``tl.integrated_gradients`` on small AnnData: outputs, completeness, groups, classifiers, bad input."""

import anndata as ad
import numpy as np
import pytest
import scanpy as sc
import torch
from scipy.stats import rankdata

import scdgm as dgm
from scdgm._warnings import ScdgmWarning
from scdgm.tl._integrated_gradients import _sample_references

captum_attr = pytest.importorskip("captum.attr")


@pytest.fixture(scope="module")
def _fitted():
    dgm.settings.progress_bar = False
    dgm.settings.verbosity = 1
    adata = dgm.datasets.simulate(200, 40, n_cell_types=3, n_batches=2, n_programs=4, seed=0)
    adata = adata[:, np.asarray(adata.X.sum(0)).ravel() > 0].copy()  # no all-zero genes
    dgm.tl.vae(adata, n_latent=4, n_hidden=32, max_epochs=10, batch_size=64, seed=0, batch_key="batch")
    dgm.tl.bayes_classify(adata, "cell_type", max_epochs=20, seed=0)
    return adata


@pytest.fixture
def fitted(_fitted):
    """200 cells x 39 expressed genes, a batch-conditional NB VAE in .uns["vae"], a Bayesian classifier on X_vae in .uns["bayes"]."""
    return _fitted.copy()


def _snapshot(adata):
    return {slot: set(getattr(adata, slot).keys()) for slot in ("obs", "obsm", "varm", "layers", "uns")}


def _per_cell(adata, key, names):
    return np.stack([adata.layers[f"{key}_{name}"] for name in names], axis=1)  # cells x targets x genes


def test_writes_every_output(fitted):
    dgm.tl.integrated_gradients(fitted, store_per_cell=True, n_top=5)
    entry = fitted.uns["ig_vae"]
    names = list(entry["targets"])
    assert names == [f"latent_{k}" for k in range(4)]
    assert fitted.varm["ig_vae"].shape == fitted.varm["ig_vae_abs"].shape == (fitted.n_vars, 4)
    assert np.all(fitted.varm["ig_vae_abs"] >= np.abs(fitted.varm["ig_vae"]) - 1e-6)
    assert fitted.obs["ig_vae_delta"].notna().all()
    per_cell = _per_cell(fitted, "ig_vae", names)
    np.testing.assert_allclose(per_cell.mean(0).T, fitted.varm["ig_vae"], rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(np.abs(per_cell).mean(0).T, fitted.varm["ig_vae_abs"], rtol=1e-4, atol=1e-6)
    top = dgm.get.top_genes(fitted, "ig_vae", target="latent_0")
    positive = top[top["direction"] == "positive"]
    assert len(positive) == 5
    assert positive["gene"].iloc[0] == fitted.var_names[np.argmax(fitted.varm["ig_vae"][:, 0])]
    assert (
        top[top["direction"] == "negative"]["gene"].iloc[0] == fitted.var_names[np.argmin(fitted.varm["ig_vae"][:, 0])]
    )
    assert entry["params"]["n_steps"] == 50 and entry["params"]["method"] == "gausslegendre"


def test_completeness_against_the_stored_latent_space(fitted):
    dgm.tl.integrated_gradients(fitted, store_per_cell=True)
    names = list(fitted.uns["ig_vae"]["targets"])
    sums = _per_cell(fitted, "ig_vae", names).sum(-1)  # cells x targets
    # F(x) is the latent mean tl.vae stored; F(0) is the same for every cell of a batch
    module = dgm.get_model(fitted, "vae")
    codes = torch.as_tensor(fitted.obs["batch"].cat.codes.to_numpy(), dtype=torch.long)
    with torch.no_grad():
        at_zero = module.encode(torch.zeros(fitted.n_obs, fitted.n_vars), codes)[0].numpy()
    change = fitted.obsm["X_vae"] - at_zero
    relative = np.abs(sums - change).max(1) / np.abs(change).max(1)
    np.testing.assert_allclose(relative, fitted.obs["ig_vae_delta"].to_numpy(), rtol=1e-2, atol=1e-4)
    assert np.median(relative) < 0.02


@pytest.mark.filterwarnings("ignore:Integrated gradients are incomplete")  # 20 steps on purpose: captum gets the same
@pytest.mark.parametrize("input_space", ["encoder", "data"])
def test_agrees_with_captum_on_the_stored_model(fitted, input_space):
    dgm.tl.integrated_gradients(fitted, input_space=input_space, store_per_cell=True, n_steps=20, target=[1, 3])
    module = dgm.get_model(fitted, "vae")
    counts = torch.as_tensor(fitted.X[:25].toarray())
    codes = torch.as_tensor(fitted.obs["batch"].cat.codes.to_numpy()[:25], dtype=torch.long)
    inputs = torch.log1p(counts) if input_space == "encoder" else counts

    def forward(u, b):
        return module.encode(torch.expm1(u) if input_space == "encoder" else u, b)[0]

    ig = captum_attr.IntegratedGradients(forward)
    for name, t in (("latent_1", 1), ("latent_3", 3)):
        reference = ig.attribute(inputs, baselines=inputs * 0, target=t, additional_forward_args=(codes,), n_steps=20)
        ours = fitted.layers[f"ig_vae_{name}"][:25]
        assert np.linalg.norm(ours - reference.numpy()) / np.linalg.norm(reference.numpy()) < 1e-4


def test_groupby_means(fitted):
    dgm.tl.integrated_gradients(fitted, groupby="cell_type", store_per_cell=True)
    entry = fitted.uns["ig_vae"]
    per_cell = _per_cell(fitted, "ig_vae", list(entry["targets"]))
    labels = fitted.obs["cell_type"].to_numpy()
    total = np.zeros_like(fitted.varm["ig_vae"])
    stored = entry["group_means"]
    for group, size, means in zip(stored["groups"], stored["sizes"], stored["values"], strict=True):
        in_group = labels == group
        assert size == in_group.sum()
        np.testing.assert_allclose(means, per_cell[in_group].mean(0).T, rtol=1e-4, atol=1e-6)
        total += means * in_group.sum()
    np.testing.assert_allclose(total / fitted.n_obs, fitted.varm["ig_vae"], rtol=1e-4, atol=1e-6)


def test_baselines(fitted):
    dgm.tl.integrated_gradients(fitted, key_added="zeros")
    dgm.tl.integrated_gradients(fitted, baseline=np.zeros(fitted.n_vars), key_added="array")
    np.testing.assert_allclose(fitted.varm["array"], fitted.varm["zeros"], rtol=1e-6)
    mean_cell = np.asarray(fitted.X.mean(0)).ravel()
    dgm.tl.integrated_gradients(fitted, baseline="mean", key_added="mean")
    dgm.tl.integrated_gradients(fitted, baseline=np.tile(mean_cell, (fitted.n_obs, 1)), key_added="per_cell")
    np.testing.assert_allclose(fitted.varm["per_cell"], fitted.varm["mean"], rtol=1e-4, atol=1e-6)
    assert not np.allclose(fitted.varm["mean"], fitted.varm["zeros"])
    assert fitted.uns["mean"]["params"]["baseline"] == "mean"


def test_other_groups_baseline_averages_paths_from_cells_of_other_groups(fitted):
    dgm.tl.integrated_gradients(
        fitted, baseline="other_groups", n_baselines=2, groupby="cell_type", store_per_cell=True, seed=3, key_added="eg"
    )
    entry = fitted.uns["eg"]
    assert entry["params"]["baseline"] == "other_groups" and entry["params"]["n_baselines"] == 2
    assert entry["params"]["seed"] == 3 and "output" not in entry["params"]  # an encoder: output unused
    names = list(entry["targets"])
    per_cell = _per_cell(fitted, "eg", names)
    assert per_cell.shape == (fitted.n_obs, 4, fitted.n_vars) and np.isfinite(per_cell).all()
    assert entry["group_means"]["values"].shape == (3, fitted.n_vars, 4)
    codes = fitted.obs["cell_type"].cat.codes.to_numpy()
    references = _sample_references(codes, 2, 3)
    assert references.shape == (fitted.n_obs, 2) and (codes[references] != codes[:, None]).all()
    # the mean of the attributions against each reference cell, taken one at a time as array baselines
    counts = fitted.X.toarray()
    for k in range(2):
        dgm.tl.integrated_gradients(fitted, baseline=counts[references[:, k]], store_per_cell=True, key_added=f"r{k}")
    each = [_per_cell(fitted, f"r{k}", names) for k in range(2)]
    np.testing.assert_allclose(per_cell, (each[0] + each[1]) / 2, rtol=1e-4, atol=1e-6)
    # complete: they sum to F(x) minus the mean of F over the references, read with the cell's batch
    module = dgm.get_model(fitted, "vae")
    batch = torch.as_tensor(fitted.obs["batch"].cat.codes.to_numpy().copy(), dtype=torch.long)
    with torch.no_grad():
        at_references = [module.encode(torch.as_tensor(counts[references[:, k]]), batch)[0].numpy() for k in range(2)]
    change = fitted.obsm["X_vae"] - np.mean(at_references, axis=0)
    path_change = np.mean([np.abs(fitted.obsm["X_vae"] - at) for at in at_references], axis=0)
    relative = np.abs(per_cell.sum(-1) - change).max(1) / path_change.max(1)
    np.testing.assert_allclose(relative, fitted.obs["eg_delta"].to_numpy(), rtol=1e-2, atol=1e-4)
    assert np.median(relative) < 0.02
    np.testing.assert_allclose(entry["output_change"], change.mean(0), rtol=1e-3, atol=1e-5)


def test_other_groups_baseline_is_seeded(fitted):
    kwargs = {"model_key": "bayes", "baseline": "other_groups", "groupby": "cell_type", "n_baselines": 3}
    kwargs |= {"n_samples": 10, "target": [0]}
    for key, seed in (("a", 0), ("b", 0), ("c", 1)):
        dgm.tl.integrated_gradients(fitted, seed=seed, key_added=key, **kwargs)
    np.testing.assert_array_equal(fitted.varm["a"], fitted.varm["b"])
    assert not np.allclose(fitted.varm["a"], fitted.varm["c"])
    params = fitted.uns["a"]["params"]
    assert params["output"] == "logit" and params["n_samples"] == 10 and params["n_baselines"] == 3


def test_references_come_from_other_groups():
    codes = np.array([0, 0, 1, 2, -1, 1, -1, 2, 0])  # -1: no group
    references = _sample_references(codes, 50, seed=0)
    assert references.shape == (9, 50)
    labelled = codes >= 0
    assert labelled[references].all()  # cells without a group are never drawn
    assert (codes[references][labelled] != codes[labelled, None]).all()
    assert set(np.unique(references[codes == -1])) == set(np.flatnonzero(labelled))  # they draw from all groups
    np.testing.assert_array_equal(references, _sample_references(codes, 50, seed=0))


@pytest.fixture(scope="module")
def _with_markers():
    adata = dgm.datasets.simulate(400, 200, n_cell_types=3, seed=0)
    adata = adata[:, np.asarray(adata.X.sum(0)).ravel() > 0].copy()
    sc.pp.normalize_total(adata, target_sum=1e4)
    sc.pp.log1p(adata)
    dgm.tl.bayes_classify(adata, "cell_type", use_rep=None, max_epochs=30, seed=0)
    return adata


def _marker_auroc(adata, key):
    """Mean over types of the AUROC of the type's markers against the other genes, ranked by own-type means."""
    markers = np.asarray(adata.varm["markers"])
    table = dgm.get.attributions(adata, key, groupby="cell_type")
    scores = []
    for k, name in enumerate(adata.obs["cell_type"].cat.categories):
        ranks = rankdata(table[table["target"] == name].set_index("gene").loc[adata.var_names, "attribution"])
        positive = markers[:, k]
        n_pos, n_neg = positive.sum(), (~positive).sum()
        scores.append((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))
    return float(np.mean(scores))


def test_planted_markers_rank_first(_with_markers):
    """400 cells x 200 genes, 3 types with 10 markers each, a Bayesian classifier on log-normalised genes."""
    adata = _with_markers.copy()
    kwargs = {"model_key": "bayes", "groupby": "cell_type", "n_steps": 16, "seed": 0}
    dgm.tl.integrated_gradients(adata, baseline="other_groups", n_baselines=3, key_added="others", **kwargs)
    dgm.tl.integrated_gradients(adata, key_added="default", **kwargs)
    # measured 0.894 and 0.935 (chance 0.5): the default (zero baseline, logit) ranks them best
    assert _marker_auroc(adata, "others") > 0.8
    assert _marker_auroc(adata, "default") > 0.88


def test_classifier_through_the_encoder(fitted):
    dgm.tl.integrated_gradients(
        fitted, model_key="bayes", groupby="cell_type", store_per_cell=True, n_samples=20, output="probability"
    )
    entry = fitted.uns["ig_bayes"]
    classes = list(entry["targets"])
    assert classes == list(fitted.obs["cell_type"].cat.categories)
    assert fitted.varm["ig_bayes"].shape == (fitted.n_vars, 3)
    per_cell = _per_cell(fitted, "ig_bayes", classes)
    # class probabilities sum to one: their attributions cancel gene by gene
    np.testing.assert_allclose(per_cell.sum(1), 0.0, atol=1e-5)
    assert "encoder" in entry["source"] or "X_vae" in entry["source"]
    assert np.median(fitted.obs["ig_bayes_delta"]) < 0.05
    dgm.tl.integrated_gradients(fitted, model_key="bayes", key_added="logit", n_samples=20)
    assert fitted.uns["logit"]["params"]["output"] == "logit"  # the default
    assert not np.allclose(fitted.varm["logit"], fitted.varm["ig_bayes"])


def test_classifier_on_genes(fitted):
    dgm.tl.bayes_classify(fitted, "cell_type", use_rep=None, max_epochs=10, seed=0, key_added="on_genes")
    dgm.tl.integrated_gradients(fitted, model_key="on_genes", target="type_1", n_samples=10)
    assert list(fitted.uns["ig_on_genes"]["targets"]) == ["type_1"]
    assert fitted.varm["ig_on_genes"].shape == (fitted.n_vars, 1)


def test_h5ad_round_trip(fitted, tmp_path):
    dgm.tl.integrated_gradients(fitted, groupby="cell_type", n_top=4, target=[0, 2])
    path = tmp_path / "ig.h5ad"
    fitted.write_h5ad(path)
    back = ad.read_h5ad(path)
    entry, original = back.uns["ig_vae"], fitted.uns["ig_vae"]
    assert list(entry["targets"]) == ["latent_0", "latent_2"]
    assert list(entry["top_genes"]["targets"]) == ["latent_0", "latent_2"]
    np.testing.assert_array_equal(entry["top_genes"]["positive"], original["top_genes"]["positive"])
    assert list(entry["group_means"]["groups"]) == list(original["group_means"]["groups"])
    np.testing.assert_array_equal(entry["group_means"]["values"], original["group_means"]["values"])
    assert entry["params"]["target"].tolist() == ["latent_0", "latent_2"]
    np.testing.assert_array_equal(back.varm["ig_vae"], fitted.varm["ig_vae"])
    # the model travels too: the re-read object attributes again to the same result
    dgm.tl.integrated_gradients(back, groupby="cell_type", target=[0, 2], key_added="again")
    np.testing.assert_allclose(back.varm["again"], fitted.varm["ig_vae"], rtol=1e-5, atol=1e-7)


def test_extra_genes_get_nan(fitted):
    bigger = ad.concat([fitted, fitted[:, :3].copy()], axis=1, merge="first", uns_merge="first")
    bigger.var_names = [*fitted.var_names, "extra_0", "extra_1", "extra_2"]
    bigger.uns = fitted.uns
    bigger.obs = fitted.obs
    dgm.tl.integrated_gradients(bigger, target=0, n_steps=200)
    assert np.isnan(bigger.varm["ig_vae"][-3:]).all()
    assert np.isfinite(bigger.varm["ig_vae"][:-3]).all()


def test_max_cells_subsets(fitted):
    dgm.tl.integrated_gradients(fitted, max_cells=50, seed=1)
    delta = fitted.obs["ig_vae_delta"].to_numpy()
    assert np.isfinite(delta).sum() == 50
    assert fitted.uns["ig_vae"]["params"]["n_cells"] == 50


def test_chunks_give_the_same_result(fitted):
    dgm.tl.integrated_gradients(fitted, key_added="one")
    dgm.tl.integrated_gradients(fitted, key_added="many", memory_budget_bytes=200_000)
    assert fitted.uns["many"]["params"]["chunk_size"] < 50
    np.testing.assert_allclose(fitted.varm["many"], fitted.varm["one"], rtol=1e-5, atol=1e-7)


def test_warns_when_incomplete(fitted):
    with pytest.warns(ScdgmWarning, match="raise n_steps"):
        dgm.tl.integrated_gradients(fitted, n_steps=1, method="riemann_right")
    assert fitted.uns["ig_vae"]["delta_summary"]["p90"] > 0.05


def test_copy(fitted):
    out = dgm.tl.integrated_gradients(fitted, copy=True, target="latent_2", n_steps=200)
    assert "ig_vae" not in fitted.varm and out.varm["ig_vae"].shape == (fitted.n_vars, 1)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"model_key": "nothing"}, KeyError, "Did not find .uns\\['nothing'\\]"),
        ({"target": 4}, IndexError, "target index 4 is out of range"),
        ({"target": "latent_9"}, KeyError, "is not one of the targets"),
        ({"baseline": np.zeros(38)}, ValueError, "baseline has shape \\(38,\\)"),
        ({"baseline": np.zeros((10, 39))}, ValueError, "baseline has shape \\(10, 39\\)"),
        ({"baseline": "median"}, ValueError, "baseline='median' is not supported"),
        ({"n_steps": 0}, ValueError, "n_steps must be an integer >= 1"),
        ({"method": "riemann_trapezoid", "n_steps": 1}, ValueError, "needs n_steps >= 2"),
        ({"method": "simpson"}, ValueError, "method='simpson' is not supported"),
        ({"groupby": "tissue"}, KeyError, "groupby='tissue' is not a column"),
        ({"input_space": "counts"}, ValueError, "input_space='counts' is not supported"),
        ({"baseline": "other_groups"}, ValueError, "pass groupby= \\(an .obs column of groups"),
        # refused before the model is read
        ({"baseline": "other_groups", "model_key": "nothing"}, ValueError, "pass groupby="),
        ({"baseline": "other_groups", "groupby": "one"}, ValueError, "groupby='one' has 1 group"),
        ({"baseline": "other_groups", "groupby": "cell_type", "n_baselines": 0}, ValueError, "n_baselines must be"),
        ({"n_baselines": 2.5}, ValueError, "n_baselines must be an integer >= 1"),
    ],
)
def test_bad_input_writes_nothing(fitted, kwargs, error, match):
    fitted.obs["one"] = "all the same"
    before = _snapshot(fitted)
    with pytest.raises(error, match=match):
        dgm.tl.integrated_gradients(fitted, **kwargs)
    assert _snapshot(fitted) == before


def test_model_without_weights(fitted):
    fitted.uns["vae"] = {"params": {}}
    with pytest.raises(KeyError, match="holds no trained model"):
        dgm.tl.integrated_gradients(fitted)
    assert "ig_vae" not in fitted.varm


def test_ldvae_factors_follow_the_rotation():
    adata = dgm.datasets.simulate(200, 40, n_cell_types=3, n_programs=4, seed=1)
    adata = adata[:, np.asarray(adata.X.sum(0)).ravel() > 0].copy()
    dgm.tl.ldvae_loadings(adata, n_latent=3, n_hidden=16, max_epochs=5, seed=0)
    dgm.tl.integrated_gradients(adata, model_key="ldvae", store_per_cell=True)
    names = list(adata.uns["ig_ldvae"]["targets"])
    assert names == ["factor_0", "factor_1", "factor_2"]
    module = dgm.get_model(adata, "ldvae")
    with torch.no_grad():
        at_zero = module.encode(torch.zeros(1, adata.n_vars))[0].numpy() @ adata.uns["ldvae"]["rotation"]
    sums = _per_cell(adata, "ig_ldvae", names).sum(-1)
    change = adata.obsm["X_ldvae"] - at_zero
    assert np.median(np.abs(sums - change).max(1) / np.abs(change).max(1)) < 0.05


def test_scvi_model_encoder(fitted):
    """The same call attributes the latent means of a trained scvi-tools SCVI, completely."""
    scvi = pytest.importorskip("scvi")
    scvi.settings.seed = 0
    adata = fitted.copy()
    scvi.model.SCVI.setup_anndata(adata, layer="counts", batch_key="batch")
    model = scvi.model.SCVI(adata, n_latent=3, n_hidden=16)
    model.train(max_epochs=2, accelerator="cpu", enable_progress_bar=False, logger=False, enable_checkpointing=False)
    dgm.tl.integrated_gradients(adata, scvi_model=model, store_per_cell=True, n_steps=200)
    entry = adata.uns["ig_scvi"]
    names = list(entry["targets"])
    assert names == ["latent_0", "latent_1", "latent_2"] and adata.varm["ig_scvi"].shape == (adata.n_vars, 3)
    # completeness against scvi-tools' own latent means: F(x) - F(0) per cell, F(0) from its encoder
    sums = _per_cell(adata, "ig_scvi", names).sum(-1)
    latent = model.get_latent_representation(adata)
    module = model.module.cpu().eval()
    codes = torch.as_tensor(adata.obs["batch"].cat.codes.to_numpy().copy(), dtype=torch.long)[:, None]
    with torch.no_grad():
        at_zero = module.z_encoder(torch.zeros(adata.n_obs, adata.n_vars), codes)[0].loc.numpy()
    change = latent - at_zero
    assert np.median(np.abs(sums - change).max(1) / np.abs(change).max(1)) < 0.02
    assert "ig_vae" not in adata.varm


# --------------------------------------------------------------------------------------------------
# regression tests of the reliability sweep
@pytest.mark.parametrize("key_added", ["", "run/1"])
def test_unusable_key_added_is_refused(fitted, key_added):
    before = _snapshot(fitted)
    with pytest.raises(ValueError, match=f"key_added={key_added!r} is not a usable key"):
        dgm.tl.integrated_gradients(fitted, key_added=key_added)
    assert _snapshot(fitted) == before


def test_leaves_the_torch_random_state_alone(fitted):
    torch.manual_seed(0)
    state = torch.get_rng_state()
    dgm.tl.integrated_gradients(fitted, n_top=3)
    assert torch.equal(torch.get_rng_state(), state)
