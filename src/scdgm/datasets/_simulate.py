"""Negative-binomial single-cell counts simulated from known ground truth, in memory-bounded blocks of cells."""

from __future__ import annotations

import os
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from numbers import Integral, Real
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp
from anndata import AnnData

from .._choices import PROGRAM_MODELS
from .._results import h5ad_safe, package_version

# Cells are simulated in blocks of about this many cells x genes entries (32 MiB per float64 array),
# so memory does not grow with n_cells beyond the sparse result. Each block draws from its own
# random stream, keyed by the seed and the block index, so threads never change the result.
_BLOCK_ENTRIES = 2**22
_MAX_BLOCK_CELLS = 4096
_MAX_THREADS = 4
# A cell whose counts are all zero is redrawn this many times before it gets one count in its top gene.
_ZERO_CELL_RETRIES = 10
# Log-linear programs: loadings on the log rate drawn uniformly from this range, and a cell's activity
# of a program capped at this value, so that the log rate stays bounded whatever the gamma noise draws.
_LOG_LINEAR_LOADINGS = (1.0, 2.5)
_LOG_LINEAR_MAX_ACTIVITY = 1.5


@dataclass(frozen=True)
class _Truth:
    """Gene-level and cell-type-level ground truth shared by all blocks of cells."""

    base_log_expression: np.ndarray  # (n_genes,)
    dispersion: np.ndarray  # (n_genes,) inverse dispersion theta
    programs: np.ndarray  # (n_genes, n_programs) non-negative loadings
    program_profiles: np.ndarray  # (n_cell_types, n_programs) mean activity per cell type
    marker_index: np.ndarray  # (n_cell_types, markers_per_type) gene indices
    batch_effects: np.ndarray  # (n_batches, n_genes) multiplicative factors (all ones for one batch)
    cell_type_proportions: np.ndarray  # (n_cell_types,)
    condition_log_change: np.ndarray  # (n_conditions, n_cell_types, n_genes), zero for condition 0


@dataclass
class _Block:
    """The simulated cells of one block: CSR pieces and the per-cell truth."""

    data: np.ndarray
    indices: np.ndarray
    row_nnz: np.ndarray
    cell_type: np.ndarray
    batch: np.ndarray
    condition: np.ndarray
    library_size: np.ndarray
    n_counts: np.ndarray
    activity: np.ndarray


def simulate(
    n_cells: int = 2000,
    n_genes: int = 500,
    *,
    n_cell_types: int = 5,
    n_batches: int = 1,
    n_conditions: int = 1,
    n_programs: int = 8,
    program_model: str = "log1p",
    markers_per_type: int | None = None,
    marker_fold_change: float = 5.0,
    program_fraction: float = 0.08,
    mean_library_size: float | None = None,
    library_size_sd: float = 0.5,
    gene_expression_sd: float = 1.5,
    dispersion: float = 1.0,
    batch_effect_sd: float = 0.5,
    activity_cv: float = 0.5,
    response_fraction: float = 0.1,
    response_sd: float = 1.0,
    response_type_sd: float = 0.5,
    copy_counts: bool = True,
    seed: int = 0,
    n_jobs: int | None = None,
) -> AnnData:
    r"""Simulate single-cell counts from a negative-binomial model with known ground truth.

    Every gene belongs to zero or more gene programs; each cell type has a mean activity of each
    program, and each cell varies around it. Cell types also get their own marker genes, batches a
    gene-wise multiplicative effect, conditions (a perturbation) a response that depends on the cell
    type, and cells a library size. The expected count of gene :math:`g` in cell :math:`c` of type
    :math:`t`, batch :math:`b` and condition :math:`k` is

    .. math::

        \mu_{cg} = \ell_c \,
        \frac{r_{cg}}{\sum_{g'} r_{cg'}}, \qquad
        \log r_{cg} = \beta_g + \phi\bigl((W a_c)_g\bigr) + \log(f)\,[g \in M_t] + \log \gamma_{bg}
        + \delta_{ktg},

    with :math:`\phi(u) = \log(1 + u)` (``program_model="log1p"``, the default) or :math:`\phi(u) = u`
    (``program_model="log-linear"``, the model class of a linearly decoded VAE), and counts are drawn
    as :math:`\mathrm{NB}(\mu_{cg}, \theta_g)` through a Gamma-Poisson mixture (variance
    :math:`\mu + \mu^2/\theta`). Cells are made in blocks of a few thousand, so a dense cells x genes
    array never exists: 1,000,000 cells x 2,000 genes fit in a few GB.

    Parameters
    ----------
    n_cells
        Number of cells (rows).
    n_genes
        Number of genes (columns).
    n_cell_types
        Number of cell types, ``"type_0"``, ``"type_1"``, ... Their proportions are drawn once
        from a Dirichlet distribution (concentration 5 per type).
    n_batches
        Number of batches, ``"batch_0"``, ... Cells are spread over batches uniformly at random.
        With one batch there is no batch effect.
    n_conditions
        Number of conditions, ``"control"``, ``"condition_1"``, ... Cells are spread over conditions
        uniformly at random; condition 0 is the control (:math:`\delta_{0tg} = 0`). With one condition
        there is no perturbation.
    n_programs
        Number of gene programs (columns of the loading matrix :math:`W`).
    program_model
        ``"log1p"``: programs act on the log rate through :math:`\log(1 + W a_c)`, with log-normal
        loadings around 3 on overlapping gene sets and exponential type profiles. ``"log-linear"``:
        programs act linearly on the log rate, on disjoint gene sets, with loadings uniform in
        [1, 2.5]; each program is switched on (profile uniform in [0.5, 1]) in about half of the cell
        types, at least one and, with two or more types, not all; a cell's activity is capped at 1.5,
        so the log rate is a bounded linear function of the activities.
    markers_per_type
        Marker genes per cell type; the sets of different types are disjoint. ``0`` for none. By
        default 10, or fewer when there are few genes (at most half of the genes are markers).
    marker_fold_change
        Multiplicative rise of a marker gene's expression in its own cell type (before the
        per-cell normalisation to the library size).
    program_fraction
        Fraction of genes in each program (at least one gene). Programs may overlap with
        ``"log1p"``; with ``"log-linear"`` they are disjoint, so ``n_programs * program_fraction``
        must not exceed 1.
    mean_library_size
        Mean expected total counts per cell; by default one count per gene (2,000 for 2,000 genes).
    library_size_sd
        Standard deviation of the log library size (library sizes are log-normal).
    gene_expression_sd
        Standard deviation of the genes' baseline log expression :math:`\beta_g`; larger values
        spread genes over more orders of magnitude and make the matrix sparser.
    dispersion
        Median of the genes' inverse dispersion :math:`\theta_g` (log-normal around it, log-sd 0.5);
        smaller is noisier.
    batch_effect_sd
        Standard deviation of the log batch effect :math:`\log \gamma_{bg}` (only with ``n_batches > 1``).
    activity_cv
        Coefficient of variation of a cell's program activities around its cell type's profile
        (gamma-distributed multiplicative noise); ``0`` makes every cell of a type identical in
        program space.
    response_fraction
        Fraction of genes that respond to each non-control condition (at least one gene).
    response_sd
        Standard deviation of a responding gene's log change shared by all cell types.
    response_type_sd
        Standard deviation of the cell-type-specific part of the log change: the response of gene
        :math:`g` to condition :math:`k` in type :math:`t` is :math:`\delta_{ktg} = s_{kg} + u_{ktg}`
        with :math:`s_{kg} \sim N(0, \text{response\_sd}^2)` and
        :math:`u_{ktg} \sim N(0, \text{response\_type\_sd}^2)` for responding genes, 0 otherwise.
    copy_counts
        Whether ``.layers["counts"]`` is a copy of ``.X`` (default) or the very same matrix object,
        which halves the memory of large simulations but means that normalising ``.X`` in place
        (``sc.pp.normalize_total``) also changes ``.layers["counts"]``.
    seed
        Random seed. The same arguments and seed always give the same data, whatever ``n_jobs``.
    n_jobs
        Threads drawing blocks of cells in parallel; by default up to 4 of the available cores.

    Returns
    -------
    AnnData with ``n_cells`` x ``n_genes`` counts and the truth they were drawn from:

    ``.X``
        Counts, :class:`scipy.sparse.csr_matrix` of float32 holding integers.
    ``.layers["counts"]``
        The same counts: a copy of ``.X``, so that in-place normalisation of ``.X`` leaves them
        intact, or ``.X`` itself with ``copy_counts=False``.
    ``.obs["cell_type"]``
        Categorical, ``"type_0"``, ``"type_1"``, ...
    ``.obs["batch"]``
        Categorical, ``"batch_0"``, ... (always present, one category when ``n_batches == 1``).
    ``.obs["condition"]``
        Categorical, ``"control"``, ``"condition_1"``, ... (only with ``n_conditions > 1``).
    ``.obs["library_size"]``
        Expected total counts of the cell, :math:`\ell_c`.
    ``.obs["n_counts"]``
        Observed total counts of the cell (never zero).
    ``.obsm["program_activity"]``
        Program activities :math:`a_c` of each cell (cells x programs, float32).
    ``.var["dispersion"]``
        Inverse dispersion :math:`\theta_g` of the negative binomial.
    ``.var["base_log_expression"]``
        Baseline log expression :math:`\beta_g`.
    ``.varm["programs"]``
        Gene program loadings :math:`W` (genes x programs, non-negative, mostly zero).
    ``.varm["markers"]``
        Boolean, genes x cell types: whether a gene is a marker of a type (columns in the order of
        ``.obs["cell_type"].cat.categories``).
    ``.varm["batch_effects"]``
        Multiplicative batch effects :math:`\gamma_{bg}` (genes x batches); only when ``n_batches > 1``.
    ``.uns["simulation"]``
        Every argument above (``mean_library_size`` resolved; ``copy_counts`` and ``n_jobs``, which
        do not change the data, left out), and
        ``"cell_type_proportions"`` (array), ``"program_profiles"`` (cell types x programs mean
        activities), ``"marker_genes"`` (dict: cell type -> array of gene names),
        ``"condition_log_change"`` (with ``n_conditions > 1``: conditions x cell types x genes array of
        :math:`\delta_{ktg}`, the true log change of the rate :math:`r_{cg}` before normalisation to the
        library size; its first row, the control, is zero) and ``"scdgm_version"``.

    Notes
    -----
    Cells with zero total counts are redrawn (up to 10 times, then given one count in their most
    expected gene), so the counts are NB conditioned on a non-empty cell; with realistic library
    sizes this never triggers. Genes can still be all-zero when they are rare and cells are few.

    Measured with ``benchmarks/simulate_memory.py`` on 2 cores: ``simulate(1_000_000, 2_000)``
    peaks at 7.8 GiB resident memory (503 million stored counts, 75 % zeros; ``.X`` and
    ``.layers["counts"]`` are separate 3.75 GiB CSR matrices) and took 11 minutes on a machine
    shared with other jobs.

    Examples
    --------
    >>> import scdgm as dgm
    >>> adata = dgm.datasets.simulate(1000, 200, n_cell_types=4, n_batches=2, seed=0)
    >>> adata
    AnnData object with n_obs × n_vars = 1000 × 200
        obs: 'cell_type', 'batch', 'library_size', 'n_counts'
        var: 'dispersion', 'base_log_expression'
        uns: 'simulation'
        obsm: 'program_activity'
        varm: 'programs', 'markers', 'batch_effects'
        layers: 'counts'
    >>> adata.uns["simulation"]["marker_genes"]["type_0"][:3]  # doctest: +SKIP
    array(['gene_12', 'gene_187', 'gene_40'], dtype=object)
    """
    params = _validate(
        n_cells=n_cells,
        n_genes=n_genes,
        n_cell_types=n_cell_types,
        n_batches=n_batches,
        n_conditions=n_conditions,
        n_programs=n_programs,
        program_model=program_model,
        markers_per_type=markers_per_type,
        marker_fold_change=marker_fold_change,
        program_fraction=program_fraction,
        mean_library_size=mean_library_size,
        library_size_sd=library_size_sd,
        gene_expression_sd=gene_expression_sd,
        dispersion=dispersion,
        batch_effect_sd=batch_effect_sd,
        activity_cv=activity_cv,
        response_fraction=response_fraction,
        response_sd=response_sd,
        response_type_sd=response_type_sd,
        seed=seed,
    )
    if not isinstance(copy_counts, bool):
        msg = f"copy_counts must be True or False, not {copy_counts!r}."
        raise TypeError(msg)
    n_threads = _resolve_threads(n_jobs)
    n_genes, n_cells, n_programs = params["n_genes"], params["n_cells"], params["n_programs"]
    truth = _draw_truth(params)

    block_cells = max(1, min(_MAX_BLOCK_CELLS, _BLOCK_ENTRIES // n_genes))
    starts = range(0, n_cells, block_cells)
    collector = _Collector(n_cells=n_cells, n_genes=n_genes, n_programs=n_programs)

    def run(block: int) -> _Block:
        return _simulate_block(params, truth, block=block, n_cells=min(block_cells, n_cells - starts[block]))

    if n_threads == 1 or len(starts) == 1:
        for block in range(len(starts)):
            collector.add(run(block))
    else:
        # A bounded window of blocks in flight, consumed in order: memory stays flat and the
        # result is the same as with one thread.
        with ThreadPoolExecutor(max_workers=n_threads) as pool:
            pending: deque[Future[_Block]] = deque()
            for block in range(len(starts)):
                pending.append(pool.submit(run, block))
                if len(pending) >= 2 * n_threads:
                    collector.add(pending.popleft().result())
            while pending:
                collector.add(pending.popleft().result())

    return _to_anndata(collector, params, truth, copy_counts=copy_counts)


def _validate(**params: Any) -> dict[str, Any]:
    """Check every argument up front, so that a bad one fails before any work."""

    def integer(name: str, minimum: int) -> int:
        value = params[name]
        if isinstance(value, bool) or not isinstance(value, Integral) or value < minimum:
            msg = f"{name} must be an integer >= {minimum}, not {value!r}."
            raise ValueError(msg)
        return int(value)

    def real(name: str, *, positive: bool) -> float:
        value = params[name]
        ok = isinstance(value, Real) and not isinstance(value, bool) and np.isfinite(value)
        if not ok or (value <= 0 if positive else value < 0):
            bound = "> 0" if positive else ">= 0"
            msg = f"{name} must be a finite number {bound}, not {value!r}."
            raise ValueError(msg)
        return float(value)

    out: dict[str, Any] = {
        "n_cells": integer("n_cells", 1),
        "n_genes": integer("n_genes", 1),
        "n_cell_types": integer("n_cell_types", 1),
        "n_batches": integer("n_batches", 1),
        "n_conditions": integer("n_conditions", 1),
        "n_programs": integer("n_programs", 1),
        "seed": integer("seed", 0),
    }
    if params["markers_per_type"] is None:
        params["markers_per_type"] = min(10, out["n_genes"] // (2 * out["n_cell_types"]))
    if params["mean_library_size"] is None:
        params["mean_library_size"] = float(out["n_genes"])
    out |= {
        "markers_per_type": integer("markers_per_type", 0),
        "marker_fold_change": real("marker_fold_change", positive=True),
        "program_fraction": real("program_fraction", positive=True),
        "mean_library_size": real("mean_library_size", positive=True),
        "library_size_sd": real("library_size_sd", positive=False),
        "gene_expression_sd": real("gene_expression_sd", positive=False),
        "dispersion": real("dispersion", positive=True),
        "batch_effect_sd": real("batch_effect_sd", positive=False),
        "activity_cv": real("activity_cv", positive=False),
        "response_fraction": real("response_fraction", positive=True),
        "response_sd": real("response_sd", positive=False),
        "response_type_sd": real("response_type_sd", positive=False),
    }
    if params["program_model"] not in PROGRAM_MODELS:
        msg = f"program_model must be one of {PROGRAM_MODELS}, not {params['program_model']!r}."
        raise ValueError(msg)
    out["program_model"] = params["program_model"]
    if out["n_programs"] > out["n_genes"]:
        msg = f"n_programs ({out['n_programs']}) must not exceed n_genes ({out['n_genes']})."
        raise ValueError(msg)
    n_markers = out["n_cell_types"] * out["markers_per_type"]
    if n_markers > out["n_genes"]:
        msg = (
            f"n_cell_types * markers_per_type ({out['n_cell_types']} * {out['markers_per_type']} = {n_markers}) "
            f"must not exceed n_genes ({out['n_genes']}): marker sets are disjoint. "
            "Lower markers_per_type or raise n_genes."
        )
        raise ValueError(msg)
    for name in ("program_fraction", "response_fraction"):
        if out[name] > 1:
            msg = f"{name} must be in (0, 1], not {out[name]!r}."
            raise ValueError(msg)
    if out["program_model"] == "log-linear" and _genes_per_program(out) * out["n_programs"] > out["n_genes"]:
        msg = (
            f"program_model='log-linear' puts each of the {out['n_programs']} programs on its own "
            f"{_genes_per_program(out)} genes, more than the {out['n_genes']} genes there are. "
            "Lower n_programs or program_fraction."
        )
        raise ValueError(msg)
    return out


def _genes_per_program(params: dict[str, Any]) -> int:
    return max(1, round(params["program_fraction"] * params["n_genes"]))


def _resolve_threads(n_jobs: int | None) -> int:
    if n_jobs is None:
        try:
            available = len(os.sched_getaffinity(0))
        except AttributeError:  # pragma: no cover - macOS and Windows
            available = os.cpu_count() or 1
        return max(1, min(_MAX_THREADS, available))
    if isinstance(n_jobs, bool) or not isinstance(n_jobs, Integral) or n_jobs < 1:
        msg = f"n_jobs must be a positive integer or None, not {n_jobs!r}."
        raise ValueError(msg)
    return int(n_jobs)


def _rng(seed: int, *key: int) -> np.random.Generator:
    """Independent random stream for one part of the simulation (``key`` names the part)."""
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=key))


def _draw_truth(params: dict[str, Any]) -> _Truth:
    rng = _rng(params["seed"], 0)
    n_genes, n_programs, n_types = params["n_genes"], params["n_programs"], params["n_cell_types"]

    base = rng.normal(0.0, params["gene_expression_sd"], size=n_genes)
    theta = params["dispersion"] * rng.lognormal(0.0, 0.5, size=n_genes)

    programs = np.zeros((n_genes, n_programs))
    genes_per_program = _genes_per_program(params)
    for k in range(n_programs):
        members = rng.choice(n_genes, size=genes_per_program, replace=False)
        # Loadings around 3: a fully active program lifts its genes several-fold, so types differ.
        programs[members, k] = rng.lognormal(np.log(3.0), 0.5, size=genes_per_program)
    # Exponential profiles: each type leans on a few programs and barely uses others.
    profiles = rng.exponential(1.0, size=(n_types, n_programs))

    markers = rng.permutation(n_genes)[: n_types * params["markers_per_type"]]
    marker_index = markers.reshape(n_types, params["markers_per_type"])

    if params["n_batches"] > 1:
        batch_effects = rng.lognormal(0.0, params["batch_effect_sd"], size=(params["n_batches"], n_genes))
    else:
        batch_effects = np.ones((1, n_genes))
    proportions = rng.dirichlet(np.full(n_types, 5.0))
    if params["program_model"] == "log-linear":
        # Drawn from their own stream, so that the rest of the truth is the same under both models.
        programs, profiles = _log_linear_programs(_rng(params["seed"], 2), params)
    log_change = _condition_response(_rng(params["seed"], 3), params)
    return _Truth(base, theta, programs, profiles, marker_index, batch_effects, proportions, log_change)


def _log_linear_programs(rng: np.random.Generator, params: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """Disjoint programs with loadings on the log rate, switched on in some cell types and off in others."""
    n_genes, n_programs, n_types = params["n_genes"], params["n_programs"], params["n_cell_types"]
    size = _genes_per_program(params)
    genes = rng.permutation(n_genes)[: n_programs * size].reshape(n_programs, size)
    programs = np.zeros((n_genes, n_programs))
    for k in range(n_programs):
        programs[genes[k], k] = rng.uniform(*_LOG_LINEAR_LOADINGS, size=size)
    on = rng.random((n_types, n_programs)) < 0.5
    for k in range(n_programs):
        # Every program is used by some type and, where there are two types or more, not by all.
        if not on[:, k].any():
            on[rng.integers(n_types), k] = True
        if n_types > 1 and on[:, k].all():
            on[rng.integers(n_types), k] = False
    profiles = on * rng.uniform(0.5, 1.0, size=(n_types, n_programs))
    return programs, profiles


def _condition_response(rng: np.random.Generator, params: dict[str, Any]) -> np.ndarray:
    """Log change of each gene's rate per condition and cell type: a shared and a type-specific part."""
    n_conditions, n_types, n_genes = params["n_conditions"], params["n_cell_types"], params["n_genes"]
    change = np.zeros((n_conditions, n_types, n_genes))
    size = max(1, round(params["response_fraction"] * n_genes))
    for k in range(1, n_conditions):
        genes = rng.choice(n_genes, size=size, replace=False)
        shared = rng.normal(0.0, params["response_sd"], size=size)
        specific = rng.normal(0.0, params["response_type_sd"], size=(n_types, size))
        change[k][:, genes] = shared + specific
    return change


def _simulate_block(params: dict[str, Any], truth: _Truth, *, block: int, n_cells: int) -> _Block:
    """Draw one block of cells: their truth, the dense expected counts, then sparse NB counts."""
    rng = _rng(params["seed"], 1, block)
    n_genes = params["n_genes"]

    cell_type = rng.choice(params["n_cell_types"], size=n_cells, p=truth.cell_type_proportions)
    batch = rng.integers(params["n_batches"], size=n_cells)
    sd = params["library_size_sd"]
    library = rng.lognormal(np.log(params["mean_library_size"]) - sd**2 / 2, sd, size=n_cells)
    activity = truth.program_profiles[cell_type]
    if params["activity_cv"] > 0:
        shape = 1.0 / params["activity_cv"] ** 2
        activity = activity * rng.gamma(shape, 1.0 / shape, size=activity.shape)
    log_linear = params["program_model"] == "log-linear"
    if log_linear:
        activity = np.minimum(activity, _LOG_LINEAR_MAX_ACTIVITY)
    # Conditions come from a stream of their own, so one condition leaves the other draws unchanged.
    condition = _rng(params["seed"], 4, block).integers(params["n_conditions"], size=n_cells)

    log_rate = activity @ truth.programs.T
    if not log_linear:
        np.log1p(log_rate, out=log_rate)
    log_rate += truth.base_log_expression
    if params["n_conditions"] > 1:
        log_rate += truth.condition_log_change[condition, cell_type]
    if params["markers_per_type"]:
        log_fold_change = np.log(params["marker_fold_change"])
        for t, genes in enumerate(truth.marker_index):
            log_rate[np.ix_(cell_type == t, genes)] += log_fold_change
    if params["n_batches"] > 1:
        log_rate += np.log(truth.batch_effects)[batch]
    log_rate -= log_rate.max(axis=1, keepdims=True)
    mean = np.exp(log_rate, out=log_rate)
    mean *= (library / mean.sum(axis=1))[:, None]

    counts = _negative_binomial(rng, mean, truth.dispersion)
    empty = np.flatnonzero(counts.sum(axis=1) == 0)
    for _ in range(_ZERO_CELL_RETRIES):
        if empty.size == 0:
            break
        counts[empty] = _negative_binomial(rng, mean[empty], truth.dispersion)
        empty = empty[counts[empty].sum(axis=1) == 0]
    counts[empty, mean[empty].argmax(axis=1)] = 1

    nonzero = np.flatnonzero(counts)
    return _Block(
        n_counts=counts.sum(axis=1).astype(np.float64),
        data=counts.ravel()[nonzero].astype(np.float32),
        indices=(nonzero % n_genes).astype(np.int32 if n_genes <= np.iinfo(np.int32).max else np.int64),
        row_nnz=np.count_nonzero(counts, axis=1),
        cell_type=cell_type,
        batch=batch,
        condition=condition,
        library_size=library,
        activity=activity.astype(np.float32),
    )


def _negative_binomial(rng: np.random.Generator, mean: np.ndarray, theta: np.ndarray) -> np.ndarray:
    """NB(mean, theta) counts as Poisson(mean * Gamma(theta, 1) / theta); ``theta`` is per column."""
    rate = rng.standard_gamma(np.broadcast_to(theta, mean.shape))
    rate *= mean
    rate /= theta
    return rng.poisson(rate)


class _Collector:
    """Appends blocks of cells, in order, to the arrays of one CSR matrix and the per-cell truth.

    The CSR arrays grow in place (``ndarray.resize`` reallocates, which for large arrays remaps pages
    rather than copying), so the peak stays close to the size of the final matrix.
    """

    def __init__(self, *, n_cells: int, n_genes: int, n_programs: int) -> None:
        self.n_cells, self.n_genes = n_cells, n_genes
        self.indptr = np.zeros(n_cells + 1, dtype=np.int64)
        self.data = np.empty(0, dtype=np.float32)
        self.indices = np.empty(0, dtype=np.int32 if n_genes <= np.iinfo(np.int32).max else np.int64)
        self.cell_type = np.empty(n_cells, dtype=np.int64)
        self.batch = np.empty(n_cells, dtype=np.int64)
        self.condition = np.empty(n_cells, dtype=np.int64)
        self.library_size = np.empty(n_cells)
        self.n_counts = np.empty(n_cells)
        self.activity = np.empty((n_cells, n_programs), dtype=np.float32)
        self.n_rows = 0
        self.nnz = 0

    def add(self, block: _Block) -> None:
        start, stop = self.n_rows, self.n_rows + block.cell_type.size
        end = self.nnz + block.data.size
        if end > self.data.size:
            # First block: reserve for the whole matrix at its density (+5%); later, grow by a quarter.
            if self.nnz == 0:
                capacity = int(1.05 * block.data.size * self.n_cells / block.cell_type.size) + 1
            else:
                capacity = int(1.25 * self.data.size)
            capacity = min(max(capacity, end), self.n_cells * self.n_genes)
            self.data.resize(capacity, refcheck=False)
            self.indices.resize(capacity, refcheck=False)
        self.data[self.nnz : end] = block.data
        self.indices[self.nnz : end] = block.indices
        np.cumsum(block.row_nnz, out=self.indptr[start + 1 : stop + 1])
        self.indptr[start + 1 : stop + 1] += self.nnz
        self.cell_type[start:stop] = block.cell_type
        self.batch[start:stop] = block.batch
        self.condition[start:stop] = block.condition
        self.library_size[start:stop] = block.library_size
        self.n_counts[start:stop] = block.n_counts
        self.activity[start:stop] = block.activity
        self.n_rows, self.nnz = stop, end

    def matrix(self) -> sp.csr_matrix:
        """The counts as CSR; the collector gives up its arrays to it."""
        self.data.resize(self.nnz, refcheck=False)
        self.indices.resize(self.nnz, refcheck=False)
        if self.nnz <= np.iinfo(np.int32).max and self.n_genes <= np.iinfo(np.int32).max:
            indptr, indices = self.indptr.astype(np.int32), self.indices
        else:  # pragma: no cover - beyond 2**31 stored counts (> 16 GB)
            indptr, indices = self.indptr, self.indices.astype(np.int64)
        counts = sp.csr_matrix((self.data, indices, indptr), shape=(self.n_cells, self.n_genes), copy=False)
        counts.has_sorted_indices = True
        self.data = self.indices = self.indptr = None  # type: ignore[assignment]
        return counts


def _to_anndata(collector: _Collector, params: dict[str, Any], truth: _Truth, *, copy_counts: bool) -> AnnData:
    n_cells, n_genes = collector.n_cells, collector.n_genes
    type_names = [f"type_{t}" for t in range(params["n_cell_types"])]
    batch_names = [f"batch_{b}" for b in range(params["n_batches"])]
    gene_names = pd.Index([f"gene_{g}" for g in range(n_genes)])

    obs = pd.DataFrame(
        {
            "cell_type": pd.Categorical.from_codes(collector.cell_type, categories=type_names),
            "batch": pd.Categorical.from_codes(collector.batch, categories=batch_names),
            "library_size": collector.library_size,
            "n_counts": collector.n_counts,
        },
        index=pd.Index([f"cell_{i}" for i in range(n_cells)]),
    )
    if params["n_conditions"] > 1:
        names = ["control"] + [f"condition_{k}" for k in range(1, params["n_conditions"])]
        obs.insert(2, "condition", pd.Categorical.from_codes(collector.condition, categories=names))
    var = pd.DataFrame(
        {"dispersion": truth.dispersion, "base_log_expression": truth.base_log_expression}, index=gene_names
    )
    markers = np.zeros((n_genes, params["n_cell_types"]), dtype=bool)
    for t, genes in enumerate(truth.marker_index):
        markers[genes, t] = True
    varm = {"programs": truth.programs, "markers": markers}
    if params["n_batches"] > 1:
        varm["batch_effects"] = truth.batch_effects.T.copy()

    simulation = {
        **params,
        "cell_type_proportions": truth.cell_type_proportions,
        "program_profiles": truth.program_profiles,
        # Object arrays of str, so that h5ad keeps them as strings even when empty.
        "marker_genes": {
            name: np.asarray(gene_names[genes], dtype=object)
            for name, genes in zip(type_names, truth.marker_index, strict=True)
        },
        "scdgm_version": package_version(),
    }
    if params["n_conditions"] > 1:
        simulation["condition_log_change"] = truth.condition_log_change
    counts = collector.matrix()
    adata = AnnData(
        X=counts,
        obs=obs,
        var=var,
        obsm={"program_activity": collector.activity},
        varm=varm,
        uns={"simulation": h5ad_safe(simulation)},
    )
    adata.layers["counts"] = counts.copy() if copy_counts else counts
    return adata


def expected_proportions(adata: AnnData) -> np.ndarray:
    """Per cell, the noise-free expected share of each gene in its counts (cells x genes), from the truth ``simulate`` stored.

    The rate model of :func:`simulate` rebuilt from ``.obsm["program_activity"]``, ``.varm`` and
    ``.uns["simulation"]`` (programs, markers, batches and conditions), normalised per cell; the
    benchmarks and tests score estimates of expression against it.
    """
    sim = adata.uns["simulation"]
    log_rate = np.asarray(adata.obsm["program_activity"], dtype=np.float64) @ np.asarray(adata.varm["programs"]).T
    if sim.get("program_model", "log1p") != "log-linear":
        log_rate = np.log1p(log_rate)
    log_rate += adata.var["base_log_expression"].to_numpy()
    types = adata.obs["cell_type"].cat.codes.to_numpy()
    if "condition" in adata.obs:
        log_rate += sim["condition_log_change"][adata.obs["condition"].cat.codes.to_numpy(), types]
    log_rate += np.log(sim["marker_fold_change"]) * np.asarray(adata.varm["markers"]).T[types]
    if "batch_effects" in adata.varm:
        log_rate += np.log(np.asarray(adata.varm["batch_effects"])).T[adata.obs["batch"].cat.codes.to_numpy()]
    log_rate -= log_rate.max(axis=1, keepdims=True)
    proportions = np.exp(log_rate)
    return proportions / proportions.sum(axis=1, keepdims=True)
