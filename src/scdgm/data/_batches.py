"""Minibatches on the training device: the data is moved there once, batches are densified there.

:class:`BatchStore` holds a :class:`~scdgm.data.PreparedData` on a torch device: whole (dense or CSR
tensors) when it fits, or streamed from disk in shuffled chunks of rows when it is backed or too
large. :class:`MiniBatches` is the re-iterable that the training engine loops over.
"""

from __future__ import annotations

import copy
import math
import warnings
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch

from ._prepare import PreparedData, _load

Batch = dict[str, torch.Tensor]
Entries = tuple[torch.Tensor, torch.Tensor, torch.Tensor]
"""Stored entries of a batch of rows: row within the batch, column, value."""

CUDA_MEMORY_FRACTION = 0.5
"""Share of the free GPU memory the whole data may take before a CUDA store streams instead."""
WINDOW_CHUNKS = 4
"""Chunks read and mixed together by a streaming store at a time."""
_STREAM_WINDOW_BYTES = 256 * 2**20


def _tensor(array: Any, dtype: torch.dtype, device: str) -> torch.Tensor:
    """``array`` as a tensor on ``device``, sharing memory with it on the CPU where the dtype allows."""
    with warnings.catch_warnings():
        # Read-only inputs (memory maps, AnnData views) are only ever read from.
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        return torch.as_tensor(array, dtype=dtype).to(device)


def _pickle_tensors(state: dict[str, Any]) -> dict[str, Any]:
    """Tensors as numpy arrays, so that a store pickles by value.

    Torch would share them through file descriptors, which processes spawned for data-parallel
    training cannot always inherit.
    """
    out = {}
    for name, value in state.items():
        if isinstance(value, torch.Tensor):
            value = ("__tensor__", value.detach().cpu().numpy(), str(value.device))
        elif isinstance(value, dict) and value and all(isinstance(v, torch.Tensor) for v in value.values()):
            value = ("__tensors__", {k: (v.detach().cpu().numpy(), str(v.device)) for k, v in value.items()})
        out[name] = value
    return out


def _unpickle_tensors(state: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for name, value in state.items():
        if isinstance(value, tuple) and value and value[0] == "__tensor__":
            value = torch.from_numpy(value[1]).to(value[2])
        elif isinstance(value, tuple) and value and value[0] == "__tensors__":
            value = {k: torch.from_numpy(array).to(device) for k, (array, device) in value[1].items()}
        out[name] = value
    return out


class _PicklesByValue:
    """Pickles its tensors as numpy arrays (see :func:`_pickle_tensors`)."""

    def __getstate__(self) -> dict[str, Any]:
        return _pickle_tensors(self.__dict__)

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(_unpickle_tensors(state))


class _DeviceRows(_PicklesByValue):
    """Rows of a matrix on a device (dense, or CSR as three tensors) that densifies any of its rows."""

    def __init__(self, block: np.ndarray | sp.csr_matrix, device: str) -> None:
        self.n_rows, self.n_cols = block.shape
        self.sparse = sp.issparse(block)
        self.host: sp.csr_matrix | None = None
        if self.sparse and torch.device(device).type == "cpu":
            # On the CPU, scipy's compiled row indexing and densification serve a batch in about half
            # the time of the torch gather below (0.35 against 0.6 ms for 128 x 2,000 at 25 % density);
            # the float32 copy is shared with the tensors, so the data is held once.
            data = np.asarray(block.data, dtype=np.float32)
            self.host = sp.csr_matrix((data, block.indices, block.indptr), shape=block.shape)
            block = self.host
        if self.sparse:
            self.indptr = _tensor(block.indptr, torch.int64, device)
            # int32 column indices halve the memory; they are widened per batch only.
            index_dtype = torch.int32 if block.indices.dtype == np.int32 else torch.int64
            self.indices = _tensor(block.indices, index_dtype, device)
            self.data = _tensor(block.data, torch.float32, device)
            # Row lengths on the host give each batch's entry count without a device->host sync.
            self.host_lengths = np.diff(block.indptr)
            # Duplicate entries must be summed, which is slower than plain assignment.
            self.accumulate = not block.has_canonical_format
            self.nbytes = sum(t.numel() * t.element_size() for t in (self.indptr, self.indices, self.data))
        else:
            self.dense = _tensor(np.ascontiguousarray(block), torch.float32, device)
            self.nbytes = self.dense.numel() * 4

    def __getstate__(self) -> dict[str, Any]:
        # the scipy view shares the tensors' memory; it is rebuilt from them, not pickled a second time
        return _pickle_tensors({k: v for k, v in self.__dict__.items() if k != "host"})

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(_unpickle_tensors(state))
        self.host = self._host_view()

    def _host_view(self) -> sp.csr_matrix | None:
        """A scipy view of CPU-resident CSR tensors (sharing their memory), else ``None``."""
        if not self.sparse or self.data.device.type != "cpu":
            return None
        arrays = (self.data.numpy(), self.indices.numpy(), self.indptr.numpy())
        return sp.csr_matrix(arrays, shape=(self.n_rows, self.n_cols))

    def to(self, device: str) -> _DeviceRows:
        """A copy with its tensors on ``device``."""
        moved = copy.copy(self)
        for name in ("indptr", "indices", "data") if self.sparse else ("dense",):
            setattr(moved, name, getattr(self, name).to(device))
        if moved.host is None or torch.device(device).type != "cpu":
            moved.host = moved._host_view()
        return moved

    def rows(self, index: torch.Tensor, host_index: np.ndarray | None = None) -> torch.Tensor:
        """Dense ``float32`` rows ``index`` (an ``int64`` tensor on the same device), shape ``(len(index), n_cols)``.

        ``host_index``, the same rows as a numpy array, spares a GPU the sync of reading the entry count back.
        """
        return self.rows_and_entries(index, host_index)[0]

    def rows_and_entries(
        self, index: torch.Tensor, host_index: np.ndarray | None = None
    ) -> tuple[torch.Tensor, Entries | None]:
        """As :meth:`rows`, with the stored entries of those rows.

        The entries (row within the batch, column, value), which come for free from CSR, let count
        likelihoods skip a scan for non-zeros; ``None`` for dense storage or when duplicate entries
        are summed.
        """
        if not self.sparse:
            return self.dense.index_select(0, index), None
        if self.host is not None:
            sub = self.host[index.numpy() if host_index is None else host_index]
            dense = torch.from_numpy(sub.toarray())
            if self.accumulate:
                return dense, None
            lengths = np.diff(sub.indptr)
            entry_rows = torch.from_numpy(np.repeat(np.arange(len(lengths), dtype=np.int64), lengths))
            return dense, (entry_rows, torch.from_numpy(sub.indices), torch.from_numpy(sub.data))
        n_rows = index.shape[0]
        starts = self.indptr.index_select(0, index)
        lengths = self.indptr.index_select(0, index + 1).sub_(starts)
        n_entries = int(lengths.sum() if host_index is None else self.host_lengths[host_index].sum())
        out = torch.zeros(n_rows * self.n_cols, dtype=torch.float32, device=starts.device)
        entry_row = torch.zeros(0, dtype=torch.int64, device=starts.device)
        cols, values = entry_row, torch.zeros(0, dtype=torch.float32, device=starts.device)
        if n_entries > 0:
            # Row of each gathered entry, then its position in data/indices: the start of its row plus
            # its rank within the row, i.e. a global arange shifted per row.
            entry_row = torch.repeat_interleave(lengths, output_size=n_entries)
            shift = starts.sub_(torch.cumsum(lengths, 0).sub_(lengths))
            position = shift.index_select(0, entry_row).add_(torch.arange(n_entries, device=starts.device))
            cols, values = self.indices.index_select(0, position), self.data.index_select(0, position)
            flat = entry_row * self.n_cols + cols
            out.index_put_((flat,), values, accumulate=self.accumulate)
        dense = out.view(n_rows, self.n_cols)
        return dense, None if self.accumulate else (entry_row, cols, values)


def _block_bytes(data: PreparedData) -> tuple[int, float]:
    """Device bytes of the whole matrix, and per row."""
    n_obs, n_vars = data.n_obs, data.n_vars
    if data.is_sparse:
        nnz = data.X.nnz if sp.issparse(data.X) else data.n_nonzero
        per_entry = 4 + (4 if sp.issparse(data.X) and data.X.indices.dtype == np.int32 else 8)
        total = nnz * per_entry + (n_obs + 1) * 8
    else:
        total = n_obs * n_vars * 4
    return int(total), total / max(n_obs, 1)


class BatchStore(_PicklesByValue):
    """The data of a model on its training device, serving minibatches of rows.

    Build one with :meth:`from_prepared`, which picks an :class:`InMemoryStore` (everything moved to
    the device once) or a :class:`StreamingStore` (backed data, or data larger than the memory budget).

    Attributes
    ----------
    n_obs
        Number of cells.
    n_vars
        Number of features.
    device
        Torch device string the batches live on.
    covariate_names
        The covariates every batch carries (``"batch"``, ``"labels"``).
    """

    def __init__(self, data: PreparedData, device: str) -> None:
        self.device = str(device)
        self.n_obs = data.n_obs
        self.n_vars = data.n_vars
        self.source = data.source
        self.library = _tensor(data.library.reshape(-1, 1), torch.float32, self.device)
        self.covariates = {name: _tensor(codes, torch.int64, self.device) for name, codes in data.covariates.items()}

    def to(self, device: str) -> BatchStore:
        """A shallow copy of this store serving its batches on ``device`` (for a process of its own)."""
        moved = copy.copy(self)
        moved.device = str(device)
        moved.library = self.library.to(device)
        moved.covariates = {name: codes.to(device) for name, codes in self.covariates.items()}
        return moved

    @property
    def covariate_names(self) -> tuple[str, ...]:
        """Names of the covariates in every batch."""
        return tuple(self.covariates)

    @classmethod
    def from_prepared(
        cls,
        data: PreparedData,
        device: str,
        *,
        memory_budget_bytes: int | None = None,
        chunk_rows: int | None = None,
    ) -> BatchStore:
        """Put ``data`` on ``device``: whole where it fits, else as a stream of row chunks.

        Parameters
        ----------
        data
            From :func:`~scdgm.data.prepare_data`.
        device
            A concrete torch device (``"cpu"``, ``"cuda:0"``, ...), not ``"auto"``.
        memory_budget_bytes
            Most bytes the matrix may take on the device before the store streams it instead. By default
            half of the free memory on a CUDA device and no limit elsewhere (in-memory data on the CPU
            is shared, not copied).
        chunk_rows
            Rows per chunk of a streaming store; by default sized so a window of chunks takes about
            a quarter of the budget (at most 256 MiB) and at most ``data.chunk_size`` rows.

        Returns
        -------
        A :class:`StreamingStore` for backed data or data over the budget, else an :class:`InMemoryStore`.
        """
        device = str(device)
        budget = memory_budget_bytes
        if budget is None and torch.device(device).type == "cuda":
            free, _ = torch.cuda.mem_get_info(torch.device(device))
            budget = int(free * CUDA_MEMORY_FRACTION)
        total, per_row = _block_bytes(data)
        if not data.is_backed and (budget is None or total <= budget):
            return InMemoryStore(data, device)
        if chunk_rows is None:
            window = _STREAM_WINDOW_BYTES if budget is None else min(_STREAM_WINDOW_BYTES, budget // 4)
            chunk_rows = int(min(data.chunk_size, max(1, window / WINDOW_CHUNKS // max(per_row, 1))))
        return StreamingStore(data, device, chunk_rows=chunk_rows)

    def _batch(self, x: torch.Tensor, index: torch.Tensor, entries: Entries | None = None) -> Batch:
        batch = {"x": x, "library": self.library.index_select(0, index)}
        if entries is not None:
            batch["x_entry_rows"], batch["x_entry_cols"], batch["x_entry_values"] = entries
        for name, codes in self.covariates.items():
            batch[name] = codes.index_select(0, index)
        batch["index"] = index
        return batch

    def gather(self, index: torch.Tensor) -> Batch:
        """The batch of rows ``index``.

        Parameters
        ----------
        index
            Row indices (any integer tensor or array; moved to the device).

        Returns
        -------
        ``{"x": float32 (B, G), "library": float32 (B, 1), "batch": int64 (B,), "labels": int64 (B,),
        "index": int64 (B,)}``, with only the covariates the data has. Batches served by
        :meth:`iter_batches` from CSR storage also carry the stored entries of ``"x"``:
        ``"x_entry_rows"`` (row within the batch), ``"x_entry_cols"`` and ``"x_entry_values"``.
        """
        raise NotImplementedError

    def iter_batches(
        self,
        indices: np.ndarray,
        batch_size: int,
        shuffle: bool,
        generator: torch.Generator | None,
        drop_last: bool,
    ) -> Iterator[Batch]:
        """One epoch of minibatches over ``indices``.

        Parameters
        ----------
        indices
            Rows to serve (``int64``), e.g. the training cells.
        batch_size
            Rows per batch; the last batch may be smaller.
        shuffle
            Serve in a random order drawn from ``generator``; otherwise in the order of ``indices``.
        generator
            CPU :class:`torch.Generator` for the shuffling.
        drop_last
            Drop the last batch when it is smaller than ``batch_size``.

        Returns
        -------
        An iterator of batches as returned by :meth:`gather`.
        """
        raise NotImplementedError

    def __repr__(self) -> str:
        covariates = f", covariates {list(self.covariates)}" if self.covariates else ""
        return f"{type(self).__name__}({self.n_obs} cells x {self.n_vars} features from {self.source} on {self.device}{covariates})"


def _index_tensor(index: Any, device: str) -> torch.Tensor:
    return torch.as_tensor(index).to(device=device, dtype=torch.int64)


class InMemoryStore(BatchStore):
    """The whole matrix on the device: a dense tensor, or CSR tensors densified per batch."""

    def __init__(self, data: PreparedData, device: str) -> None:
        super().__init__(data, device)
        matrix = data.X if data.feature_index is None else data.read_rows(0, data.n_obs)
        self.rows = _DeviceRows(_load(matrix), self.device)

    def gather(self, index: torch.Tensor) -> Batch:
        index = _index_tensor(index, self.device)
        return self._batch(self.rows.rows(index), index)

    def to(self, device: str) -> InMemoryStore:
        """A shallow copy of this store with the matrix on ``device`` too."""
        moved = super().to(device)
        moved.rows = self.rows.to(device)
        return moved

    def iter_batches(
        self,
        indices: np.ndarray,
        batch_size: int,
        shuffle: bool,
        generator: torch.Generator | None,
        drop_last: bool,
    ) -> Iterator[Batch]:
        order = torch.as_tensor(indices, dtype=torch.int64)
        if shuffle:
            order = order.index_select(0, torch.randperm(order.shape[0], generator=generator))
        host = order.numpy()
        order = order.to(self.device)
        n = order.shape[0]
        stop = n - n % batch_size if drop_last else n
        for start in range(0, stop, batch_size):
            index = order[start : start + batch_size]
            x, entries = self.rows.rows_and_entries(index, host[start : start + batch_size])
            yield self._batch(x, index, entries)


class _Ready:
    """A finished stand-in for a Future, used when prefetching is off."""

    def __init__(self, value: Any) -> None:
        self.value = value

    def result(self) -> Any:
        return self.value


def _concat(parts: list[Batch]) -> Batch:
    return parts[0] if len(parts) == 1 else {key: torch.cat([p[key] for p in parts]) for key in parts[0]}


class StreamingStore(BatchStore):
    """Rows read from ``data.X`` (typically a backed ``.h5ad``) a window of chunks at a time.

    An epoch visits the chunks (``chunk_rows`` contiguous rows each) holding the requested cells,
    in a random order when shuffling; :data:`WINDOW_CHUNKS` chunks are read together, their rows
    mixed, moved to the device as CSR (or dense) tensors and served as minibatches; off the CPU the
    next window is read in a background thread meanwhile. The whole matrix is never loaded or
    densified. Library sizes and covariates are small and live on the device whole.

    Parameters
    ----------
    data
        The prepared data; ``data.X`` is read with row slices ``X[start:stop]``.
    device
        Torch device of the batches.
    chunk_rows
        Contiguous rows read at a time.
    window_chunks
        Chunks whose rows are mixed together.
    prefetch
        Read the next window in a background thread; by default on every device but the CPU.
    """

    def __init__(
        self,
        data: PreparedData,
        device: str,
        *,
        chunk_rows: int,
        window_chunks: int = WINDOW_CHUNKS,
        prefetch: bool | None = None,
    ) -> None:
        super().__init__(data, device)
        if chunk_rows < 1 or window_chunks < 1:
            msg = f"chunk_rows and window_chunks must be positive, got {chunk_rows} and {window_chunks}."
            raise ValueError(msg)
        self.data = data
        self.chunk_rows = int(chunk_rows)
        self.window_chunks = int(window_chunks)
        # A reader thread overlaps disk reads with GPU work; on the CPU it only competes with torch's
        # own threads for the cores (measured slower), so it is off there by default.
        self.prefetch = torch.device(self.device).type != "cpu" if prefetch is None else bool(prefetch)

    def gather(self, index: torch.Tensor) -> Batch:
        index = _index_tensor(index, self.device)
        block = self.data.read_row_index(index.cpu().numpy())
        rows = _DeviceRows(block, self.device)
        return self._batch(rows.rows(torch.arange(rows.n_rows, device=self.device)), index)

    def _plan(self, indices: np.ndarray, shuffle: bool, generator: torch.Generator | None) -> Iterator[np.ndarray]:
        """Rows of each window, in serving order."""
        indices = np.asarray(indices, dtype=np.int64)
        chunk_of = indices // self.chunk_rows
        if shuffle:
            ordered = np.sort(indices)
            chunks, starts = np.unique(ordered // self.chunk_rows, return_index=True)
            ends = np.append(starts[1:], len(ordered))
            chunk_order = torch.randperm(len(chunks), generator=generator).numpy()
            for first in range(0, len(chunks), self.window_chunks):
                picked = chunk_order[first : first + self.window_chunks]
                rows = np.concatenate([ordered[starts[p] : ends[p]] for p in picked])
                yield rows[torch.randperm(len(rows), generator=generator).numpy()]
            return
        # In order: cut the sequence where it would touch more than window_chunks distinct chunks.
        run_starts = np.flatnonzero(np.diff(chunk_of, prepend=-1) != 0)
        window_start, seen = 0, set()
        for run_start in run_starts:
            chunk = int(chunk_of[run_start])
            if chunk not in seen and len(seen) == self.window_chunks:
                yield indices[window_start:run_start]
                window_start, seen = run_start, set()
            seen.add(chunk)
        if window_start < len(indices):
            yield indices[window_start:]

    def _read_window(self, rows: np.ndarray) -> tuple[np.ndarray | sp.csr_matrix, np.ndarray, np.ndarray]:
        """Host side (runs in the prefetch thread): the needed rows of each chunk, read contiguously."""
        needed = np.unique(rows)
        parts = []
        for chunk in np.unique(needed // self.chunk_rows):
            lo = int(chunk) * self.chunk_rows
            hi = min(lo + self.chunk_rows, self.n_obs)
            wanted = needed[(needed >= lo) & (needed < hi)]
            block = _load(self.data.X[lo:hi])
            if len(wanted) < hi - lo:
                block = block[wanted - lo]
            parts.append(self.data._columns(block))
        block = sp.vstack(parts, format="csr") if sp.issparse(parts[0]) else np.concatenate(parts)
        return block, np.searchsorted(needed, rows), rows

    def iter_batches(
        self,
        indices: np.ndarray,
        batch_size: int,
        shuffle: bool,
        generator: torch.Generator | None,
        drop_last: bool,
    ) -> Iterator[Batch]:
        windows = self._plan(indices, shuffle, generator)
        executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="scdgm-stream") if self.prefetch else None

        def submit(rows: np.ndarray | None) -> Future | _Ready | None:
            if rows is None:
                return None
            return executor.submit(self._read_window, rows) if executor else _Ready(self._read_window(rows))

        carry: list[Batch] = []
        n_carry = 0
        try:
            pending = submit(next(windows, None))
            while pending is not None:
                block, local, rows = pending.result()
                pending = submit(next(windows, None))
                matrix = _DeviceRows(block, self.device)
                local_t = torch.as_tensor(local, dtype=torch.int64).to(self.device)
                rows_t = torch.as_tensor(rows, dtype=torch.int64).to(self.device)
                n, start = len(rows), 0
                if n_carry:
                    # Complete the batch begun in the previous window, so only the epoch's last batch is short.
                    take = min(batch_size - n_carry, n)
                    carry.append(self._batch(matrix.rows(local_t[:take], local[:take]), rows_t[:take]))
                    n_carry, start = n_carry + take, take
                    if n_carry == batch_size:
                        yield _concat(carry)
                        carry, n_carry = [], 0
                while n - start >= batch_size:
                    stop = start + batch_size
                    yield self._batch(matrix.rows(local_t[start:stop], local[start:stop]), rows_t[start:stop])
                    start = stop
                if start < n:
                    carry.append(self._batch(matrix.rows(local_t[start:], local[start:]), rows_t[start:]))
                    n_carry += n - start
            if n_carry and not drop_last:
                yield _concat(carry)
        finally:
            if executor is not None:
                executor.shutdown(wait=True, cancel_futures=True)


class MiniBatches:
    """Minibatches of a subset of cells: each iteration is one epoch.

    With ``shuffle``, every epoch draws a new order from a :class:`torch.Generator` seeded once here,
    so the sequence of epochs is reproducible from ``seed``. Without it, batches follow ``indices``.

    Parameters
    ----------
    store
        Where the data lives (:meth:`BatchStore.from_prepared`).
    indices
        Rows to serve, e.g. the training cells of :func:`~scdgm.data.split_indices`.
    batch_size
        Rows per batch.
    shuffle
        Serve a new random order every epoch.
    seed
        Seed of the shuffling.
    drop_last
        Drop each epoch's last batch when it is smaller than ``batch_size``.
    """

    def __init__(
        self,
        store: BatchStore,
        indices: np.ndarray,
        *,
        batch_size: int,
        shuffle: bool,
        seed: int = 0,
        drop_last: bool = False,
    ) -> None:
        if isinstance(batch_size, bool) or not isinstance(batch_size, int | np.integer) or batch_size < 1:
            msg = f"batch_size must be a positive integer, not {batch_size!r}."
            raise ValueError(msg)
        indices = np.asarray(indices)
        if indices.ndim != 1 or (indices.size and indices.dtype.kind not in "iu"):
            msg = f"indices must be a 1-D integer array of rows, got dtype {indices.dtype} and shape {indices.shape}."
            raise ValueError(msg)
        indices = indices.astype(np.int64, copy=False)
        if indices.size and (indices.min() < 0 or indices.max() >= store.n_obs):
            msg = f"indices must lie in [0, {store.n_obs}), got values in [{indices.min()}, {indices.max()}]."
            raise IndexError(msg)
        self.store = store
        self.indices = indices
        self.batch_size = int(batch_size)
        self.shuffle = bool(shuffle)
        self.drop_last = bool(drop_last)
        self.generator = torch.Generator().manual_seed(int(seed))

    @property
    def n_obs(self) -> int:
        """Number of cells served per epoch (before ``drop_last``)."""
        return len(self.indices)

    @property
    def device(self) -> str:
        """Device of the batches."""
        return self.store.device

    def __len__(self) -> int:
        if self.drop_last:
            return self.n_obs // self.batch_size
        return math.ceil(self.n_obs / self.batch_size)

    def __iter__(self) -> Iterator[Batch]:
        generator = self.generator if self.shuffle else None
        return self.store.iter_batches(self.indices, self.batch_size, self.shuffle, generator, self.drop_last)

    def __repr__(self) -> str:
        return (
            f"MiniBatches({self.n_obs} cells, batch_size={self.batch_size}, {len(self)} batches, "
            f"shuffle={self.shuffle}, drop_last={self.drop_last}, {self.store!r})"
        )
