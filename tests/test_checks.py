"""The shared argument checks: each names the argument, says what is wrong and returns the clean value."""

import re

import numpy as np
import pytest

from scdgm._checks import check_bool, check_choice, check_fraction, check_int, check_number, check_positive


def test_numpy_numbers_are_numbers():
    assert check_int("n_latent", np.int64(5)) == 5 and type(check_int("n_latent", np.int64(5))) is int
    assert check_positive("lr", np.float32(0.5)) == 0.5 and type(check_positive("lr", np.float32(0.5))) is float
    assert check_fraction("dropout", np.float64(0.0)) == 0.0


@pytest.mark.parametrize("value", [True, np.True_])
def test_bools_are_bools(value):
    assert check_bool("copy", value) is True
    assert check_bool("copy", not value) is False


@pytest.mark.parametrize("value", ["False", 0, 1, None])
def test_a_bool_argument_refuses_what_is_not_a_bool(value):
    with pytest.raises(ValueError, match=re.escape(f"copy must be True or False, not {value!r}.")):
        check_bool("copy", value)


@pytest.mark.parametrize("value", ["0.1", None, True, float("nan"), float("inf"), 0, -1e-3])
def test_a_positive_number_refuses_strings_bools_and_non_finite_values(value):
    with pytest.raises(ValueError, match=re.escape(f"lr must be a finite number > 0, not {value!r}.")):
        check_positive("lr", value)


@pytest.mark.parametrize("value", ["0.1", None, 1.0, -0.1])
def test_a_fraction_names_its_interval(value):
    with pytest.raises(ValueError, match=re.escape(f"dropout must be a finite number in [0, 1), not {value!r}.")):
        check_fraction("dropout", value)
    assert check_fraction("dropout", 1.0, upper_inclusive=True) == 1.0


@pytest.mark.parametrize("value", [0, 1.0, "3", True, np.float64(2.0)])
def test_an_integer_refuses_what_is_not_an_integer(value):
    with pytest.raises(ValueError, match=re.escape(f"max_epochs must be an integer >= 1, not {value!r}.")):
        check_int("max_epochs", value)


def test_bounds_are_written_the_way_they_are_checked():
    with pytest.raises(ValueError, match=r"beta must be a finite number >= 0, not -1"):
        check_number("beta", -1, minimum=0.0)
    with pytest.raises(ValueError, match=r"q must be a finite number in \(0, 1\], not 0"):
        check_number("q", 0, minimum=0.0, maximum=1.0, exclusive_minimum=True)
    with pytest.raises(ValueError, match=r"t must be a finite number < 2, not 2"):
        check_number("t", 2, maximum=2.0, exclusive_maximum=True)
    assert check_number("free", -1e300) == -1e300


def test_a_choice_is_matched_by_value_and_type():
    assert check_choice("likelihood", "nb", ["nb", "zinb"]) == "nb"
    with pytest.raises(ValueError, match=r"likelihood='gaussian' is not supported. Choose one of \['nb', 'zinb'\]"):
        check_choice("likelihood", "gaussian", ["nb", "zinb"])
    with pytest.raises(ValueError, match="n=1.0 is not supported"):
        check_choice("n", 1.0, [1, 2])  # 1.0 == 1, but a float is not the int option


def test_an_array_is_not_a_choice():
    with pytest.raises(ValueError, match="likelihood=array"):
        check_choice("likelihood", np.array(["nb", "zinb"]), ["nb", "zinb"])
