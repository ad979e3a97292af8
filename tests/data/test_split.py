import numpy as np
import pytest

from scdgm.data import split_indices


def _check_partition(train, val, n):
    assert train.dtype == np.int64 and val.dtype == np.int64
    assert np.all(np.diff(train) > 0) and np.all(np.diff(val) > 0)
    assert not np.intersect1d(train, val).size
    np.testing.assert_array_equal(np.sort(np.concatenate([train, val])), np.arange(n))


def test_split_is_a_reproducible_partition():
    train, val = split_indices(100, validation_fraction=0.2, seed=3)
    _check_partition(train, val, 100)
    assert len(val) == 20
    again = split_indices(100, validation_fraction=0.2, seed=3)
    np.testing.assert_array_equal(again[1], val)
    other = split_indices(100, validation_fraction=0.2, seed=4)
    assert not np.array_equal(other[1], val)


def test_zero_fraction_gives_no_validation():
    train, val = split_indices(10, validation_fraction=0.0, seed=0)
    assert val.size == 0
    np.testing.assert_array_equal(train, np.arange(10))


@pytest.mark.parametrize(("n", "fraction"), [(2, 0.01), (5, 0.01), (5, 0.99), (3, 0.5)])
def test_both_sets_get_a_cell(n, fraction):
    train, val = split_indices(n, validation_fraction=fraction, seed=0)
    _check_partition(train, val, n)
    assert len(train) >= 1 and len(val) >= 1


def test_single_cell_stays_in_training():
    train, val = split_indices(1, validation_fraction=0.5, seed=0)
    np.testing.assert_array_equal(train, [0])
    assert val.size == 0


@pytest.mark.parametrize("fraction", [-0.1, 1.0, 1.5, float("nan")])
def test_fraction_outside_range_is_refused(fraction):
    with pytest.raises(ValueError, match=r"validation_fraction must lie in \[0, 1\)"):
        split_indices(10, validation_fraction=fraction, seed=0)


def test_stratified_split_keeps_proportions_and_skips_unlabelled():
    codes = np.repeat([0, 1, 2, -1], [50, 30, 20, 7])
    np.random.default_rng(0).shuffle(codes)
    train, val = split_indices(len(codes), validation_fraction=0.2, seed=1, stratify=codes)
    assert not np.intersect1d(train, val).size
    labelled = np.flatnonzero(codes >= 0)
    np.testing.assert_array_equal(np.sort(np.concatenate([train, val])), labelled)
    assert [int(np.sum(codes[val] == c)) for c in range(3)] == [10, 6, 4]
    assert [int(np.sum(codes[train] == c)) for c in range(3)] == [40, 24, 16]
    again = split_indices(len(codes), validation_fraction=0.2, seed=1, stratify=codes)
    np.testing.assert_array_equal(again[1], val)


def test_stratified_small_classes_reach_both_sets():
    codes = np.array([0, 0, 1, 1, 1, 2])
    train, val = split_indices(6, validation_fraction=0.1, seed=0, stratify=codes)
    assert set(codes[val]) == {0, 1}
    assert set(codes[train]) == {0, 1, 2}


def test_stratify_needs_one_code_per_cell():
    with pytest.raises(ValueError, match="one class code per cell"):
        split_indices(5, validation_fraction=0.2, seed=0, stratify=np.zeros(4, dtype=np.int64))
    with pytest.raises(ValueError, match="integer class codes"):
        split_indices(2, validation_fraction=0.2, seed=0, stratify=np.array(["a", "b"]))
