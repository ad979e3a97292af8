"""Real 10x PBMC counts with cell-type labels, recovered offline from the small file scanpy ships."""

from __future__ import annotations

import warnings
from importlib.util import find_spec
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp
from anndata import AnnData, read_h5ad

from .._results import package_version

_FILE = "10x_pbmc68k_reduced.h5ad"
_SCALE = 1e4  # scanpy normalised the file to 10,000 counts per cell before log1p
# The file stores log1p values rounded to 3 decimals, so a true count reproduces them to within
# 5e-4 (plus float32 rounding); anything beyond 1e-3 means the file is not what we expect.
_LOG_TOLERANCE = 1e-3


def pbmc68k() -> AnnData:
    """Raw counts of 700 peripheral blood mononuclear cells with 10 cell types, offline.

    A subsample of the 68k PBMCs of Zheng et al. (2017, 10x Genomics), from the file
    ``10x_pbmc68k_reduced.h5ad`` that scanpy installs with itself. That file keeps, for 765 genes,
    only ``log1p(counts / n_counts * 1e4)`` in ``.raw.X``; the integer counts are recovered as
    ``expm1(raw.X) * n_counts / 1e4`` and checked to be integers (to the 3 decimals the file
    stores), so nothing is downloaded and nothing is invented.

    Library sizes (``.obs["n_counts"]``) are totals over the 765 genes present, about a fifth of
    the cells' totals over all genes (kept in ``.obs["n_counts_all_genes"]``).

    Returns
    -------
    AnnData with 700 cells x 765 genes:

    ``.X``
        Counts, :class:`scipy.sparse.csr_matrix` of float32 holding integers.
    ``.layers["counts"]``
        A copy of ``.X``, untouched when ``.X`` is normalised.
    ``.obs["cell_type"]``
        Categorical, 10 types (the file's ``bulk_labels``: cells annotated by correlation with
        FACS-sorted reference populations), e.g. ``"CD14+ Monocyte"``, ``"CD19+ B"``, ``"CD56+ NK"``.
    ``.obs["n_counts"]``
        Total counts of the cell over the 765 genes.
    ``.obs["n_genes"]``
        Number of the 765 genes detected (count > 0) in the cell.
    ``.obs["n_counts_all_genes"]``
        Total counts of the cell over all genes, before the file was reduced to 765.
    ``.var_names``
        Gene symbols.
    ``.uns["dataset"]``
        Where the data come from: ``"name"``, ``"source"`` (file name), ``"scanpy_version"``,
        ``"counts_recovery"`` (how counts were computed), ``"max_log_mismatch"`` (largest
        difference between the file's values and those the recovered counts give), ``"reference"``.

    Raises
    ------
    FileNotFoundError
        If scanpy is missing or does not ship the file.
    RuntimeError
        If the bundled file changed so that integer counts cannot be recovered.

    Examples
    --------
    >>> import scdgm as dgm
    >>> adata = dgm.datasets.pbmc68k()
    >>> adata
    AnnData object with n_obs × n_vars = 700 × 765
        obs: 'cell_type', 'n_counts', 'n_genes', 'n_counts_all_genes'
        uns: 'dataset'
        layers: 'counts'
    >>> adata.obs["cell_type"].value_counts().head(3)  # doctest: +NORMALIZE_WHITESPACE
    cell_type
    Dendritic         240
    CD14+ Monocyte    129
    CD19+ B            95
    Name: count, dtype: int64
    """
    path = _bundled_path()
    scanpy_version = package_version("scanpy")
    reduced = _read_reduced(path)
    changed = f"The file {_FILE} bundled with scanpy {scanpy_version} changed"
    missing = [key for key in ("n_counts", "bulk_labels") if key not in reduced.obs]
    if reduced.raw is None or missing:
        what = "no .raw" if reduced.raw is None else f"no .obs[{missing[0]!r}]"
        msg = f"{changed}: it has {what}. pbmc68k() was written for the file of scanpy 1.10-1.11."
        raise RuntimeError(msg)

    log_normalised = sp.csr_matrix(reduced.raw.X)
    totals = np.asarray(reduced.obs["n_counts"], dtype=np.float64)
    scale = np.repeat(totals / _SCALE, np.diff(log_normalised.indptr))
    stored = log_normalised.data.astype(np.float64)
    counts = np.rint(np.expm1(stored) * scale)
    # Compare in log space, where the file's rounding error is uniform; on the count scale it grows
    # with the count (up to 0.08 for the largest counts), so an absolute count tolerance would not fit.
    mismatch = float(np.max(np.abs(np.log1p(counts / scale) - stored), initial=0.0))
    if not np.isfinite(mismatch) or mismatch > _LOG_TOLERANCE or (counts < 1).any():
        msg = (
            f"{changed}: expm1(raw.X) * n_counts / 1e4 is not a matrix of integer counts "
            f"(largest log-scale mismatch {mismatch:.3g}, tolerance {_LOG_TOLERANCE:g}). "
            "pbmc68k() was written for the file of scanpy 1.10-1.11; please report this."
        )
        raise RuntimeError(msg)

    X = sp.csr_matrix(
        (counts.astype(np.float32), log_normalised.indices.copy(), log_normalised.indptr.copy()),
        shape=log_normalised.shape,
    )
    X.sort_indices()
    obs = pd.DataFrame(
        {
            "cell_type": pd.Categorical(reduced.obs["bulk_labels"]),
            "n_counts": np.asarray(X.sum(axis=1), dtype=np.float64).ravel(),
            "n_genes": np.diff(X.indptr),
            "n_counts_all_genes": totals,
        },
        index=pd.Index(reduced.obs_names.astype(str), name=None),
    )
    var = pd.DataFrame(index=pd.Index(reduced.raw.var_names.astype(str), name=None))
    dataset = {
        "name": "pbmc68k",
        "source": f"{_FILE} bundled with scanpy",
        "scanpy_version": scanpy_version,
        "counts_recovery": "counts = rint(expm1(raw.X) * obs['n_counts'] / 1e4); raw.X = log1p(counts / n_counts * 1e4)",
        "max_log_mismatch": mismatch,
        "reference": "Zheng et al. (2017), Massively parallel digital transcriptional profiling of single cells, "
        "Nat Commun 8:14049",
    }
    adata = AnnData(X=X, obs=obs, var=var, uns={"dataset": dataset})
    adata.layers["counts"] = X.copy()
    return adata


def _bundled_path() -> Path:
    """Path of scanpy's bundled file, found without importing scanpy (which takes seconds)."""
    spec = find_spec("scanpy")
    if spec is None or spec.origin is None:
        msg = f"pbmc68k() reads {_FILE}, which comes with scanpy; install scanpy (`pip install scanpy`)."
        raise FileNotFoundError(msg)
    path = Path(spec.origin).parent / "datasets" / _FILE
    if not path.is_file():
        msg = (
            f"scanpy {package_version('scanpy')} does not ship {_FILE} (looked at {path}); "
            "pbmc68k() needs the copy bundled with scanpy 1.10-1.11."
        )
        raise FileNotFoundError(msg)
    return path


def _read_reduced(path: Path) -> AnnData:
    """Read the bundled file, silencing anndata's notes about its old layout (not the user's concern)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return read_h5ad(path)
