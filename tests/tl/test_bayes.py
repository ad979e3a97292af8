"""``tl.bayes_classify`` / ``tl.bayes_predict`` on small AnnData, and the calibration metrics they share."""

import anndata as ad
import numpy as np
import pandas as pd
import pytest

import scdgm as dgm
from scdgm._metrics import (
    auroc,
    brier_score,
    calibration_bins,
    classification_metrics,
    expected_calibration_error,
    negative_log_likelihood,
)
from scdgm._warnings import ScdgmWarning

N_UNLABELLED = 20
FIT = {"max_epochs": 30, "batch_size": 32, "num_samples": 50, "seed": 0}


def _base():
    adata = dgm.datasets.simulate(200, 40, n_cell_types=3, marker_fold_change=10.0, seed=8)
    adata = adata[:, np.asarray(adata.X.sum(0)).ravel() > 0].copy()  # no all-zero genes
    adata.layers["log"] = np.log1p(adata.X.toarray())
    centred = adata.layers["log"] - adata.layers["log"].mean(0)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    adata.obsm["X_rep"] = (centred @ vt[:5].T).astype(np.float32)
    labels = adata.obs["cell_type"].astype(object).copy()
    hidden = np.random.default_rng(0).choice(adata.n_obs, N_UNLABELLED, replace=False)
    labels.iloc[hidden] = np.nan
    adata.obs["label"] = pd.Categorical(labels)
    adata.obs["hidden"] = np.isin(np.arange(adata.n_obs), hidden)
    return adata


@pytest.fixture(scope="module")
def _fitted():
    dgm.settings.progress_bar = False
    dgm.settings.verbosity = 1
    adata = _base()
    dgm.tl.bayes_classify(adata, "label", use_rep="X_rep", **FIT)
    return adata


@pytest.fixture
def fitted(_fitted):
    """200 simulated cells, 5-D ``X_rep``, 20 cells without a label, a classifier in .uns["bayes"]."""
    return _fitted.copy()


@pytest.fixture
def base():
    return _base()


def _snapshot(adata):
    return {slot: set(getattr(adata, slot).keys()) for slot in ("obs", "obsm", "varm", "layers", "uns")}


# --------------------------------------------------------------------------------------------------
# metrics
def test_ece_on_a_tiny_example():
    proba = np.array([[0.9, 0.1], [0.8, 0.2], [0.3, 0.7], [0.45, 0.55]])
    labels = np.array([0, 1, 1, 1])
    # confidences 0.9, 0.8, 0.7, 0.55 in bins (0.8667, 0.9333], (0.7333, 0.8], (0.6667, 0.7333], (0.5333, 0.6]
    # correct: yes, no, yes, yes -> |1 - 0.9| + |0 - 0.8| + |1 - 0.7| + |1 - 0.55| over 4 cells
    assert expected_calibration_error(proba, labels) == pytest.approx((0.1 + 0.8 + 0.3 + 0.45) / 4)
    # two bins: (0, 0.5] empty, (0.5, 1] holds all: |3/4 - mean confidence 0.7375|
    assert expected_calibration_error(proba, labels, n_bins=2) == pytest.approx(abs(0.75 - 0.7375))
    bins = calibration_bins(proba, labels, n_bins=2)
    np.testing.assert_array_equal(bins["count"], [0, 4])
    np.testing.assert_allclose(bins["edges"], [0, 0.5, 1])
    assert np.isnan(bins["accuracy"][0]) and bins["accuracy"][1] == pytest.approx(0.75)
    assert bins["confidence"][1] == pytest.approx(0.7375)
    perfect = np.eye(3)[[0, 1, 2, 0]]
    assert expected_calibration_error(perfect, np.array([0, 1, 2, 0])) == 0.0


def test_nll_brier_and_classification_metrics():
    proba = np.array([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8], [0.5, 0.25, 0.25]])
    labels = np.array([0, 1, 0])
    expected_nll = -(np.log(0.7) + np.log(0.1) + np.log(0.5)) / 3
    assert negative_log_likelihood(proba, labels) == pytest.approx(expected_nll)
    brier = ((0.3**2 + 0.2**2 + 0.1**2) + (0.1**2 + 0.9**2 + 0.8**2) + (0.5**2 + 0.25**2 + 0.25**2)) / 3
    assert brier_score(proba, labels) == pytest.approx(brier)
    metrics = classification_metrics(proba, labels)
    assert metrics["accuracy"] == pytest.approx(2 / 3)
    assert metrics["nll"] == pytest.approx(expected_nll) and metrics["brier"] == pytest.approx(brier)
    assert metrics["n_cells"] == 3
    # a zero probability for the true class is floored, not infinite
    assert np.isfinite(negative_log_likelihood(np.array([[1.0, 0.0]]), np.array([1])))
    with pytest.raises(ValueError, match="class codes"):
        classification_metrics(proba, np.array([0, 3, 1]))
    with pytest.raises(ValueError, match="must be"):
        brier_score(proba, labels[:2])


def test_auroc():
    scores = np.array([0.1, 0.4, 0.35, 0.8, 0.2])
    positive = np.array([False, False, True, True, False])
    # pairs (positive, negative) ranked right: 0.35 > 0.1, 0.2 (not 0.4); 0.8 > all three -> 5 of 6
    assert auroc(scores, positive) == pytest.approx(5 / 6)
    assert auroc(np.array([1.0, 1.0]), np.array([True, False])) == pytest.approx(0.5)
    assert np.isnan(auroc(scores, np.ones(5, bool)))
    metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(0)
    s, p = rng.normal(size=50), rng.random(50) < 0.3
    assert auroc(s, p) == pytest.approx(metrics.roc_auc_score(p, s))


# --------------------------------------------------------------------------------------------------
# outputs
def test_writes_every_output(fitted):
    n, classes = fitted.n_obs, ["type_0", "type_1", "type_2"]
    entry = fitted.uns["bayes"]
    assert list(entry["classes"]) == classes
    proba = fitted.obsm["bayes_proba"]
    assert proba.shape == (n, 3) and proba.dtype == np.float32
    np.testing.assert_allclose(proba.sum(1), 1.0, atol=1e-5)
    pred = fitted.obs["bayes_pred"]
    assert list(pred.cat.categories) == classes
    np.testing.assert_array_equal(pred.cat.codes.to_numpy(), proba.argmax(1))
    np.testing.assert_allclose(fitted.obs["bayes_confidence"], proba.max(1), rtol=1e-5)
    p = proba.astype(np.float64)
    entropy = -(p * np.log(np.clip(p, 1e-12, None))).sum(1)
    np.testing.assert_allclose(fitted.obs["bayes_entropy"], entropy, rtol=1e-3, atol=1e-5)
    epistemic = fitted.obs["bayes_epistemic"].to_numpy()
    assert np.all(epistemic >= 0) and np.all(epistemic <= fitted.obs["bayes_entropy"].to_numpy() + 1e-6)
    assert epistemic.max() > 0
    threshold = entry["unknown_threshold"]
    score = fitted.obs["bayes_unknown_score"].to_numpy()
    np.testing.assert_array_equal(fitted.obs["bayes_unknown"].to_numpy(), score > threshold)
    assert fitted.obs["bayes_unknown"].dtype == bool
    # the score is at least the epistemic uncertainty over its scale
    scale = entry["novelty"]["epistemic_scale"]
    assert np.all(score >= epistemic / scale - 1e-4)

    metrics = entry["metrics"]
    val = entry["split"]["validation_indices"]
    codes = fitted.obs["label"].cat.codes.to_numpy()
    assert metrics["n_validation"] == len(val) == 36 and metrics["n_train"] == 200 - N_UNLABELLED - 36
    assert np.all(codes[val] >= 0)  # only labelled cells are held out
    expected = classification_metrics(proba[val], codes[val])
    for name in ("accuracy", "ece", "nll", "brier"):
        assert metrics[name] == pytest.approx(expected[name], rel=1e-4, abs=1e-6), name
    assert metrics["accuracy"] > 0.8
    calibration = entry["calibration"]
    assert len(calibration["edges"]) == 16 and calibration["count"].sum() == len(val)
    # default threshold: conformal at alpha = 0.05 on the scores of half the held-out cells
    calibration = np.sort(entry["novelty"]["calibration"])
    assert len(calibration) == len(val) - len(val) // 2
    assert np.all(np.min(np.abs(calibration[:, None] - score[val][None, :]), axis=1) < 1e-5)
    m = int(np.floor(0.05 * (len(calibration) + 1))) - 1
    if m < 0:  # 18 calibration cells cannot certify 5 %: nothing is flagged, and a warning says so
        assert threshold == np.inf and not fitted.obs["bayes_unknown"].any()
    else:
        assert threshold == pytest.approx(calibration[len(calibration) - m - 1], rel=1e-5)
    assert entry["unknown_threshold_source"] == "conformal" and entry["unknown_alpha"] == 0.05
    assert metrics["unknown_rate_validation"] == pytest.approx(np.mean(score[val] > threshold))
    pvalue = fitted.obs["bayes_unknown_pvalue"].to_numpy()
    # in float32, as the scores are stored: a calibration cell's own score counts as "at least as high"
    at_least = calibration.astype(np.float32)[None, :] >= score[:, None]
    expected_p = (1 + at_least.sum(1)) / (len(calibration) + 1)
    np.testing.assert_allclose(pvalue, expected_p, rtol=1e-5)
    params = entry["params"]
    assert params["labels_key"] == "label" and params["use_rep"] == "X_rep" and params["max_epochs"] == 30
    assert params["inference"] == "svi" and params["seed"] == 0 and "scdgm_version" in params
    assert entry["model"]["class_name"] == "BayesianClassifierModule"
    assert {"train_loss", "validation_loss", "train_kl"} <= set(entry["history"])


def test_cells_without_a_label_are_annotated(fitted):
    hidden = fitted.obs["hidden"].to_numpy()
    assert fitted.obs["label"].isna().to_numpy()[hidden].all()
    pred = fitted.obs["bayes_pred"]
    assert pred.notna().all()
    truth = fitted.obs["cell_type"].astype(str).to_numpy()
    assert np.mean(pred.astype(str).to_numpy()[hidden] == truth[hidden]) >= 0.85  # largest class: 35 %


def test_user_threshold_and_copy(base):
    before = _snapshot(base)
    out = dgm.tl.bayes_classify(base, "label", use_rep="X_rep", unknown_threshold=0.0, copy=True, key_added="b", **FIT)
    assert _snapshot(base) == before
    assert out.uns["b"]["unknown_threshold"] == 0.0 and out.uns["b"]["unknown_threshold_source"] == "user"
    np.testing.assert_array_equal(out.obs["b_unknown"], out.obs["b_unknown_score"] > 0)
    assert "b_proba" in out.obsm and "b_pred" in out.obs


def test_same_seed_same_result(fitted, base):
    dgm.tl.bayes_classify(base, "label", use_rep="X_rep", **FIT)
    np.testing.assert_array_equal(base.obsm["bayes_proba"], fitted.obsm["bayes_proba"])
    np.testing.assert_array_equal(base.obs["bayes_epistemic"], fitted.obs["bayes_epistemic"])
    assert base.uns["bayes"]["metrics"]["nll"] == fitted.uns["bayes"]["metrics"]["nll"]
    dgm.tl.bayes_classify(base, "label", use_rep="X_rep", key_added="other", **{**FIT, "seed": 1})
    assert not np.allclose(base.obsm["other_proba"], fitted.obsm["bayes_proba"])


def test_on_a_layer_of_genes(base):
    dgm.tl.bayes_classify(base, "label", use_rep=None, layer="log", n_layers=0, **FIT)
    entry = base.uns["bayes"]
    assert entry["params"]["layer"] == "log" and "use_rep" not in entry["params"]
    assert entry["model"]["init_kwargs"]["n_input"] == base.n_vars
    # the guide is independent along the principal axes of the training cells (fewer than the genes)
    assert 1 < entry["model"]["init_kwargs"]["n_components"] <= base.n_vars
    assert list(entry["model"]["var_names"]) == list(base.var_names)
    assert entry["metrics"]["accuracy"] > 0.8


def _axes_of(columns, rows):
    from scdgm.data import feature_stats, prepare_data, principal_axes
    from scdgm.modules._bayes import SD_FLOOR

    adata = ad.AnnData(np.zeros((columns.shape[0], 1), dtype=np.float32), obsm={"X_rep": columns})
    data = prepare_data(adata, use_rep="X_rep")
    mean, sd = feature_stats(data, rows)
    return principal_axes(data, rows, mean, sd, sd_floor=SD_FLOOR), (columns[rows] - mean) / np.maximum(sd, 1e-6)


def test_principal_axes_span_the_training_cells_only():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=60), 3 * rng.normal(size=60)
    # a third column that is a mix of the first two, and a constant one: two axes carry all the variance
    columns = np.stack([a, b, a - 2 * b, np.full(60, 5.0)], axis=1).astype(np.float32)
    axes, z = _axes_of(columns, np.arange(40))
    assert axes.shape == (4, 2)
    np.testing.assert_allclose(axes.T @ axes, np.eye(2), atol=1e-5)
    np.testing.assert_allclose(z @ axes @ axes.T, z, atol=1e-4)  # nothing of the training cells is lost
    variance = ((z @ axes) ** 2).sum(0)
    assert variance[0] >= variance[1]  # largest first
    # inputs that do not vary have no axes: the features' own basis is kept
    assert _axes_of(np.full((20, 3), 2.0, dtype=np.float32), np.arange(10))[0] is None


def test_too_many_features_keep_their_own_basis(base, monkeypatch):
    import scdgm.data._stats as bayes_tl

    monkeypatch.setattr(bayes_tl, "MAX_ROTATED_FEATURES", 4)
    assert _axes_of(np.asarray(base.obsm["X_rep"]), np.arange(50))[0] is None
    dgm.tl.bayes_classify(base, "label", use_rep="X_rep", **FIT)
    assert dgm.get_model(base, "bayes").rotation is None
    assert base.uns["bayes"]["metrics"]["accuracy"] > 0.8


# --------------------------------------------------------------------------------------------------
# the stored model
def test_predict_reproduces_the_written_results(fitted):
    dgm.tl.bayes_predict(fitted, fitted, key_added="again", seed=0)
    np.testing.assert_allclose(fitted.obsm["again_proba"], fitted.obsm["bayes_proba"], rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(fitted.obs["again_pred"], fitted.obs["bayes_pred"])
    assert fitted.uns["again"]["unknown_threshold"] == fitted.uns["bayes"]["unknown_threshold"]
    assert fitted.uns["again"]["unknown_threshold_source"] == "reference"


def test_predict_on_another_anndata(fitted):
    query = ad.AnnData(np.zeros((30, 2), dtype=np.float32))
    query.obsm["X_rep"] = fitted.obsm["X_rep"][:30]
    dgm.tl.bayes_predict(query, fitted, seed=0)
    np.testing.assert_allclose(query.obsm["bayes_proba"], fitted.obsm["bayes_proba"][:30], rtol=1e-5, atol=1e-6)
    assert list(query.obs["bayes_pred"].cat.categories) == list(fitted.uns["bayes"]["classes"])
    assert {"bayes_confidence", "bayes_entropy", "bayes_epistemic", "bayes_unknown"} <= set(query.obs)
    assert query.uns["bayes"]["metrics"]["nll"] == fitted.uns["bayes"]["metrics"]["nll"]
    out = dgm.tl.bayes_predict(query, fitted, key_added="q", unknown_threshold=0.0, copy=True)
    assert "q_proba" not in query.obsm and out.uns["q"]["unknown_threshold_source"] == "user"


def test_predict_on_genes_matches_by_name(base):
    dgm.tl.bayes_classify(base, "label", use_rep=None, layer="log", n_layers=0, **FIT)
    order = np.random.default_rng(1).permutation(base.n_vars)
    query = base[:, order].copy()
    dgm.tl.bayes_predict(query, base, key_added="q")
    np.testing.assert_allclose(query.obsm["q_proba"], base.obsm["bayes_proba"], rtol=1e-5, atol=1e-6)
    missing = base[:, 5:].copy()
    before = _snapshot(missing)
    with pytest.raises(ValueError, match="5 of them are missing"):
        dgm.tl.bayes_predict(missing, base)
    assert _snapshot(missing) == before


def test_predict_refuses_another_representation(fitted):
    query = ad.AnnData(np.zeros((10, 2), dtype=np.float32))
    query.obsm["X_rep"] = np.zeros((10, 7), dtype=np.float32)
    with pytest.raises(
        ValueError, match=r"trained on 5 columns of .obsm\['X_rep'\], but this AnnData's .obsm\['X_rep'\] has 7"
    ):
        dgm.tl.bayes_predict(query, fitted)
    with pytest.raises(ValueError, match=r"reads .obsm\['X_rep'\], not genes: layer='log' does not apply"):
        dgm.tl.bayes_predict(query, fitted, layer="log")
    del query.obsm["X_rep"]
    with pytest.raises(KeyError, match=r"reads .obsm\['X_rep'\], which adata lacks"):
        dgm.tl.bayes_predict(query, fitted)
    with pytest.raises(KeyError, match="Run `dgm.tl.bayes_classify"):
        dgm.tl.bayes_predict(query, fitted, key="nothing")
    query.obsm["X_rep"] = np.full((10, 5), np.nan, dtype=np.float32)
    with pytest.raises(ValueError, match="NaN"):
        dgm.tl.bayes_predict(query, fitted)
    assert _snapshot(query) == {"obs": set(), "obsm": {"X_rep"}, "varm": set(), "layers": set(), "uns": set()}


def test_h5ad_round_trip(fitted, tmp_path):
    path = tmp_path / "bayes.h5ad"
    fitted.write_h5ad(path)
    back = ad.read_h5ad(path)
    entry = back.uns["bayes"]
    assert list(entry["classes"]) == ["type_0", "type_1", "type_2"]
    np.testing.assert_array_equal(entry["calibration"]["count"], fitted.uns["bayes"]["calibration"]["count"])
    original, rebuilt = dgm.get_model(fitted, "bayes"), dgm.get_model(back, "bayes")
    for name, tensor in original.state_dict().items():
        np.testing.assert_array_equal(rebuilt.state_dict()[name].numpy(), tensor.numpy())
    dgm.tl.bayes_predict(back, back, key_added="again", seed=3)
    dgm.tl.bayes_predict(fitted, fitted, key_added="again", seed=3)
    np.testing.assert_array_equal(back.obsm["again_proba"], fitted.obsm["again_proba"])
    np.testing.assert_allclose(back.obsm["bayes_proba"], fitted.obsm["bayes_proba"])


def test_nuts_on_a_tiny_problem(base):
    small = base[:, :3].copy()
    small.obsm["X_rep"] = base.obsm["X_rep"][:, :2]
    dgm.tl.bayes_classify(small, "label", use_rep="X_rep", inference="nuts", n_layers=0, num_samples=20, num_warmup=20)
    entry = small.uns["bayes"]
    metrics = entry["metrics"]
    assert {"divergences", "acceptance_rate", "step_size", "seconds"} <= set(metrics)
    assert metrics["seconds"] > 0 and metrics["accuracy"] > 0.6
    assert entry["params"]["inference"] == "nuts" and entry["model"]["init_kwargs"]["n_posterior_samples"] == 20
    np.testing.assert_allclose(small.obsm["bayes_proba"].sum(1), 1.0, atol=1e-5)
    module = dgm.get_model(small, "bayes")
    assert module.inference == "nuts" and module.posterior.weight_0.shape == (20, 3, 2)
    dgm.tl.bayes_predict(small, small, key_added="again")
    np.testing.assert_allclose(small.obsm["again_proba"], small.obsm["bayes_proba"], rtol=1e-5, atol=1e-6)


# --------------------------------------------------------------------------------------------------
# bad input: a clear error, and nothing written
def _fails(adata, error, match, **kwargs):
    before = _snapshot(adata)
    args = {"use_rep": "X_rep", **FIT, **kwargs}
    labels_key = args.pop("labels_key", "label")
    with pytest.raises(error, match=match):
        dgm.tl.bayes_classify(adata, labels_key, **args)
    assert _snapshot(adata) == before


def test_labels_key_not_in_obs(base):
    _fails(base, KeyError, r"labels_key='kind' is not a column of adata.obs. Available columns: \[", labels_key="kind")


def test_fewer_than_two_classes(base):
    base.obs["one"] = pd.Categorical(np.where(base.obs["cell_type"] == "type_0", "type_0", None))
    _fails(base, ValueError, r"at least two classes .* found only 'type_0'", labels_key="one")


def test_use_rep_not_in_obsm(base):
    _fails(base, KeyError, r"use_rep='X_vae' is not in adata.obsm .*Run `dgm.tl.vae\(adata\)` first", use_rep="X_vae")
    _fails(base, ValueError, "Pass layer= or use_rep=, not both", layer="log")


def test_nan_in_the_input(base):
    base.obsm["X_rep"][3, 1] = np.nan
    _fails(base, ValueError, r"adata.obsm\['X_rep'\] holds 1 NaN or infinite values")
    base.obsm["X_rep"][3, 1] = 0.0
    base.layers["log"][0, 0] = np.inf
    _fails(base, ValueError, r"adata.layers\['log'\] holds 1 NaN", use_rep=None, layer="log")


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"inference": "mcmc"}, "inference='mcmc' is not supported"),
        ({"unknown_alpha": 1.0}, "unknown_alpha must be a finite number in"),
        ({"unknown_label": ""}, "unknown_label must be a non-empty string"),
        ({"validation_fraction": 0.0}, "validation_fraction=0 leaves no held-out cells"),
        ({"unknown_threshold": -1.0}, "unknown_threshold must be a finite number >= 0"),
        ({"prior_scale": 0.0}, "prior_scale must be a finite number > 0"),
        ({"num_samples": 0}, "num_samples must be an integer >= 1"),
        ({"kl_warmup_epochs": 40}, "kl_warmup_epochs=40 exceeds max_epochs=30"),
    ],
)
def test_bad_arguments(base, kwargs, match):
    _fails(base, ValueError, match, **kwargs)


def test_a_class_with_a_single_labelled_cell_warns(base):
    labels = base.obs["label"].astype(object).to_numpy()
    type_2 = np.flatnonzero(labels == "type_2")
    labels[type_2[1:]] = None
    base.obs["sparse"] = pd.Categorical(labels)
    with pytest.warns(
        ScdgmWarning, match=r"1 class\(es\) .* single labelled cell: \['type_2'\]\. That cell is used for training only"
    ):
        dgm.tl.bayes_classify(base, "sparse", use_rep="X_rep", **FIT)
    assert list(base.uns["bayes"]["classes"]) == ["type_0", "type_1", "type_2"]
    val = base.uns["bayes"]["split"]["validation_indices"]
    assert type_2[0] not in val  # trained on, never held out
    assert base.obsm["bayes_proba"].shape == (base.n_obs, 3)


# --------------------------------------------------------------------------------------------------
# regression tests of the reliability sweep
@pytest.mark.parametrize("key_added", ["", "run/1"])
def test_unusable_key_added_is_refused_before_training(base, monkeypatch, key_added):
    import scdgm.train._fit as fit_module

    def started(*args, **kwargs):
        msg = "training started"
        raise AssertionError(msg)

    monkeypatch.setattr(fit_module, "_run_epoch", started)
    before = _snapshot(base)
    with pytest.raises(ValueError, match=f"key_added={key_added!r} is not a usable key"):
        dgm.tl.bayes_classify(base, "label", use_rep="X_rep", key_added=key_added, **FIT)
    assert _snapshot(base) == before


def test_predict_on_the_reference_keeps_its_model(fitted):
    entry = fitted.uns["bayes"]
    history = {k: np.array(v) for k, v in entry["history"].items()}
    params = dict(entry["params"])
    proba = fitted.obsm["bayes_proba"].copy()
    dgm.tl.bayes_predict(fitted, fitted, seed=0)
    assert fitted.uns["bayes_predict"]["params"]["tool"] == "bayes_predict"
    np.testing.assert_allclose(fitted.obsm["bayes_predict_proba"], proba, rtol=1e-5, atol=1e-6)
    entry = fitted.uns["bayes"]
    assert set(entry) >= {"history", "split", "model", "metrics"}
    assert dict(entry["params"]) == params
    for name, values in history.items():
        np.testing.assert_array_equal(entry["history"][name], values)
    np.testing.assert_array_equal(fitted.obsm["bayes_proba"], proba)


def test_predict_leaves_the_torch_random_state_alone(fitted):
    import torch

    query = ad.AnnData(np.zeros((30, 2), dtype=np.float32))
    query.obsm["X_rep"] = fitted.obsm["X_rep"][:30]
    torch.manual_seed(0)
    state = torch.get_rng_state()
    dgm.tl.bayes_predict(query, fitted)
    assert torch.equal(torch.get_rng_state(), state)


def test_a_diverging_classifier_raises_a_training_error(base):
    from scdgm.train import TrainingError

    before = _snapshot(base)
    with pytest.raises(TrainingError, match=r"Training diverged at epoch 0 .*Lower lr \(now 1000\)"):
        dgm.tl.bayes_classify(base, "label", use_rep="X_rep", **{**FIT, "lr": 1e3})
    assert _snapshot(base) == before


# --------------------------------------------------------------------------------------------------
# knowing when it does not know
def _novel(seed, n_cells=600):
    """Cells of 4 types; type_3 is never labelled (unseen), 40 % of the others are unlabelled known cells."""
    adata = dgm.datasets.simulate(n_cells, 40, n_cell_types=4, marker_fold_change=10.0, seed=seed)
    log = np.log1p(adata.X.toarray())
    centred = log - log.mean(0)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    adata.obsm["X_rep"] = (centred @ vt[:6].T).astype(np.float32)
    truth = adata.obs["cell_type"].astype(str).to_numpy()
    rng = np.random.default_rng(seed)
    unlabelled = (truth == "type_3") | (rng.random(adata.n_obs) < 0.4)
    adata.obs["label"] = pd.Categorical(np.where(unlabelled, None, truth))
    return adata, truth, unlabelled


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_known_cells_are_flagged_at_most_alpha_and_unseen_ones_mostly(seed):
    adata, truth, unlabelled = _novel(seed)
    dgm.tl.bayes_classify(adata, "label", use_rep="X_rep", validation_fraction=0.3, **{**FIT, "seed": seed})
    flagged = adata.obs["bayes_unknown"].to_numpy()
    known_new = unlabelled & (truth != "type_3")  # known types the classifier never saw these cells of
    # conformal: at most alpha in expectation; 3 binomial standard errors of tolerance on ~140 cells
    tolerance = 3 * np.sqrt(0.05 * 0.95 / known_new.sum())
    assert flagged[known_new].mean() <= 0.05 + tolerance
    # the unseen type is flagged several times as often (its cells lie between or beyond the known ones)
    assert flagged[truth == "type_3"].mean() >= 5 * 0.05
    from scdgm._metrics import auroc

    score = adata.obs["bayes_unknown_score"].to_numpy()
    assert auroc(score[unlabelled], truth[unlabelled] == "type_3") >= 0.8


def test_unknown_label_and_colours():
    adata, truth, _ = _novel(0, n_cells=300)
    adata.obs["label"] = adata.obs["label"].cat.set_categories(["type_0", "type_1", "type_2"])
    adata.uns["label_colors"] = np.asarray(["#ff0000", "#00ff00", "#0000ff"], dtype=object)
    dgm.tl.bayes_classify(adata, "label", use_rep="X_rep", unknown_label="unknown", **FIT)
    pred = adata.obs["bayes_pred"]
    assert list(pred.cat.categories) == ["type_0", "type_1", "type_2", "unknown"]
    np.testing.assert_array_equal(pred.to_numpy() == "unknown", adata.obs["bayes_unknown"].to_numpy())
    assert list(adata.uns["bayes_pred_colors"]) == ["#ff0000", "#00ff00", "#0000ff", "#b3b3b3"]
    with pytest.raises(ValueError, match="unknown_label='type_0' is one of the classes"):
        dgm.tl.bayes_classify(adata, "label", use_rep="X_rep", unknown_label="type_0", key_added="x", **FIT)


def test_predict_scores_new_cells_as_the_reference_does(fitted):
    query = fitted[fitted.obs["hidden"].to_numpy()].copy()
    dgm.tl.bayes_predict(query, fitted, key_added="q", seed=0)
    hidden = fitted.obs["hidden"].to_numpy()
    # cells the classifier did not train on get the same score, p-value and flag
    np.testing.assert_allclose(query.obs["q_unknown_score"], fitted.obs["bayes_unknown_score"][hidden], rtol=1e-5)
    np.testing.assert_allclose(query.obs["q_unknown_pvalue"], fitted.obs["bayes_unknown_pvalue"][hidden], rtol=1e-6)
    assert query.uns["q"]["unknown_threshold_source"] == "reference"
    strict = dgm.tl.bayes_predict(query, fitted, key_added="s", unknown_alpha=0.5, copy=True)
    assert strict.uns["s"]["unknown_threshold_source"] == "conformal"
    assert strict.obs["s_unknown"].sum() >= query.obs["q_unknown"].sum()


def test_early_stopping_watches_the_held_out_label_nll(fitted):
    entry = fitted.uns["bayes"]
    assert entry["metrics"]["monitor"] == "nll"
    history = entry["history"]
    # the kept epoch is the one of lowest held-out NLL (ties aside), from the first epoch on
    assert entry["metrics"]["best_epoch"] == int(np.argmin(history["validation_nll"]))
