"""The kernels of tl.synthetic_quality on small arrays, each against a reference (scipy, sklearn, dcor, brute force)."""

import dcor
import numpy as np
import pytest
from scipy import stats
from scipy.spatial.distance import cdist, pdist

from scdgm import _synthetic_metrics as sm


@pytest.fixture
def rng():
    return np.random.default_rng(0)


def _energy_brute_force(x, y):
    """The Cramér statistic written out term by term, phi(z) = sqrt(z) / 2 of the squared distance."""
    m, n = len(x), len(y)

    def phi(a, b):
        return np.sqrt(cdist(a, b, "sqeuclidean")) / 2

    return m * n / (m + n) * (2 / (m * n) * phi(x, y).sum() - phi(x, x).sum() / m**2 - phi(y, y).sum() / n**2)


def test_value_kind():
    assert sm.value_kind([np.array([[0, 1], [1, 0]])]) == "binary"
    assert sm.value_kind([np.array([True, False])]) == "binary"
    assert sm.value_kind([np.array([0.0, 1.0]), np.array([2.0, 7.0])]) == "counts"
    assert sm.value_kind([np.array([0, 3], dtype=np.int32)]) == "counts"
    assert sm.value_kind([np.array([0.0, 1.0]), np.array([0.5])]) == "continuous"
    assert sm.value_kind([np.array([0, -1])]) == "continuous"
    assert sm.value_kind([np.array([2.0, -3.0])]) == "continuous"
    assert sm.value_kind([np.array([]), np.array([1.0])]) == "binary"


def test_log_normalize():
    counts = np.array([[1.0, 3.0, 0.0], [0.0, 0.0, 0.0], [5.0, 5.0, 10.0]])
    out = sm.log_normalize(counts, "counts")
    np.testing.assert_allclose(np.expm1(out).sum(axis=1), [1e4, 0, 1e4])
    np.testing.assert_allclose(out[0], np.log1p([2500.0, 7500.0, 0.0]))
    np.testing.assert_array_equal(sm.log_normalize(counts, "binary"), counts)
    np.testing.assert_array_equal(sm.log_normalize(counts - 3, "continuous"), counts - 3)


def test_top_variable_genes():
    X = np.array([[0.0, 1, 5, 2], [0, 3, 5, 2.5], [0, 5, 5, 3]])
    np.testing.assert_array_equal(sm.top_variable_genes(X, 2), [1, 3])
    np.testing.assert_array_equal(sm.top_variable_genes(X, 10), [1, 3])  # constant genes never chosen


def test_pearson(rng):
    a, b = rng.normal(size=30), rng.normal(size=30)
    assert sm.pearson(a, b) == pytest.approx(stats.pearsonr(a, b)[0], abs=1e-12)
    a[3], b[7] = np.nan, np.inf
    keep = np.isfinite(a) & np.isfinite(b)
    assert sm.pearson(a, b) == pytest.approx(stats.pearsonr(a[keep], b[keep])[0], abs=1e-12)
    assert np.isnan(sm.pearson(np.ones(5), np.arange(5)))
    assert np.isnan(sm.pearson([1.0], [2.0]))


@pytest.mark.parametrize("integer", [True, False])
def test_ks_matches_scipy(rng, integer):
    x = rng.poisson(1.5, size=(40, 7)) if integer else rng.normal(size=(40, 7))
    y = rng.poisson(2.0, size=(25, 7)) if integer else rng.normal(0.5, size=(25, 7))
    expected = [stats.ks_2samp(x[:, g], y[:, g]).statistic for g in range(7)]
    np.testing.assert_allclose(sm.ks_statistic_columns(x, y, block_columns=3), expected, atol=1e-12)
    assert sm.ks_statistic(x[:, 0], y[:, 0]) == pytest.approx(expected[0], abs=1e-12)
    with_nan = np.r_[x[:, 1].astype(float), np.nan]
    assert sm.ks_statistic(with_nan, y[:, 1]) == pytest.approx(expected[1], abs=1e-12)
    assert np.isnan(sm.ks_statistic([np.nan], y[:, 1]))


def test_gene_and_cell_statistics(rng):
    X = rng.poisson(1.0, size=(50, 6)).astype(float)
    X[:, 2] = 0
    genes = sm.gene_statistics(X)
    np.testing.assert_allclose(genes["mean"], X.mean(0))
    np.testing.assert_allclose(genes["variance"], X.var(0, ddof=1))
    kept = np.delete(X, 2, axis=1)
    np.testing.assert_allclose(np.delete(genes["cv"], 2), kept.std(0, ddof=1) / kept.mean(0))
    assert np.isnan(genes["cv"][2])
    np.testing.assert_allclose(genes["zero_fraction"], (X == 0).mean(0))
    cells = sm.cell_statistics(X)
    np.testing.assert_allclose(cells["library_size"], X.sum(1))
    np.testing.assert_allclose(cells["zero_fraction"], (X == 0).mean(1))


def test_correlation_and_covariance(rng):
    X = rng.normal(size=(30, 5))
    np.testing.assert_allclose(sm.correlation_matrix(X), np.corrcoef(X.T), atol=1e-12)
    np.testing.assert_allclose(sm.covariance_matrix(X), np.cov(X.T), atol=1e-12)
    X[:, 1] = 4.0
    corr = sm.correlation_matrix(X)
    assert np.all(corr[1] == 0) and np.all(corr[:, 1] == 0)
    M = np.arange(9.0).reshape(3, 3)
    np.testing.assert_array_equal(sm.upper_triangle(M), [1, 2, 5])
    np.testing.assert_array_equal(sm.upper_triangle(M, diagonal=True), [0, 1, 2, 4, 5, 8])


def test_log_odds_ratios_match_two_by_two_tables(rng):
    X = rng.poisson(0.8, size=(60, 4)).astype(float)
    threshold = 0.5
    out = sm.log_odds_ratios(X, threshold)
    on = X > threshold
    for i in range(4):
        for j in range(4):
            n11 = np.sum(on[:, i] & on[:, j]) + 0.5
            n10 = np.sum(on[:, i] & ~on[:, j]) + 0.5
            n01 = np.sum(~on[:, i] & on[:, j]) + 0.5
            n00 = np.sum(~on[:, i] & ~on[:, j]) + 0.5
            assert out[i, j] == pytest.approx(np.log(n11 * n00 / (n10 * n01)), abs=1e-12)
    np.testing.assert_allclose(out, out.T)


@pytest.mark.parametrize("block_rows", [None, 7])
def test_energy_statistic_is_half_of_dcor(rng, block_rows):
    x, y = rng.normal(size=(40, 5)), rng.normal(0.3, 1.5, size=(27, 5))
    statistic, p_value = sm.energy_test(x, y, n_permutations=0, seed=0, block_rows=block_rows)
    assert np.isnan(p_value)
    assert statistic == pytest.approx(0.5 * dcor.homogeneity.energy_test_statistic(x, y), rel=1e-6, abs=1e-9)
    assert statistic == pytest.approx(_energy_brute_force(x, y), rel=1e-9)


def test_energy_of_identical_samples_is_zero(rng):
    x = rng.normal(size=(20, 3))
    statistic, p_value = sm.energy_test(x, x.copy(), n_permutations=50, seed=1)
    assert statistic == pytest.approx(0.0, abs=1e-9)
    assert p_value == 1.0


def test_energy_permutations_match_a_brute_force_loop(rng):
    x, y = rng.normal(size=(23, 4)), rng.normal(0.4, size=(17, 4))
    n_permutations = 60
    statistic, p_value = sm.energy_test(x, y, n_permutations=n_permutations, seed=3, block_rows=9)
    pooled = np.concatenate([x, y])
    permuted = [_energy_brute_force(pooled[order[:23]], pooled[order[23:]]) for order in sm.permutations(40, 60, 3)]
    assert statistic == pytest.approx(_energy_brute_force(x, y), rel=1e-9)
    expected = (1 + sum(t >= statistic - 1e-9 * statistic for t in permuted)) / (1 + n_permutations)
    assert p_value == pytest.approx(expected)
    assert 0 < p_value < 1


def test_energy_test_detects_a_shift_and_not_its_absence(rng):
    x = rng.normal(size=(60, 3))
    _, shifted = sm.energy_test(x, rng.normal(1.0, size=(60, 3)), n_permutations=199, seed=0)
    assert shifted == pytest.approx(1 / 200)
    same = [sm.energy_test(x, rng.normal(size=(60, 3)), n_permutations=99, seed=s)[1] for s in range(5)]
    assert min(same) > 0.01


def test_permutations_are_seeded():
    first = sm.permutations(10, 4, 5)
    np.testing.assert_array_equal(first, sm.permutations(10, 4, 5))
    assert not np.array_equal(first, sm.permutations(10, 4, 6))
    np.testing.assert_array_equal(np.sort(first, axis=1), np.tile(np.arange(10), (4, 1)))


@pytest.mark.parametrize("block_rows", [None, 5])
def test_mmd_matches_the_direct_formula(rng, block_rows):
    x, y = rng.normal(size=(15, 3)), rng.normal(0.5, size=(12, 3))
    sigma = 1.7

    def k(a, b):
        return np.exp(-cdist(a, b, "sqeuclidean") / (2 * sigma**2))

    m, n = len(x), len(y)
    kxx, kyy = k(x, x), k(y, y)
    expected = (
        (kxx.sum() - np.trace(kxx)) / (m * (m - 1)) + (kyy.sum() - np.trace(kyy)) / (n * (n - 1)) - 2 * k(x, y).mean()
    )
    assert sm.mmd2_unbiased(x, y, bandwidth=sigma, block_rows=block_rows) == pytest.approx(expected, rel=1e-10)


def test_median_distance(rng):
    x = rng.normal(size=(50, 4))
    assert sm.median_distance(x, seed=0) == pytest.approx(np.median(pdist(x)))
    sub = sm.median_distance(x, seed=0, max_points=20)
    assert sub == sm.median_distance(x, seed=0, max_points=20)
    assert sub != pytest.approx(np.median(pdist(x)), rel=1e-12)


def test_classifier_auroc(rng):
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    x, y = rng.normal(size=(40, 3)), rng.normal(0.5, size=(30, 3))
    features, target = np.concatenate([x, y]), np.r_[np.zeros(40), np.ones(30)]
    proba = cross_val_predict(
        RandomForestClassifier(n_estimators=100, random_state=4),
        features,
        target,
        cv=StratifiedKFold(5, shuffle=True, random_state=4),
        method="predict_proba",
    )[:, 1]
    assert sm.classifier_auroc(x, y, seed=4) == pytest.approx(roc_auc_score(target, proba))
    assert sm.classifier_auroc(x, x + 10, seed=0) == 1.0
    assert sm.classifier_auroc(x, rng.normal(size=(40, 3)), seed=0) < 0.7


def test_fit_pca_matches_svd(rng):
    X = rng.normal(size=(30, 6)) @ rng.normal(size=(6, 6))
    mean, axes = sm.fit_pca(X, 3, seed=0)
    np.testing.assert_allclose(mean, X.mean(0))
    _, _, vt = np.linalg.svd(X - X.mean(0), full_matrices=False)
    np.testing.assert_allclose(np.abs(axes.T @ vt[:3].T), np.eye(3), atol=1e-8)
    assert sm.fit_pca(X[:4], 30, seed=0)[1].shape == (6, 3)  # at most cells - 1 components


def test_compare_to_reference(rng):
    reference = rng.poisson(2.0, size=(40, 12)).astype(float)
    other = rng.poisson(2.0, size=(30, 12)).astype(float)
    results = sm.compare_to_reference(
        reference,
        {"same": reference.copy(), "other": other},
        kind="counts",
        n_top_genes=5,
        n_pcs=4,
        binarize_threshold=0,
        n_permutations=20,
        seed=0,
    )
    assert list(results) == ["same", "other"]
    assert list(results["same"]) == list(sm.METRICS)
    same = results["same"]
    assert same["n_reference_cells"] == 40 and results["other"]["n_cells"] == 30
    for metric in (
        "correlation_mae",
        "covariance_mae",
        "log_odds_ratio_mae",
        "gene_expression_ks",
        "cell_library_size_ks",
    ):
        assert same[metric] == pytest.approx(0.0, abs=1e-12), metric
    for metric in ("gene_mean_pearson", "correlation_pearson", "covariance_pearson", "log_odds_ratio_pearson"):
        assert same[metric] == pytest.approx(1.0), metric
    assert same["energy_statistic"] == pytest.approx(0.0, abs=1e-9)
    assert same["energy_pvalue"] == 1.0
    assert results["other"]["correlation_mae"] > 0.05
