"""Conformal p-values and the novelty score, against direct formulas."""

import numpy as np
import pytest

from scdgm._novelty import NoveltyScorer, conformal_pvalues, conformal_threshold


def test_pvalues_count_the_calibration_scores_at_least_as_high():
    rng = np.random.default_rng(0)
    calibration, scores = rng.normal(size=50), rng.normal(size=200)
    expected = (1 + (calibration[None, :] >= scores[:, None]).sum(1)) / 51
    np.testing.assert_allclose(conformal_pvalues(calibration, scores), expected)
    assert np.isnan(conformal_pvalues(np.empty(0), scores)).all()


@pytest.mark.parametrize(("n", "alpha"), [(19, 0.05), (50, 0.05), (99, 0.1), (200, 0.01)])
def test_threshold_is_where_the_pvalue_drops_to_alpha(n, alpha):
    calibration = np.random.default_rng(n).normal(size=n)
    threshold = conformal_threshold(calibration, alpha)
    grid = np.linspace(-4, 4, 2001)
    np.testing.assert_array_equal(conformal_pvalues(calibration, grid) <= alpha, grid > threshold)


def test_too_few_calibration_cells_flag_nothing():
    assert conformal_threshold(np.arange(10.0), 0.05) == np.inf


def test_exchangeable_cells_are_flagged_at_most_alpha_on_average():
    rng = np.random.default_rng(1)
    rates = []
    for _ in range(400):
        calibration, new = rng.normal(size=40), rng.normal(size=40)
        rates.append(np.mean(new > conformal_threshold(calibration, 0.1)))
    assert np.mean(rates) <= 0.1 + 0.01


def test_distances_leave_the_cell_itself_out_and_scales_come_from_held_out_cells():
    reference = np.array([[0.0], [1.0], [3.0]])
    held_out = np.array([[0.5], [2.0], [4.0]])
    scorer = NoveltyScorer.fit(reference, held_out, np.zeros(3), n_neighbors=1)
    np.testing.assert_allclose(scorer.distances(reference, exclude_self=True), [1.0, 1.0, 2.0])
    np.testing.assert_allclose(scorer.distances(np.array([[10.0]])), [7.0])
    assert scorer.distance_scale == pytest.approx(np.quantile([0.5, 1.0, 1.0], 0.95))
    # the larger of the two ratios to their scales
    assert scorer.epistemic_scale == 1.0  # no epistemic uncertainty at all: scale 1
    np.testing.assert_allclose(scorer.score([scorer.distance_scale * 2], [0.5]), [2.0])


def test_record_round_trip():
    rng = np.random.default_rng(0)
    scorer = NoveltyScorer.fit(rng.normal(size=(30, 3)), rng.normal(size=(10, 3)), np.linspace(0, 1, 10))
    scorer.calibrate([0.3, 0.1, 0.2])
    back = NoveltyScorer.from_uns(scorer.to_uns())
    np.testing.assert_array_equal(back.calibration, [0.1, 0.2, 0.3])
    assert back.distance_scale == scorer.distance_scale and back.n_neighbors == scorer.n_neighbors
