import anndata as ad
import numpy as np
import pandas as pd
import pytest

from scdgm.data import CategoryEncoding


def test_fit_sorts_plain_values_and_ignores_missing():
    enc = CategoryEncoding.fit(np.array(["b", "a", None, "c", "a"], dtype=object), "batch")
    assert enc.key == "batch"
    assert enc.categories == ("a", "b", "c")


def test_fit_keeps_categorical_order_and_drops_unused():
    values = pd.Series(pd.Categorical(["z", "x", "z"], categories=["z", "y", "x"]))
    enc = CategoryEncoding.fit(values, "cell_type")
    assert enc.categories == ("z", "x")
    np.testing.assert_array_equal(enc.encode(values), [0, 1, 0])


def test_fit_on_numbers_uses_strings():
    enc = CategoryEncoding.fit(np.array([3, 1, 3, 2]), "donor")
    assert enc.categories == ("1", "2", "3")
    np.testing.assert_array_equal(enc.encode([1, 2, 3]), [0, 1, 2])


def test_encode_decode_round_trip():
    values = np.array(["NK", "T", "B", "T"], dtype=object)
    enc = CategoryEncoding.fit(values, "cell_type")
    codes = enc.encode(values)
    assert codes.dtype == np.int64
    np.testing.assert_array_equal(enc.decode(codes), values)


def test_encode_follows_the_encoding_not_the_categorical_order():
    enc = CategoryEncoding("batch", ("b0", "b1"))
    values = pd.Series(pd.Categorical(["b1", "b0", "b1"], categories=["b1", "b0"]))
    np.testing.assert_array_equal(enc.encode(values), [1, 0, 1])


@pytest.mark.parametrize("categorical", [False, True])
def test_unknown_categories_are_refused_with_both_lists(categorical):
    enc = CategoryEncoding("batch", ("b0", "b1"))
    values = pd.Series(["b0", "b7", "b9", "b7"])
    if categorical:
        values = values.astype("category")
    with pytest.raises(ValueError, match=r"2 value\(s\) of 'batch' are not among.*'b7', 'b9'.*known \['b0', 'b1'\]"):
        enc.encode(values)


def test_missing_values_need_allow_missing():
    enc = CategoryEncoding("cell_type", ("B", "T"))
    values = pd.Series(["T", None, "B", np.nan], dtype=object)
    with pytest.raises(ValueError, match=r"2 cell\(s\) have a missing value"):
        enc.encode(values)
    np.testing.assert_array_equal(enc.encode(values, allow_missing=True), [1, -1, 0, -1])
    categorical = pd.Series(pd.Categorical(["T", None, "B"]))
    np.testing.assert_array_equal(enc.encode(categorical, allow_missing=True), [1, -1, 0])


def test_dict_round_trip_survives_h5ad(tmp_path):
    enc = CategoryEncoding("batch", ("b1", "b0", "10x v3"))
    stored = enc.to_dict()
    assert isinstance(stored["categories"], np.ndarray)
    assert CategoryEncoding.from_dict(stored) == enc

    adata = ad.AnnData(np.zeros((2, 2), dtype=np.float32))
    adata.uns["model"] = {"encodings": {"batch": stored}}
    adata.write_h5ad(tmp_path / "enc.h5ad")
    reread = ad.read_h5ad(tmp_path / "enc.h5ad")
    assert CategoryEncoding.from_dict(reread.uns["model"]["encodings"]["batch"]) == enc


def test_duplicate_categories_are_refused():
    with pytest.raises(ValueError, match="must be unique"):
        CategoryEncoding("batch", ("a", "a"))


def test_encoding_is_frozen():
    enc = CategoryEncoding("batch", ("a",))
    with pytest.raises(AttributeError):
        enc.key = "other"
