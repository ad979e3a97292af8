"""``prepare_data``: pick the input matrix of an AnnData, validate it in one pass, encode covariates."""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from .._warnings import ScdgmWarning
from ._encoding import CategoryEncoding

if TYPE_CHECKING:
    from anndata import AnnData

_N_SHOWN = 5
_INTEGER_TOLERANCE = 1e-6
MAX_COUNT = float(2**24)
"""Largest count a count likelihood accepts: float32 holds every integer up to it exactly."""


def _first(names: Any, n: int = _N_SHOWN) -> str:
    names = [str(name) for name in names]
    return ", ".join(names[:n]) + (", ..." if len(names) > n else "")


def _backed_sparse_format(X: Any) -> str | None:
    """``"csr"`` or ``"csc"`` for anndata's backed sparse datasets, else ``None``."""
    try:
        from anndata.abc import CSCDataset, CSRDataset
    except ImportError:  # anndata < 0.11
        from anndata._core.sparse_dataset import BaseCompressedSparseDataset

        return str(X.format) if isinstance(X, BaseCompressedSparseDataset) else None
    if isinstance(X, CSRDataset):
        return "csr"
    return "csc" if isinstance(X, CSCDataset) else None


def _is_backed_sparse(X: Any) -> bool:
    return _backed_sparse_format(X) is not None


def _is_backed(X: Any) -> bool:
    import h5py

    return isinstance(X, h5py.Dataset) or _is_backed_sparse(X)


@dataclass
class PreparedData:
    """The validated input of a model: a cells x features matrix, library sizes and encoded covariates.

    Made by :func:`prepare_data`; models and the batch stores read data only through this.

    Attributes
    ----------
    X
        Cells x features: a dense :class:`numpy.ndarray`, a :class:`scipy.sparse.csr_matrix` (never
        densified), or, for a backed AnnData, the on-disk dataset (read in row chunks, never whole).
    source
        Where ``X`` came from, for messages: ``"adata.X"``, ``"adata.layers['counts']"``, ...
    var_names
        Feature names (``"<use_rep>_<i>"`` for an ``.obsm`` input).
    obs_names
        Cell names.
    library
        ``float32`` row sums of ``X`` over the features used, one per cell.
    covariates
        ``"batch"`` and/or ``"labels"``: ``int64`` codes per cell (``-1`` = missing label).
    encodings
        The :class:`CategoryEncoding` of each covariate (same keys as ``covariates``).
    is_backed
        Whether ``X`` is read from disk.
    feature_index
        Columns of ``X`` that are used, in order, or ``None`` for all. Only set on backed data
        (in memory, :meth:`select_features` subsets ``X`` itself); applied to every chunk read.
    n_nonzero
        Number of non-zero entries over the features used.
    chunk_size
        Rows per chunk when ``X`` is read piecewise.
    """

    X: Any
    source: str
    var_names: np.ndarray
    obs_names: np.ndarray
    library: np.ndarray
    covariates: dict[str, np.ndarray] = field(default_factory=dict)
    encodings: dict[str, CategoryEncoding] = field(default_factory=dict)
    is_backed: bool = False
    feature_index: np.ndarray | None = None
    n_nonzero: int = 0
    chunk_size: int = 10_000

    @property
    def n_obs(self) -> int:
        """Number of cells."""
        return len(self.obs_names)

    @property
    def n_vars(self) -> int:
        """Number of features used."""
        return len(self.var_names)

    @property
    def is_sparse(self) -> bool:
        """Whether ``X`` is stored sparse (CSR in memory or on disk)."""
        return sp.issparse(self.X) or _is_backed_sparse(self.X)

    def __repr__(self) -> str:
        kind = "backed " if self.is_backed else ""
        kind += "sparse" if self.is_sparse else "dense"
        covariates = ", ".join(f"{k}: {self.encodings[k].n_categories} categories" for k in self.covariates)
        return (
            f"PreparedData({self.n_obs} cells x {self.n_vars} features from {self.source}, {kind}, "
            f"{self.n_nonzero} non-zero" + (f"; {covariates}" if covariates else "") + ")"
        )

    def read_rows(self, start: int, stop: int) -> np.ndarray | sp.csr_matrix:
        """Rows ``start:stop`` of ``X`` (features selected), loaded into memory.

        Parameters
        ----------
        start, stop
            Row range.

        Returns
        -------
        A dense array or a CSR matrix of ``stop - start`` rows.
        """
        return self._columns(_load(self.X[start:stop]))

    def read_row_index(self, rows: np.ndarray) -> np.ndarray | sp.csr_matrix:
        """Arbitrary rows of ``X`` (features selected), in the order given.

        Parameters
        ----------
        rows
            Row indices; repeats allowed.

        Returns
        -------
        A dense array or a CSR matrix of ``len(rows)`` rows.
        """
        rows = np.asarray(rows, dtype=np.int64)
        if rows.size == 0:
            return self.read_rows(0, 0)
        # h5py and the backed sparse datasets want increasing indices: read those, reorder afterwards.
        unique, inverse = np.unique(rows, return_inverse=True)
        block = _load(self.X[unique])
        if unique.size != rows.size or not np.array_equal(unique, rows):
            block = block[inverse]
        return self._columns(block)

    def _columns(self, block: np.ndarray | sp.csr_matrix) -> np.ndarray | sp.csr_matrix:
        if self.feature_index is None:
            return block
        return block[:, self.feature_index]

    def iter_chunks(self) -> Iterator[tuple[int, int, np.ndarray | sp.csr_matrix]]:
        """Walk ``X`` in chunks of :attr:`chunk_size` rows (features selected).

        Returns
        -------
        An iterator of ``(start, stop, rows)``.
        """
        for start in range(0, self.n_obs, self.chunk_size):
            stop = min(start + self.chunk_size, self.n_obs)
            yield start, stop, self.read_rows(start, stop)

    def select_features(self, order: np.ndarray) -> PreparedData:
        """The same data restricted to (and reordered as) the features ``order``.

        Used to apply a model to an AnnData whose genes are a superset or a permutation of the
        model's. The library sizes are recomputed over the selected features.

        Parameters
        ----------
        order
            Integer positions into the current features.

        Returns
        -------
        A new :class:`PreparedData`; ``self`` is unchanged.
        """
        order = np.asarray(order, dtype=np.int64)
        if order.ndim != 1 or (order.size and (order.min() < 0 or order.max() >= self.n_vars)):
            msg = f"order must be a 1-D array of feature positions in [0, {self.n_vars}), got {order!r}."
            raise ValueError(msg)
        if self.is_backed:
            index = order if self.feature_index is None else self.feature_index[order]
            new = dataclasses.replace(self, feature_index=index, var_names=self.var_names[order])
        else:
            X = self.X[:, order]
            X = X.tocsr() if sp.issparse(X) else np.ascontiguousarray(X)
            new = dataclasses.replace(self, X=X, var_names=self.var_names[order])
        library = np.zeros(new.n_obs, dtype=np.float64)
        n_nonzero = 0
        for start, stop, block in new.iter_chunks():
            if sp.issparse(block):
                library[start:stop] = np.asarray(block.sum(axis=1), dtype=np.float64).ravel()
                n_nonzero += int(np.count_nonzero(block.data))
            else:
                library[start:stop] = block.sum(axis=1, dtype=np.float64)
                n_nonzero += int(np.count_nonzero(block))
        new.library = library.astype(np.float32)
        new.n_nonzero = n_nonzero
        return new


def _load(block: Any) -> np.ndarray | sp.csr_matrix:
    """A row block read from any supported ``X`` as an in-memory dense array or CSR matrix."""
    if sp.issparse(block):
        return block if isinstance(block, sp.csr_matrix) else sp.csr_matrix(block)
    return np.asarray(block)


def _as_matrix(X: Any, source: str) -> Any:
    """Bring a supported input to dense ndarray / csr_matrix / backed dataset, refusing the rest."""
    if _is_backed(X):
        if _backed_sparse_format(X) == "csc":
            msg = (
                f"{source} is a backed CSC matrix: it cannot be read by rows without loading it whole. "
                "Load it (`adata = ad.read_h5ad(path)`) or rewrite it as CSR once: "
                "`adata.X = adata.X.tocsr(); adata.write_h5ad(path)`."
            )
            raise ValueError(msg)
        if len(X.shape) != 2:
            msg = f"{source} must be 2-D (cells x features), got shape {X.shape}."
            raise ValueError(msg)
        return X
    if isinstance(X, pd.DataFrame):
        X = X.to_numpy()
    if sp.issparse(X):
        if X.format == "csr":
            # Share the arrays (no copy) but drop subclasses such as AnnData's copy-on-write views.
            return sp.csr_matrix((X.data, X.indices, X.indptr), shape=X.shape)
        return sp.csr_matrix(X.tocsr())
    if isinstance(X, np.ndarray):
        X = np.asarray(X)
        if X.ndim != 2:
            msg = f"{source} must be 2-D (cells x features), got shape {X.shape}."
            raise ValueError(msg)
        if X.dtype.kind not in "biuf":
            msg = f"{source} must hold numbers, got dtype {X.dtype}."
            raise TypeError(msg)
        return X
    msg = (
        f"{source} is a {type(X).__module__}.{type(X).__name__}, which scdgm cannot read. "
        "Convert it to a numpy array or a scipy CSR matrix first (for dask: `adata.X = adata.X.compute()`)."
    )
    raise TypeError(msg)


def _select_input(adata: AnnData, layer: str | None, use_rep: str | None) -> tuple[Any, str, np.ndarray]:
    if layer is not None and use_rep is not None:
        msg = f"Pass layer= or use_rep=, not both (got layer={layer!r}, use_rep={use_rep!r})."
        raise ValueError(msg)
    if use_rep is not None:
        if use_rep not in adata.obsm:
            msg = f"use_rep={use_rep!r} is not in adata.obsm. Available keys: {list(adata.obsm.keys())}."
            raise KeyError(msg)
        source = f"adata.obsm[{use_rep!r}]"
        X = _as_matrix(adata.obsm[use_rep], source)
        return X, source, np.array([f"{use_rep}_{i}" for i in range(X.shape[1])], dtype=object)
    if layer is not None:
        if layer not in adata.layers:
            msg = f"layer={layer!r} is not in adata.layers. Available layers: {list(adata.layers.keys())}."
            raise KeyError(msg)
        source = f"adata.layers[{layer!r}]"
        return _as_matrix(adata.layers[layer], source), source, adata.var_names.to_numpy()
    if adata.X is None:
        msg = f"adata.X is empty (None). Pass layer= (available: {list(adata.layers.keys())}) or use_rep=."
        raise ValueError(msg)
    return _as_matrix(adata.X, "adata.X"), "adata.X", adata.var_names.to_numpy()


@dataclass
class _Scan:
    """What one pass over the rows found."""

    n_vars: int
    n_nonfinite: int = 0
    n_negative: int = 0
    n_noninteger: int = 0
    n_nonzero: int = 0
    max_value: float = 0.0
    row_sums: list[np.ndarray] = field(default_factory=list)
    gene_nonzero: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        self.gene_nonzero = np.zeros(self.n_vars, dtype=np.int64)

    def values(self, values: np.ndarray, counts: bool) -> None:
        """Entry-wise checks on stored values (all entries of a dense block, ``.data`` of a sparse one)."""
        if not values.size:
            return
        # Fast paths first: a block of finite, non-negative integers (the usual case) costs a few
        # reductions; the counting passes run only for blocks that break a rule.
        n_nonfinite = int(values.size - np.count_nonzero(np.isfinite(values))) if values.dtype.kind == "f" else 0
        self.n_nonfinite += n_nonfinite
        if not counts:
            return
        finite = values if n_nonfinite == 0 else values[np.isfinite(values)]
        if finite.size:
            self.max_value = max(self.max_value, float(finite.max()))
            if finite.min() < 0:
                self.n_negative += int(np.count_nonzero(finite < 0))
        if finite.dtype.kind == "f":
            rounded = np.rint(finite)
            if not np.array_equal(rounded, finite):
                rounded -= finite
                np.abs(rounded, out=rounded)
                self.n_noninteger += int(np.count_nonzero(rounded > _INTEGER_TOLERANCE))

    def block(self, block: np.ndarray | sp.csr_matrix, counts: bool) -> None:
        """Account one row block."""
        if sp.issparse(block):
            data = block.data
            self.values(data, counts)
            n_nonzero = int(np.count_nonzero(data))
            # explicit zeros are rare: mask the indices only when there are some
            indices = block.indices if n_nonzero == data.size else block.indices[data != 0]
            self.gene_nonzero += np.bincount(indices, minlength=self.n_vars)
            self.n_nonzero += n_nonzero
            # scipy's row sums run in C, several times faster than a bincount over repeated row numbers
            self.row_sums.append(np.asarray(block.sum(axis=1, dtype=np.float64)).ravel())
        else:
            self.values(block, counts)
            per_gene = np.count_nonzero(block, axis=0)
            self.gene_nonzero += per_gene
            self.n_nonzero += int(per_gene.sum())
            self.row_sums.append(block.sum(axis=1, dtype=np.float64))


def _iter_blocks(X: Any, chunk_size: int) -> Iterator[np.ndarray | sp.csr_matrix]:
    n_obs = X.shape[0]
    if isinstance(X, sp.csr_matrix):
        # Cheap row blocks that share X's arrays: slicing a CSR matrix would copy every chunk.
        for start in range(0, n_obs, chunk_size):
            stop = min(start + chunk_size, n_obs)
            lo, hi = X.indptr[start], X.indptr[stop]
            parts = (X.data[lo:hi], X.indices[lo:hi], X.indptr[start : stop + 1] - lo)
            yield sp.csr_matrix(parts, shape=(stop - start, X.shape[1]), copy=False)
        return
    for start in range(0, n_obs, chunk_size):
        yield _load(X[start : min(start + chunk_size, n_obs)])


def _var_mask(adata: AnnData, mask_var: str | np.ndarray | None, use_rep: str | None) -> np.ndarray | None:
    """The boolean mask of genes ``mask_var`` names, refusing one that selects nothing or does not fit."""
    if mask_var is None:
        return None
    if use_rep is not None:
        msg = f"mask_var selects genes; it does not apply to use_rep={use_rep!r}."
        raise ValueError(msg)
    if isinstance(mask_var, str):
        if mask_var not in adata.var.columns:
            msg = (
                f"mask_var={mask_var!r} is not a column of adata.var. Available columns: {list(adata.var.columns)}. "
                "For highly variable genes run `sc.pp.highly_variable_genes` first."
            )
            raise KeyError(msg)
        values = adata.var[mask_var].to_numpy()
    else:
        values = np.asarray(mask_var)
    if values.dtype != bool or values.shape != (adata.n_vars,):
        msg = f"mask_var must be a boolean .var column or array of {adata.n_vars} values, got dtype {values.dtype} and shape {values.shape}."
        raise ValueError(msg)
    if not values.any():
        msg = "mask_var selects no gene."
        raise ValueError(msg)
    return values


def _masked_library(X: Any, keep: np.ndarray, chunk_size: int) -> np.ndarray:
    """Row sums over the kept genes, chunk by chunk."""
    sums = [np.asarray(block[:, keep].sum(axis=1), dtype=np.float64).ravel() for block in _iter_blocks(X, chunk_size)]
    return np.concatenate(sums)


def _data_errors(scan: _Scan, source: str, counts: bool, obs_names: np.ndarray, library: np.ndarray) -> str | None:
    if scan.n_nonfinite:
        return (
            f"{source} holds {scan.n_nonfinite} NaN or infinite values. Models cannot train on them: "
            "find where they came from (a failed normalisation, a division by zero) and replace or remove them, "
            "e.g. `adata = adata[np.isfinite(X).all(axis=1)]` on the matrix you pass."
        )
    if not counts:
        return None
    if scan.n_negative:
        return (
            f"{source} holds {scan.n_negative} negative entries, but a count likelihood (nb, zinb, poisson) "
            "needs raw counts. Point to the raw counts with `layer='counts'` (or wherever they are kept), "
            "or use likelihood='normal' for normalised or scaled data."
        )
    if scan.n_noninteger:
        return (
            f"{source} holds {scan.n_noninteger} non-integer entries: it looks normalised or log-transformed, "
            "but a count likelihood (nb, zinb, poisson) needs raw counts. Point to the raw counts with "
            "`layer='counts'` (or wherever they are kept), or use likelihood='normal' for normalised data."
        )
    if scan.max_value > MAX_COUNT:
        return (
            f"{source} holds counts up to {scan.max_value:.3g}, beyond {MAX_COUNT:.3g}: no sequencing experiment "
            "counts that many molecules of one gene in one cell, and float32 cannot hold such counts exactly. "
            "These are not raw counts (scaled data?): point to the raw counts, or use likelihood='normal'."
        )
    empty = np.flatnonzero(library == 0)
    if empty.size:
        return (
            f"{empty.size} cells have no counts at all in {source} (first: {_first(obs_names[empty])}). "
            "A count model cannot explain an empty cell: remove them with `sc.pp.filter_cells(adata, min_counts=1)`."
        )
    return None


def _encode_covariate(
    adata: AnnData,
    name: str,
    key: str,
    encodings: Mapping[str, CategoryEncoding],
    *,
    allow_missing: bool,
) -> tuple[np.ndarray, CategoryEncoding]:
    values = adata.obs[key]
    missing = values.isna().to_numpy()
    if missing.any() and not allow_missing:
        advice = (
            "Pass allow_missing_labels=True to keep them as unlabelled cells, or remove them."
            if name == "labels"
            else "Every cell needs a batch: fill the missing values (e.g. with 'unknown') or remove those cells."
        )
        msg = (
            f"{int(missing.sum())} cells have no value in adata.obs[{key!r}] "
            f"(first: {_first(adata.obs_names[missing])}). {advice}"
        )
        raise ValueError(msg)
    encoding = encodings.get(name)
    if encoding is None:
        encoding = CategoryEncoding.fit(values, key)
        if encoding.n_categories == 0:
            msg = f"adata.obs[{key!r}] holds no value at all: there is nothing to learn {name} from."
            raise ValueError(msg)
    return encoding.encode(values, allow_missing=allow_missing), encoding


def prepare_data(
    adata: AnnData,
    *,
    layer: str | None = None,
    use_rep: str | None = None,
    counts: bool = False,
    batch_key: str | None = None,
    labels_key: str | None = None,
    encodings: Mapping[str, CategoryEncoding] | None = None,
    allow_missing_labels: bool = False,
    chunk_size: int = 10_000,
    feature_filter_advice: bool = True,
    mask_var: str | np.ndarray | None = None,
) -> PreparedData:
    """Validate the input of a model and bring it to a :class:`PreparedData`; ``adata`` is not modified.

    The matrix is read once, in chunks of ``chunk_size`` rows (also when it is backed on disk),
    to count non-finite values, and with ``counts=True`` negative and non-integer entries and
    empty cells; every problem raises before any model work starts, with a message that says
    what to do. Features that are zero in every cell only warn (:class:`~scdgm._warnings.ScdgmWarning`).

    Parameters
    ----------
    adata
        Cells x genes. In memory (dense, CSR or CSC; views too) or backed (``read_h5ad(path, backed="r")``),
        in which case ``.X`` stays on disk.
    layer
        Use ``adata.layers[layer]`` instead of ``adata.X``.
    use_rep
        Use ``adata.obsm[use_rep]`` (an array or a DataFrame) instead of ``adata.X``.
    counts
        The model has a count likelihood: require non-negative integers and no empty cell.
    batch_key
        ``.obs`` column of batches, encoded as ``covariates["batch"]``. Missing values are refused.
    labels_key
        ``.obs`` column of labels (cell types), encoded as ``covariates["labels"]``.
    encodings
        Encodings to reuse (``{"batch": ..., "labels": ...}``), e.g. those a stored model was trained
        with; categories unknown to them raise. Covariates without one are fitted on ``adata``.
    allow_missing_labels
        Let cells without a label through, with code ``-1``.
    chunk_size
        Rows read at a time.
    mask_var
        Use only the genes where this boolean ``.var`` column (e.g. ``"highly_variable"``) or array is
        true, as :func:`scanpy.pp.pca` does: no view of the AnnData is needed. Library sizes are
        those of the kept genes.
    feature_filter_advice
        Advise removing all-zero features in the warning about them. ``False`` where the features are
        fixed by a trained model, which needs every one of them.

    Returns
    -------
    The validated data, referencing (not copying) in-memory dense and CSR matrices.
    """
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int | np.integer) or chunk_size < 1:
        msg = f"chunk_size must be a positive integer, not {chunk_size!r}."
        raise ValueError(msg)
    for name, key in (("batch_key", batch_key), ("labels_key", labels_key)):
        if key is not None and key not in adata.obs.columns:
            msg = f"{name}={key!r} is not a column of adata.obs. Available columns: {list(adata.obs.columns)}."
            raise KeyError(msg)
    X, source, var_names = _select_input(adata, layer, use_rep)
    keep = _var_mask(adata, mask_var, use_rep)
    if use_rep is None and not adata.var_names.is_unique:
        repeated = adata.var_names[adata.var_names.duplicated()].unique()
        msg = (
            f"adata.var_names repeats {len(repeated)} name(s) (first: {_first(repeated)}). Genes are matched by "
            "name (to apply a model, to report loadings), so they must be unique: run "
            "`adata.var_names_make_unique()` first."
        )
        raise ValueError(msg)
    n_obs, n_vars = X.shape
    if n_obs == 0 or n_vars == 0:
        msg = (
            f"{source} has shape ({n_obs}, {n_vars}): there are no cells or no features to model. "
            "Check the filtering steps that led here (e.g. `sc.pp.filter_cells` / `sc.pp.filter_genes` thresholds)."
        )
        raise ValueError(msg)

    encodings = dict(encodings or {})
    covariates: dict[str, np.ndarray] = {}
    used_encodings: dict[str, CategoryEncoding] = {}
    for name, key, allow in (("batch", batch_key, False), ("labels", labels_key, allow_missing_labels)):
        if key is not None:
            covariates[name], used_encodings[name] = _encode_covariate(adata, name, key, encodings, allow_missing=allow)

    scan = _Scan(n_vars)
    with np.errstate(invalid="ignore", over="ignore"):  # non-finite values are counted, not warned about
        for block in _iter_blocks(X, int(chunk_size)):
            scan.block(block, counts)
    library = np.concatenate(scan.row_sums)
    obs_names = adata.obs_names.to_numpy()
    if keep is not None:
        scan.gene_nonzero = np.where(keep, scan.gene_nonzero, 1)  # genes left out are not warned about
        library = _masked_library(X, keep, int(chunk_size))
        source = f"{source} (mask_var={mask_var if isinstance(mask_var, str) else 'array'})"
    error = _data_errors(scan, source, counts, obs_names, library)
    if error:
        raise ValueError(error)
    all_zero = np.flatnonzero(scan.gene_nonzero == 0)
    if all_zero.size:
        advice = (
            "Remove them with `sc.pp.filter_genes(adata, min_cells=1)`: they carry no information and slow training."
            if use_rep is None and feature_filter_advice
            else "They carry no information."
        )
        msg = f"{all_zero.size} features of {source} are zero in every cell (first: {_first(var_names[all_zero])}). {advice}"
        warnings.warn(msg, ScdgmWarning, stacklevel=2)

    data = PreparedData(
        X=X,
        source=source,
        var_names=np.asarray(var_names),
        obs_names=obs_names,
        library=library.astype(np.float32),
        covariates=covariates,
        encodings=used_encodings,
        is_backed=_is_backed(X),
        n_nonzero=scan.n_nonzero,
        chunk_size=int(chunk_size),
    )
    return data if keep is None else data.select_features(np.flatnonzero(keep))
