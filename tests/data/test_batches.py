import pickle
import subprocess
import sys

import anndata as ad
import numpy as np
import pytest
import scipy.sparse as sp
import torch

from scdgm.data import BatchStore, InMemoryStore, MiniBatches, StreamingStore, prepare_data, split_indices

FORMATS = ["dense", "csr", "csc", "view", "backed_csr", "backed_dense"]


def _store(adata, **kwargs):
    data = prepare_data(adata, counts=True, batch_key="batch", labels_key="cell_type")
    return data, BatchStore.from_prepared(data, "cpu", **kwargs)


def _epoch_rows(batches):
    return torch.cat([b["index"] for b in batches]).numpy()


def _check_batch(batch, dense, data):
    index = batch["index"].numpy()
    assert batch["x"].dtype == torch.float32 and batch["x"].shape == (len(index), dense.shape[1])
    np.testing.assert_array_equal(batch["x"].numpy(), dense[index])
    assert batch["library"].dtype == torch.float32 and batch["library"].shape == (len(index), 1)
    np.testing.assert_allclose(batch["library"].numpy()[:, 0], dense[index].sum(axis=1))
    for name in ("batch", "labels"):
        assert batch[name].dtype == torch.int64
        np.testing.assert_array_equal(batch[name].numpy(), data.covariates[name][index])
    assert batch["index"].dtype == torch.int64


@pytest.mark.parametrize("fmt", FORMATS)
def test_every_format_gathers_the_same_rows(in_format, fmt):
    adata, dense = in_format(fmt)
    data, store = _store(adata)
    expected_kind = StreamingStore if fmt.startswith("backed") else InMemoryStore
    assert isinstance(store, expected_kind)
    assert (store.n_obs, store.n_vars, store.device) == (*dense.shape, "cpu")
    assert set(store.covariate_names) == {"batch", "labels"}
    rows = torch.tensor([3, 0, 17, 3, len(dense) - 1])
    batch = store.gather(rows)
    assert set(batch) == {"x", "library", "batch", "labels", "index"}
    _check_batch(batch, dense, data)


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("shuffle", [False, True])
def test_every_format_serves_the_same_content(in_format, fmt, shuffle):
    adata, dense = in_format(fmt)
    data, store = _store(adata, chunk_rows=8)
    train, _ = split_indices(data.n_obs, validation_fraction=0.25, seed=0)
    batches = MiniBatches(store, train, batch_size=6, shuffle=shuffle, seed=1)
    served = list(batches)
    assert len(served) == len(batches) == int(np.ceil(len(train) / 6))
    assert [len(b["index"]) for b in served[:-1]] == [6] * (len(served) - 1)
    for batch in served:
        _check_batch(batch, dense, data)
    rows = _epoch_rows(served)
    np.testing.assert_array_equal(np.sort(rows), train)
    if not shuffle:
        np.testing.assert_array_equal(rows, train)


def test_batches_without_covariates(adata):
    store = BatchStore.from_prepared(prepare_data(adata), "cpu")
    batch = next(iter(MiniBatches(store, np.arange(10), batch_size=4, shuffle=False)))
    assert set(batch) == {"x", "library", "index"}


@pytest.fixture(params=["memory", "stream"])
def store_kind(request, adata):
    adata.X = sp.csr_matrix(adata.X)
    data = prepare_data(adata, counts=True, batch_key="batch")
    if request.param == "memory":
        store = BatchStore.from_prepared(data, "cpu")
    else:  # a budget of one byte forces streaming of in-memory data
        store = BatchStore.from_prepared(data, "cpu", memory_budget_bytes=1, chunk_rows=5)
        assert isinstance(store, StreamingStore)
    return store, np.asarray(adata.X.toarray())


def test_each_epoch_covers_every_index_once_in_a_new_order(store_kind):
    store, _ = store_kind
    indices = np.arange(3, 37)
    batches = MiniBatches(store, indices, batch_size=8, shuffle=True, seed=0)
    epochs = [_epoch_rows(batches) for _ in range(3)]
    for rows in epochs:
        np.testing.assert_array_equal(np.sort(rows), indices)
    assert not np.array_equal(epochs[0], epochs[1]) and not np.array_equal(epochs[1], epochs[2])


def test_same_seed_same_sequence_of_epochs(store_kind):
    store, _ = store_kind
    first = MiniBatches(store, np.arange(40), batch_size=7, shuffle=True, seed=5)
    second = MiniBatches(store, np.arange(40), batch_size=7, shuffle=True, seed=5)
    other = MiniBatches(store, np.arange(40), batch_size=7, shuffle=True, seed=6)
    a = [_epoch_rows(first) for _ in range(3)]
    b = [_epoch_rows(second) for _ in range(3)]
    c = [_epoch_rows(other) for _ in range(3)]
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x, y)
    assert not all(np.array_equal(x, z) for x, z in zip(a, c, strict=True))


def test_no_shuffle_keeps_the_given_order(store_kind):
    store, dense = store_kind
    indices = np.array([30, 2, 2, 17, 39, 0, 8, 31, 1])
    batches = list(MiniBatches(store, indices, batch_size=4, shuffle=False))
    np.testing.assert_array_equal(_epoch_rows(batches), indices)
    np.testing.assert_array_equal(torch.cat([b["x"] for b in batches]).numpy(), dense[indices])


@pytest.mark.parametrize(("n", "batch_size", "n_full"), [(34, 8, 4), (32, 8, 4), (5, 8, 0)])
def test_drop_last(store_kind, n, batch_size, n_full):
    store, _ = store_kind
    indices = np.arange(n)
    dropping = MiniBatches(store, indices, batch_size=batch_size, shuffle=True, drop_last=True)
    served = list(dropping)
    assert len(dropping) == len(served) == n_full
    assert all(len(b["index"]) == batch_size for b in served)
    keeping = MiniBatches(store, indices, batch_size=batch_size, shuffle=True, drop_last=False)
    assert len(keeping) == len(list(keeping)) == -(-n // batch_size)


def test_streaming_windows_mix_chunks(adata):
    adata.X = sp.csr_matrix(adata.X)
    data = prepare_data(adata)
    store = BatchStore.from_prepared(data, "cpu", memory_budget_bytes=1, chunk_rows=4)
    rows = _epoch_rows(MiniBatches(store, np.arange(40), batch_size=40, shuffle=True, seed=0))
    # The first window mixes WINDOW_CHUNKS (4) chunks of 4 rows: its 16 rows come from 4 distinct chunks.
    assert len(np.unique(rows[:16] // 4)) == 4
    assert not np.array_equal(np.sort(rows[:16]), rows[:16])


def test_streaming_prefetch_gives_the_same_batches(adata):
    adata.X = sp.csr_matrix(adata.X)
    data = prepare_data(adata)
    plain = StreamingStore(data, "cpu", chunk_rows=6, prefetch=False)
    threaded = StreamingStore(data, "cpu", chunk_rows=6, prefetch=True)
    a = list(MiniBatches(plain, np.arange(40), batch_size=9, shuffle=True, seed=2))
    b = list(MiniBatches(threaded, np.arange(40), batch_size=9, shuffle=True, seed=2))
    for x, y in zip(a, b, strict=True):
        assert torch.equal(x["x"], y["x"]) and torch.equal(x["index"], y["index"])
    it = iter(MiniBatches(threaded, np.arange(40), batch_size=9, shuffle=True))
    next(it)
    it.close()  # stopping mid-epoch shuts the reader thread down


def test_duplicate_sparse_entries_are_summed():
    matrix = sp.csr_matrix(
        (np.array([1.0, 2.0, 5.0], dtype=np.float32), np.array([1, 1, 0]), np.array([0, 2, 3])), shape=(2, 2)
    )
    assert not matrix.has_canonical_format
    store = BatchStore.from_prepared(prepare_data(ad.AnnData(matrix)), "cpu")
    np.testing.assert_array_equal(store.gather(torch.tensor([1, 0]))["x"].numpy(), [[5, 0], [0, 3]])


def test_dense_store_shares_memory_on_cpu(adata):
    store = BatchStore.from_prepared(prepare_data(adata), "cpu")
    assert store.rows.dense.data_ptr() == adata.X.__array_interface__["data"][0]
    x = store.gather(torch.tensor([0]))["x"]
    x += 100  # batches are copies: training cannot write into the AnnData
    assert adata.X[0, 0] < 100


def test_minibatches_validate_arguments(adata):
    store = BatchStore.from_prepared(prepare_data(adata), "cpu")
    with pytest.raises(ValueError, match="batch_size must be a positive integer"):
        MiniBatches(store, np.arange(4), batch_size=0, shuffle=False)
    with pytest.raises(IndexError, match=r"indices must lie in \[0, 40\)"):
        MiniBatches(store, np.array([0, 40]), batch_size=2, shuffle=False)
    with pytest.raises(ValueError, match="1-D integer array"):
        MiniBatches(store, np.array([0.5]), batch_size=2, shuffle=False)
    empty = MiniBatches(store, np.array([], dtype=np.int64), batch_size=2, shuffle=True)
    assert len(empty) == 0 and list(empty) == []


def test_store_moves_data_once():
    X = sp.random(200, 50, density=0.2, format="csr", dtype=np.float32, random_state=0)
    X.data = np.ceil(X.data * 10)
    data = prepare_data(ad.AnnData(X))
    store = BatchStore.from_prepared(data, "cpu")
    assert store.rows.sparse and store.rows.data.numel() == X.nnz
    batches = MiniBatches(store, np.arange(200), batch_size=32, shuffle=True)
    for batch in batches:
        np.testing.assert_array_equal(batch["x"].numpy(), X[batch["index"].numpy()].toarray())


def test_importing_the_data_layer_does_not_import_torch():
    code = "import sys, scdgm.data; assert 'torch' not in sys.modules, 'torch was imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_sparse_rows_with_no_entries(adata):
    dense = adata.X.copy()
    dense[[2, 3, 9]] = 0
    adata.X = sp.csr_matrix(dense)
    store = BatchStore.from_prepared(prepare_data(adata), "cpu")
    only_empty = store.gather(torch.tensor([3, 2]))
    assert only_empty["x"].shape == (2, 20) and not only_empty["x"].any()
    mixed = torch.tensor([9, 0, 3, 39, 2])
    np.testing.assert_array_equal(store.gather(mixed)["x"].numpy(), dense[mixed.numpy()])


def _rebuilt(batch):
    rows, cols, values = batch["x_entry_rows"], batch["x_entry_cols"], batch["x_entry_values"]
    assert torch.all(rows[1:] >= rows[:-1]), "entries must come sorted by row"
    rebuilt = torch.zeros_like(batch["x"])
    rebuilt[rows, cols.long()] = values
    return rebuilt


def test_sparse_batches_carry_their_entries():
    X = sp.random(60, 30, density=0.2, format="csr", dtype=np.float32, random_state=1)
    dense = np.ceil(X.toarray() * 10)
    dense[[3, 17]] = 0  # rows without entries
    X = sp.csr_matrix(dense)
    store = BatchStore.from_prepared(prepare_data(ad.AnnData(X), counts=False), "cpu")
    for batch in MiniBatches(store, np.arange(60), batch_size=16, shuffle=True, seed=0):
        np.testing.assert_array_equal(_rebuilt(batch).numpy(), batch["x"].numpy())
        assert batch["x_entry_values"].numel() == int((batch["x"] != 0).sum())
    dense_store = BatchStore.from_prepared(prepare_data(ad.AnnData(X.toarray()), counts=False), "cpu")
    assert "x_entry_rows" not in next(iter(MiniBatches(dense_store, np.arange(60), batch_size=16, shuffle=False)))


def test_cpu_and_device_gathers_serve_the_same_batches():
    """The scipy path of the CPU and the torch path of accelerators (forced here) agree entry for entry."""
    X = sp.random(80, 40, density=0.3, format="csr", dtype=np.float64, random_state=2)
    X.data = np.ceil(X.data * 7)
    rows = BatchStore.from_prepared(prepare_data(ad.AnnData(X), counts=False), "cpu").rows
    assert rows.host is not None and rows.host.data.dtype == np.float32
    assert np.shares_memory(rows.host.data, rows.data.numpy())
    torch_path = pickle.loads(pickle.dumps(rows))  # a pickled copy rebuilds its scipy view...
    assert torch_path.host is not None
    torch_path.host = None  # ...which is dropped here to force the torch gather
    index = torch.tensor([5, 0, 79, 5, 33])
    x_cpu, entries_cpu = rows.rows_and_entries(index)
    x_torch, entries_torch = torch_path.rows_and_entries(index)
    np.testing.assert_array_equal(x_cpu.numpy(), X[index.numpy()].toarray())
    np.testing.assert_array_equal(x_torch.numpy(), x_cpu.numpy())
    for ours, theirs in zip(entries_cpu, entries_torch, strict=True):
        np.testing.assert_array_equal(ours.numpy(), theirs.numpy())
