import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from anndata.abc import CSRDataset

from scdgm._warnings import ScdgmWarning
from scdgm.data import CategoryEncoding, PreparedData, prepare_data


def _dense(X):
    return X.toarray() if sp.issparse(X) else np.array(X)


def _snapshot(adata):
    X = adata.X
    return {
        "X_object": X,
        "X_values": _dense(X),
        "X_type": type(X),
        "obs": adata.obs.copy(),
        "var": adata.var.copy(),
        "uns": set(adata.uns.keys()),
        "layers": {k: _dense(v) for k, v in adata.layers.items()},
        "obsm": set(adata.obsm.keys()),
    }


def _assert_untouched(adata, before):
    assert adata.X is before["X_object"]
    assert type(adata.X) is before["X_type"]
    np.testing.assert_array_equal(_dense(adata.X), before["X_values"])
    pd.testing.assert_frame_equal(adata.obs, before["obs"])
    pd.testing.assert_frame_equal(adata.var, before["var"])
    assert set(adata.uns.keys()) == before["uns"]
    assert set(adata.layers.keys()) == set(before["layers"])
    for key, values in before["layers"].items():
        np.testing.assert_array_equal(_dense(adata.layers[key]), values)
    assert set(adata.obsm.keys()) == before["obsm"]


# --- choosing the input -------------------------------------------------------------------------


def test_defaults_read_X_with_library_and_names(adata):
    data = prepare_data(adata)
    assert isinstance(data, PreparedData)
    assert data.source == "adata.X"
    assert data.X is adata.X  # dense input is referenced, not copied
    assert (data.n_obs, data.n_vars) == adata.shape
    np.testing.assert_array_equal(data.var_names, adata.var_names)
    np.testing.assert_array_equal(data.obs_names, adata.obs_names)
    assert data.library.dtype == np.float32
    np.testing.assert_allclose(data.library, adata.X.sum(axis=1))
    assert data.covariates == {} and data.encodings == {}
    assert not data.is_backed
    assert data.n_nonzero == np.count_nonzero(adata.X)


def test_layer_and_use_rep(adata):
    adata.layers["scaled"] = adata.X * 2
    data = prepare_data(adata, layer="scaled")
    assert data.source == "adata.layers['scaled']"
    np.testing.assert_allclose(data.library, 2 * adata.X.sum(axis=1))

    rep = prepare_data(adata, use_rep="X_pca")
    assert rep.source == "adata.obsm['X_pca']"
    assert rep.n_vars == 5
    assert list(rep.var_names) == [f"X_pca_{i}" for i in range(5)]

    adata.obsm["X_df"] = pd.DataFrame(adata.obsm["X_pca"], index=adata.obs_names, columns=list("abcde"))
    frame = prepare_data(adata, use_rep="X_df")
    np.testing.assert_array_equal(frame.X, adata.obsm["X_pca"])
    assert frame.var_names[0] == "X_df_0"


def test_csc_becomes_csr_and_csr_is_not_copied(adata):
    csc = prepare_data(ad.AnnData(sp.csc_matrix(adata.X)))
    assert isinstance(csc.X, sp.csr_matrix)
    np.testing.assert_array_equal(csc.X.toarray(), adata.X)

    csr_adata = ad.AnnData(sp.csr_matrix(adata.X))
    csr = prepare_data(csr_adata)
    assert isinstance(csr.X, sp.csr_matrix)
    assert np.shares_memory(csr.X.data, csr_adata.X.data)


def test_view_is_read_as_its_subset(adata):
    view = adata[5:30, 2:12]
    data = prepare_data(view, counts=True, batch_key="batch")
    assert data.n_obs == 25 and data.n_vars == 10
    np.testing.assert_allclose(data.library, adata.X[5:30, 2:12].sum(axis=1))
    assert view.is_view


def test_backed_stays_on_disk(tmp_path, adata):
    adata.X = sp.csr_matrix(adata.X)
    adata.write_h5ad(tmp_path / "a.h5ad")
    backed = ad.read_h5ad(tmp_path / "a.h5ad", backed="r")
    try:
        data = prepare_data(backed, counts=True, batch_key="batch", chunk_size=7)
        assert data.is_backed
        assert isinstance(data.X, CSRDataset)  # still the on-disk dataset, not a loaded matrix
        np.testing.assert_allclose(data.library, adata.X.toarray().sum(axis=1))
        np.testing.assert_array_equal(data.read_rows(3, 9).toarray(), adata.X[3:9].toarray())
    finally:
        backed.file.close()


def test_chunk_size_does_not_change_the_result(adata):
    adata.X = sp.csr_matrix(adata.X)
    whole = prepare_data(adata, counts=True)
    for chunk_size in (1, 7, 40, 1000):
        chunked = prepare_data(adata, counts=True, chunk_size=chunk_size)
        np.testing.assert_array_equal(chunked.library, whole.library)
        assert chunked.n_nonzero == whole.n_nonzero


# --- covariates --------------------------------------------------------------------------------


def test_covariates_are_encoded(adata):
    data = prepare_data(adata, batch_key="batch", labels_key="cell_type")
    assert data.encodings["batch"].categories == ("b1", "b0")  # categorical order kept
    assert data.encodings["labels"].categories == ("B", "NK", "T")
    assert data.encodings["labels"].key == "cell_type"
    for name, key in (("batch", "batch"), ("labels", "cell_type")):
        codes = data.covariates[name]
        assert codes.dtype == np.int64
        np.testing.assert_array_equal(data.encodings[name].decode(codes), adata.obs[key].astype(str))


def test_given_encodings_are_reused_and_unknown_categories_refused(adata):
    given = CategoryEncoding("batch", ("b0", "b1", "b2"))
    data = prepare_data(adata, batch_key="batch", encodings={"batch": given})
    assert data.encodings["batch"] is given
    np.testing.assert_array_equal(data.covariates["batch"], (adata.obs["batch"] == "b1").astype(int))

    before = _snapshot(adata)
    with pytest.raises(ValueError, match=r"not among.*unknown \['b1'\].*known \['b0', 'b2'\]"):
        prepare_data(adata, batch_key="batch", encodings={"batch": CategoryEncoding("batch", ("b0", "b2"))})
    _assert_untouched(adata, before)


def test_missing_labels_need_allow_missing_labels(adata):
    adata.obs.loc[adata.obs_names[[2, 5]], "cell_type"] = np.nan
    with pytest.raises(
        ValueError, match=r"2 cells have no value in adata.obs\['cell_type'\].*cell_2.*allow_missing_labels"
    ):
        prepare_data(adata, labels_key="cell_type")
    data = prepare_data(adata, labels_key="cell_type", allow_missing_labels=True)
    assert list(np.flatnonzero(data.covariates["labels"] == -1)) == [2, 5]
    assert data.encodings["labels"].categories == ("B", "NK", "T")


def test_missing_batch_is_refused(adata):
    batch = adata.obs["batch"].astype(object)
    batch.iloc[7] = None
    adata.obs["batch"] = batch
    with pytest.raises(ValueError, match=r"1 cells have no value in adata.obs\['batch'\].*cell_7.*needs a batch"):
        prepare_data(adata, batch_key="batch", allow_missing_labels=True)


# --- validation errors -------------------------------------------------------------------------


def test_layer_and_use_rep_together(adata):
    with pytest.raises(ValueError, match="layer= or use_rep=, not both"):
        prepare_data(adata, layer="counts", use_rep="X_pca")


def test_unknown_layer_lists_layers(adata):
    with pytest.raises(KeyError, match=r"layer='raw' is not in adata.layers.*\['counts'\]"):
        prepare_data(adata, layer="raw")


def test_unknown_use_rep_lists_keys(adata):
    with pytest.raises(KeyError, match=r"use_rep='X_vae' is not in adata.obsm.*\['X_pca'\]"):
        prepare_data(adata, use_rep="X_vae")


@pytest.mark.parametrize("argument", ["batch_key", "labels_key"])
def test_unknown_obs_column_lists_columns(adata, argument):
    with pytest.raises(KeyError, match=rf"{argument}='donor' is not a column of adata.obs.*\['batch', 'cell_type'\]"):
        prepare_data(adata, **{argument: "donor"})


@pytest.mark.parametrize("shape", [(0, 20), (40, 0)])
def test_empty_adata(shape):
    empty = ad.AnnData(np.zeros(shape, dtype=np.float32))
    with pytest.raises(ValueError, match=rf"shape \({shape[0]}, {shape[1]}\).*filter"):
        prepare_data(empty)


@pytest.mark.parametrize("sparse", [False, True])
def test_nan_and_inf_are_counted(adata, sparse):
    values = adata.X.copy()
    values.flat[np.arange(0, 120, 10)] = [np.nan] * 6 + [np.inf] * 3 + [-np.inf] * 3
    adata.layers["x"] = sp.csr_matrix(values) if sparse else values
    before = _snapshot(adata)
    with pytest.raises(ValueError, match=r"adata.layers\['x'\] holds 12 NaN or infinite values.*replace or remove"):
        prepare_data(adata, layer="x", chunk_size=9)
    _assert_untouched(adata, before)


def test_nan_in_backed_data(tmp_path, adata):
    adata.X[3, 4] = np.nan
    adata.write_h5ad(tmp_path / "nan.h5ad")
    backed = ad.read_h5ad(tmp_path / "nan.h5ad", backed="r")
    try:
        with pytest.raises(ValueError, match="adata.X holds 1 NaN or infinite values"):
            prepare_data(backed, chunk_size=8)
    finally:
        backed.file.close()


def test_negative_values_need_raw_counts(adata):
    adata.X[[1, 2, 3], [0, 1, 2]] = -1.5
    before = _snapshot(adata)
    with pytest.raises(
        ValueError, match=r"adata.X holds 3 negative entries.*raw counts.*layer='counts'.*likelihood='normal'"
    ):
        prepare_data(adata, counts=True)
    _assert_untouched(adata, before)
    prepare_data(adata, counts=False)  # fine for a Gaussian likelihood


def test_non_integer_values_need_raw_counts(adata):
    adata.layers["log"] = np.log1p(adata.X)
    with pytest.raises(
        ValueError, match=r"adata.layers\['log'\] holds \d+ non-integer entries.*log-transformed.*layer='counts'"
    ):
        prepare_data(adata, layer="log", counts=True)
    prepare_data(adata, layer="log")


def test_almost_integer_values_pass(adata):
    adata.X = adata.X + 1e-8
    prepare_data(adata, counts=True)


def test_empty_cells_are_named(adata):
    adata.X[[3, 11], :] = 0
    with pytest.raises(
        ValueError, match=r"2 cells have no counts.*cell_3, cell_11.*filter_cells\(adata, min_counts=1\)"
    ):
        prepare_data(adata, counts=True)


def test_all_zero_genes_warn(adata):
    adata.X[:, [4, 9]] = 0
    with pytest.warns(
        ScdgmWarning, match=r"2 features of adata.X are zero in every cell.*gene_4, gene_9.*filter_genes"
    ):
        data = prepare_data(adata)
    assert data.n_vars == 20


def test_all_zero_genes_warn_on_sparse_explicit_zeros(adata):
    values = adata.X.copy()
    values[:, 6] = 0
    matrix = sp.csr_matrix(values)
    matrix.data[matrix.indices == 0] = 0  # explicit stored zeros are still zeros
    adata.X = matrix
    with pytest.warns(ScdgmWarning, match=r"2 features.*gene_0, gene_6"):
        prepare_data(adata)


def test_backed_csc_is_refused(tmp_path, adata):
    adata.X = sp.csc_matrix(adata.X)
    adata.write_h5ad(tmp_path / "csc.h5ad")
    backed = ad.read_h5ad(tmp_path / "csc.h5ad", backed="r")
    try:
        with pytest.raises(ValueError, match="backed CSC.*tocsr"):
            prepare_data(backed)
    finally:
        backed.file.close()


def test_adata_untouched_after_success(adata):
    adata.X = sp.csr_matrix(adata.X)
    before = _snapshot(adata)
    prepare_data(adata, counts=True, batch_key="batch", labels_key="cell_type", chunk_size=6)
    _assert_untouched(adata, before)


# --- selecting features ------------------------------------------------------------------------


@pytest.mark.parametrize("sparse", [False, True])
def test_select_features_in_memory(adata, sparse):
    if sparse:
        adata.X = sp.csr_matrix(adata.X)
    data = prepare_data(adata)
    order = np.array([5, 0, 19])
    sub = data.select_features(order)
    dense = adata.X.toarray() if sparse else adata.X
    got = sub.X.toarray() if sparse else sub.X
    np.testing.assert_array_equal(got, dense[:, order])
    np.testing.assert_array_equal(sub.var_names, adata.var_names[order])
    np.testing.assert_allclose(sub.library, dense[:, order].sum(axis=1))
    assert data.n_vars == 20  # the original is unchanged


def test_select_features_backed(tmp_path, adata):
    dense = adata.X.copy()
    adata.X = sp.csr_matrix(dense)
    adata.write_h5ad(tmp_path / "a.h5ad")
    backed = ad.read_h5ad(tmp_path / "a.h5ad", backed="r")
    try:
        data = prepare_data(backed, chunk_size=16)
        order = np.array([3, 2, 10, 11])
        sub = data.select_features(order).select_features(np.array([1, 3]))
        assert sub.is_backed
        np.testing.assert_array_equal(sub.feature_index, [2, 11])
        np.testing.assert_array_equal(sub.read_rows(0, 40).toarray(), dense[:, [2, 11]])
        np.testing.assert_array_equal(sub.read_row_index(np.array([7, 1, 7])).toarray(), dense[[7, 1, 7]][:, [2, 11]])
        np.testing.assert_allclose(sub.library, dense[:, [2, 11]].sum(axis=1))
    finally:
        backed.file.close()


def test_integer_counts_are_accepted_and_negatives_found(adata):
    adata.layers["int"] = adata.X.astype(np.int64)
    data = prepare_data(adata, layer="int", counts=True)
    np.testing.assert_allclose(data.library, adata.X.sum(axis=1))
    adata.layers["int"][0, 0] = -2
    with pytest.raises(ValueError, match="1 negative entries"):
        prepare_data(adata, layer="int", counts=True)


def test_missing_X_points_to_layers(adata):
    bare = ad.AnnData(obs=adata.obs, var=adata.var, layers={"counts": adata.layers["counts"]})
    with pytest.raises(ValueError, match=r"adata.X is empty.*layer=.*\['counts'\]"):
        prepare_data(bare)
    assert prepare_data(bare, layer="counts", counts=True).n_obs == 40


def test_unsupported_matrix_type_is_refused(adata):
    adata.obsm["strings"] = np.full((40, 2), "a")
    with pytest.raises(TypeError, match="must hold numbers"):
        prepare_data(adata, use_rep="strings")


# --- regression tests of the reliability sweep ----------------------------------------------------


@pytest.mark.parametrize("fmt", ["dense", "csr", "backed_csr"])
def test_counts_scaled_far_beyond_any_count_are_not_raw_counts(adata, tmp_path, fmt):
    adata.X = adata.X * np.float32(1e30)
    if fmt != "dense":
        adata.X = sp.csr_matrix(adata.X)
    if fmt == "backed_csr":
        adata.write_h5ad(tmp_path / "scaled.h5ad")
        adata = ad.read_h5ad(tmp_path / "scaled.h5ad", backed="r")
    try:
        with pytest.raises(
            ValueError, match=r"adata.X holds counts up to 6e\+30, beyond 1.68e\+07: .*These are not raw counts"
        ):
            prepare_data(adata, counts=True)
        assert prepare_data(adata, counts=False).n_obs == adata.n_obs  # fine for a normal likelihood
    finally:
        if adata.isbacked:
            adata.file.close()


def test_the_largest_exact_float32_count_is_still_a_count(adata):
    adata.X[0, 0] = 2**24
    assert prepare_data(adata, counts=True).library[0] >= 2**24
    adata.X[0, 0] = 2**25
    with pytest.raises(ValueError, match="not raw counts"):
        prepare_data(adata, counts=True)


def test_repeated_gene_names_are_refused(adata):
    before = _snapshot(adata)
    adata.var_names = [*adata.var_names[:-1], adata.var_names[0]]
    with pytest.raises(
        ValueError, match=r"adata.var_names repeats 1 name\(s\) \(first: gene_0\).*var_names_make_unique\(\)"
    ):
        prepare_data(adata)
    assert prepare_data(adata, use_rep="X_pca").n_vars == 5  # an .obsm input has its own names
    assert set(adata.uns.keys()) == before["uns"] and set(adata.obsm.keys()) == before["obsm"]


def test_all_zero_features_of_a_fixed_model_input_are_not_advised_away(adata):
    adata.X[:, 3] = 0
    with pytest.warns(ScdgmWarning, match="zero in every cell") as record:
        prepare_data(adata, feature_filter_advice=False)
    assert "filter_genes" not in str(record[0].message)
    with pytest.warns(ScdgmWarning, match=r"sc.pp.filter_genes"):
        prepare_data(adata)
