"""The PatternExtractor's kernels: IPF against a statsmodels Poisson GLM, tables, selection, patterns and MDS."""

import itertools

import numpy as np
import pytest
import statsmodels.api as sm

from scdgm._loglinear import (
    classical_mds,
    contingency_tables,
    g_squared,
    hidden_distributions,
    ipf,
    js_divergence,
    pattern_coordinates,
    pattern_frequencies,
    select_genes,
    top_patterns,
)


def _glm(table, terms):
    """Poisson GLM of a 2 x ... x 2 table with the given interaction terms (tuples of variable positions)."""
    cells = np.array(list(itertools.product((0.0, 1.0), repeat=table.ndim)))
    columns = [np.ones(len(cells))]
    for term in terms:
        columns.append(np.prod(cells[:, list(term)], axis=1))
    fit = sm.GLM(table.ravel(), np.column_stack(columns), family=sm.families.Poisson()).fit()
    return fit.fittedvalues.reshape(table.shape), fit.deviance


def _all_subsets(variables):
    return [s for r in range(1, len(variables) + 1) for s in itertools.combinations(variables, r)]


def test_ipf_of_the_selection_model_matches_a_poisson_glm():
    # [hidden unit, two selected genes, candidate]: the model [H S1 S2][C]
    table = np.random.default_rng(0).integers(0, 40, size=(2, 2, 2, 2)).astype(float)
    table[0, 1, 1, 0] = 0  # a sampling zero
    fitted = ipf(table, [(0, 1, 2), (3,)])
    expected, deviance = _glm(table, [*_all_subsets((0, 1, 2)), (3,)])
    # (a margin cell of zero is fitted 0 by IPF and ~1e-9 by the GLM's iterations)
    np.testing.assert_allclose(fitted, expected, rtol=1e-6, atol=1e-6)
    assert g_squared(table, fitted) == pytest.approx(deviance, rel=1e-6)


def test_ipf_of_a_non_decomposable_model_matches_a_poisson_glm():
    # no three-way interaction [AB][AC][BC]: no closed form, IPF iterates
    table = np.random.default_rng(1).integers(1, 50, size=(2, 2, 2)).astype(float)
    fitted = ipf(table, [(0, 1), (0, 2), (1, 2)], tol=1e-10, max_iter=1000)
    expected, deviance = _glm(table, [(0,), (1,), (2,), (0, 1), (0, 2), (1, 2)])
    np.testing.assert_allclose(fitted, expected, rtol=1e-6)
    assert g_squared(table, fitted) == pytest.approx(deviance, rel=1e-5)
    # the fit reproduces every margin of the model
    np.testing.assert_allclose(fitted.sum(2), table.sum(2))


def test_ipf_fits_a_batch_of_tables_at_once():
    tables = np.random.default_rng(2).integers(0, 30, size=(3, 4, 2, 2, 2)).astype(float)
    batch = ipf(tables, [(0, 1), (2,)], batch_dims=2)
    for i, j in itertools.product(range(3), range(4)):
        np.testing.assert_allclose(batch[i, j], ipf(tables[i, j], [(0, 1), (2,)]))
    deviance = g_squared(tables, batch, batch_dims=2)
    assert deviance.shape == (3, 4)
    assert deviance[1, 2] == pytest.approx(g_squared(tables[1, 2], batch[1, 2]))
    with pytest.raises(ValueError, match="margins name variables"):
        ipf(tables[0, 0], [(0, 3)])


def test_contingency_tables_count_every_combination():
    rng = np.random.default_rng(3)
    visible = rng.random((200, 5)) < 0.5
    hidden = rng.random((200, 3)) < 0.4
    tables = contingency_tables(visible, hidden, [1, 3], np.array([0, 4]))
    assert tables.shape == (3, 2, 2, 2, 2, 2)
    for unit, (c, gene) in itertools.product(range(3), enumerate([0, 4])):
        for h, s1, s2, x in itertools.product((0, 1), repeat=4):
            expected = np.sum(
                (hidden[:, unit] == h) & (visible[:, 1] == s1) & (visible[:, 3] == s2) & (visible[:, gene] == x)
            )
            assert tables[unit, c, h, s1, s2, x] == expected


def test_selection_finds_the_planted_module():
    rng = np.random.default_rng(4)
    n = 3000
    hidden = rng.random((n, 4)) < 0.5
    visible = rng.random((n, 12)) < 0.5
    # genes 7 and 2 follow hidden unit 3, gene 9 follows gene 7
    visible[:, 7] = np.where(hidden[:, 3], rng.random(n) < 0.9, rng.random(n) < 0.1)
    visible[:, 2] = np.where(hidden[:, 3], rng.random(n) < 0.8, rng.random(n) < 0.2)
    visible[:, 9] = np.where(visible[:, 7], rng.random(n) < 0.7, rng.random(n) < 0.3)
    selection = select_genes(visible, hidden, 3)
    assert selection.genes == [7, 2, 9]
    assert selection.hidden_units[:2] == [3, 3]
    assert all(d > 100 for d in selection.deviance)


def test_top_patterns_and_frequencies():
    rows = np.array([[1, 0], [1, 0], [1, 0], [0, 0], [0, 0], [1, 1]], dtype=bool)
    patterns, counts = top_patterns(rows, 5)
    np.testing.assert_array_equal(patterns, [[1, 0], [0, 0], [1, 1]])
    np.testing.assert_array_equal(counts, [3, 2, 1])
    np.testing.assert_allclose(pattern_frequencies(rows, patterns[:2]), [0.5, 1 / 3])
    assert top_patterns(rows, 1)[0].tolist() == [[1, 0]]


def test_js_divergence_bounds():
    p = np.array([0.5, 0.5, 0.0])
    assert js_divergence(p, p) == pytest.approx(0.0)
    assert js_divergence(np.array([1.0, 0.0]), np.array([0.0, 1.0])) == pytest.approx(np.log(2))
    q = np.array([0.1, 0.2, 0.7])
    assert js_divergence(p, q) == pytest.approx(js_divergence(q, p))


def test_classical_mds_recovers_euclidean_points():
    points = np.array([[0.0, 0.0], [3.0, 0.0], [0.0, 4.0], [3.0, 4.0], [1.0, 1.0]])
    distances = np.linalg.norm(points[:, None] - points[None], axis=-1)
    coordinates = classical_mds(distances, 2)
    np.testing.assert_allclose(np.linalg.norm(coordinates[:, None] - coordinates[None], axis=-1), distances, atol=1e-8)
    assert classical_mds(distances[:2, :2], 2).shape == (2, 2)


def test_pattern_coordinates_from_hidden_distributions():
    rng = np.random.default_rng(5)
    visible = rng.random((500, 3)) < 0.5
    hidden = np.column_stack([visible[:, 0], rng.random(500) < 0.5])
    patterns, _ = top_patterns(visible, 8)
    distributions = hidden_distributions(visible, hidden, patterns)
    np.testing.assert_allclose(distributions.sum(1), 1.0)
    distances, coordinates = pattern_coordinates(visible, hidden, patterns)
    assert coordinates.shape == (len(patterns), 2)
    np.testing.assert_allclose(distances, distances.T)
    assert np.all(np.diag(distances) == 0) and distances.max() <= np.sqrt(np.log(2)) + 1e-12
    # patterns that differ in the gene the hidden unit copies are far apart, the others close
    same = patterns[:, 0][:, None] == patterns[:, 0][None]
    assert distances[same].max() < distances[~same].min()
