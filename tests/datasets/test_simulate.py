"""simulate: NB counts from known truth, reproducible, with the truth visible in the data."""

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

import scdgm as dgm
from scdgm.datasets import _simulate

N_CELLS, N_GENES, N_TYPES, N_BATCHES, N_PROGRAMS = 1200, 150, 4, 3, 5


@pytest.fixture(scope="module")
def sim():
    return dgm.datasets.simulate(
        N_CELLS, N_GENES, n_cell_types=N_TYPES, n_batches=N_BATCHES, n_programs=N_PROGRAMS, seed=3
    )


@pytest.fixture(scope="module")
def default():
    return dgm.datasets.simulate()


def _same(a, b):
    return (
        np.array_equal(a.X.data, b.X.data)
        and np.array_equal(a.X.indices, b.X.indices)
        and np.array_equal(a.X.indptr, b.X.indptr)
        and a.obs.equals(b.obs)
        and np.array_equal(a.obsm["program_activity"], b.obsm["program_activity"])
    )


def test_shape_names_and_format(sim):
    assert sim.shape == (N_CELLS, N_GENES)
    assert list(sim.obs_names[:2]) == ["cell_0", "cell_1"] and sim.obs_names[-1] == f"cell_{N_CELLS - 1}"
    assert list(sim.var_names[:2]) == ["gene_0", "gene_1"]
    X = sim.X
    assert isinstance(X, sp.csr_matrix) and X.dtype == np.float32
    assert X.has_canonical_format
    assert np.array_equal(X.data, np.rint(X.data)) and X.data.min() >= 1


def test_default_sparsity_and_library(default):
    assert default.shape == (2000, 500)
    zeros = 1 - default.X.nnz / np.prod(default.shape)
    assert 0.70 < zeros < 0.95
    totals = np.asarray(default.X.sum(axis=1)).ravel()
    assert totals.min() > 0
    assert totals.mean() == pytest.approx(default.uns["simulation"]["mean_library_size"], rel=0.1)
    assert default.uns["simulation"]["mean_library_size"] == 500.0  # one count per gene by default
    assert (np.asarray((default.X > 0).sum(axis=0)).ravel() > 0).all()  # no all-zero gene


def test_counts_layer(sim):
    counts = sim.layers["counts"]
    assert counts is not sim.X and not np.shares_memory(counts.data, sim.X.data)
    assert (counts != sim.X).nnz == 0
    shared = dgm.datasets.simulate(50, 20, copy_counts=False)
    assert shared.layers["counts"] is shared.X


def test_same_seed_same_data_different_seed_different_data():
    kwargs = {"n_cell_types": 3, "n_batches": 2, "n_programs": 4}
    first = dgm.datasets.simulate(300, 60, seed=7, **kwargs)
    again = dgm.datasets.simulate(300, 60, seed=7, **kwargs)
    other = dgm.datasets.simulate(300, 60, seed=8, **kwargs)
    assert _same(first, again)
    assert np.array_equal(first.varm["programs"], again.varm["programs"])
    assert not _same(first, other)
    assert (first.X != other.X).nnz > 0


def test_threads_and_blocks_do_not_change_the_result(monkeypatch):
    monkeypatch.setattr(_simulate, "_MAX_BLOCK_CELLS", 64)  # 7 blocks, the last one partial
    one = dgm.datasets.simulate(400, 60, n_batches=2, seed=1, n_jobs=1)
    two = dgm.datasets.simulate(400, 60, n_batches=2, seed=1, n_jobs=2)
    assert _same(one, two)
    assert np.array_equal(one.obs["n_counts"], np.asarray(one.X.sum(axis=1)).ravel())


def test_obs_truth(sim):
    assert list(sim.obs["cell_type"].cat.categories) == [f"type_{t}" for t in range(N_TYPES)]
    assert list(sim.obs["batch"].cat.categories) == [f"batch_{b}" for b in range(N_BATCHES)]
    assert sim.obs["cell_type"].value_counts().min() > 0 and sim.obs["batch"].value_counts().min() > 0
    totals = np.asarray(sim.X.sum(axis=1)).ravel()
    np.testing.assert_array_equal(sim.obs["n_counts"].to_numpy(), totals)
    library = sim.obs["library_size"].to_numpy()
    assert (library > 0).all()
    assert np.corrcoef(np.log(library), np.log(totals))[0, 1] > 0.6  # the truth drives the totals (NB noise)
    assert totals.mean() == pytest.approx(library.mean(), rel=0.1)


def test_gene_and_program_truth(sim):
    assert (sim.var["dispersion"] > 0).all() and sim.var["dispersion"].shape == (N_GENES,)
    assert sim.var["base_log_expression"].shape == (N_GENES,)
    programs = sim.varm["programs"]
    assert programs.shape == (N_GENES, N_PROGRAMS) and (programs >= 0).all()
    assert ((programs > 0).sum(axis=0) == round(0.08 * N_GENES)).all()
    activity = sim.obsm["program_activity"]
    assert activity.shape == (N_CELLS, N_PROGRAMS) and (activity >= 0).all()
    profiles = sim.uns["simulation"]["program_profiles"]
    assert profiles.shape == (N_TYPES, N_PROGRAMS)
    for t, name in enumerate(sim.obs["cell_type"].cat.categories):
        mean_activity = activity[(sim.obs["cell_type"] == name).to_numpy()].mean(axis=0)
        np.testing.assert_allclose(mean_activity, profiles[t], rtol=0.25)


def test_markers_are_up_in_their_type(sim):
    markers = sim.varm["markers"]
    assert markers.dtype == bool and markers.shape == (N_GENES, N_TYPES)
    assert (markers.sum(axis=0) == 10).all() and markers.sum(axis=1).max() == 1  # disjoint sets
    marker_genes = sim.uns["simulation"]["marker_genes"]
    types = list(sim.obs["cell_type"].cat.categories)
    assert list(marker_genes) == types
    X = sp.csr_matrix(sim.X.multiply(1e4 / np.asarray(sim.X.sum(axis=1)))).toarray()
    cell_type = sim.obs["cell_type"].to_numpy()
    for t, name in enumerate(types):
        genes = sim.var_names[markers[:, t]]
        assert sorted(marker_genes[name]) == sorted(genes)
        columns = markers[:, t]
        inside = X[cell_type == name][:, columns].mean()
        for other in types:
            if other != name:
                assert inside > 2 * X[cell_type == other][:, columns].mean(), (name, other)


def test_batch_effects_are_in_the_data(sim):
    effects = sim.varm["batch_effects"]
    assert effects.shape == (N_GENES, N_BATCHES) and (effects > 0).all()
    X = sp.csr_matrix(sim.X.multiply(1e4 / np.asarray(sim.X.sum(axis=1)))).toarray()
    batch = sim.obs["batch"].to_numpy()
    observed = np.log(X[batch == "batch_1"].mean(axis=0) + 1) - np.log(X[batch == "batch_0"].mean(axis=0) + 1)
    truth = np.log(effects[:, 1] / effects[:, 0])
    assert np.corrcoef(observed, truth)[0, 1] > 0.5


def test_few_genes_get_fewer_markers():
    adata = dgm.datasets.simulate(50, 40, n_cell_types=5)
    assert adata.uns["simulation"]["markers_per_type"] == 4  # at most half of the genes
    assert adata.varm["markers"].sum() == 20


def test_one_batch_has_no_batch_effects():
    adata = dgm.datasets.simulate(100, 40, n_batches=1)
    assert "batch_effects" not in adata.varm
    assert list(adata.obs["batch"].cat.categories) == ["batch_0"]


def test_no_empty_cells_even_with_tiny_libraries():
    adata = dgm.datasets.simulate(200, 50, mean_library_size=0.5)
    assert adata.obs["n_counts"].min() >= 1
    assert np.asarray(adata.X.sum(axis=1)).min() >= 1


def test_uns_records_every_parameter(sim):
    simulation = sim.uns["simulation"]
    expected = {
        "n_cells": N_CELLS,
        "n_genes": N_GENES,
        "n_cell_types": N_TYPES,
        "n_batches": N_BATCHES,
        "n_programs": N_PROGRAMS,
        "seed": 3,
        "markers_per_type": 10,
    }
    assert {k: simulation[k] for k in expected} == expected
    for key in ("marker_fold_change", "program_fraction", "mean_library_size", "library_size_sd"):
        assert key in simulation
    assert "n_jobs" not in simulation and "copy_counts" not in simulation
    assert simulation["cell_type_proportions"].sum() == pytest.approx(1.0)
    assert "scdgm_version" in simulation


def test_h5ad_round_trip(tmp_path):
    adata = dgm.datasets.simulate(200, 40, n_cell_types=3, n_batches=2, n_programs=3, seed=5)
    adata.write_h5ad(tmp_path / "sim.h5ad")
    back = ad.read_h5ad(tmp_path / "sim.h5ad")
    assert _same(adata, back)
    original, read = adata.uns["simulation"], back.uns["simulation"]
    assert set(read) == set(original)
    assert read["seed"] == 5 and read["n_batches"] == 2
    for name, genes in original["marker_genes"].items():
        assert list(read["marker_genes"][name]) == list(genes)
    np.testing.assert_array_equal(read["program_profiles"], original["program_profiles"])
    for key in ("programs", "markers", "batch_effects"):
        np.testing.assert_array_equal(back.varm[key], adata.varm[key])
    assert (back.layers["counts"] != adata.X).nnz == 0


def test_no_markers_round_trips(tmp_path):
    adata = dgm.datasets.simulate(60, 20, markers_per_type=0)
    assert not adata.varm["markers"].any()
    adata.write_h5ad(tmp_path / "sim.h5ad")
    assert len(ad.read_h5ad(tmp_path / "sim.h5ad").uns["simulation"]["marker_genes"]["type_0"]) == 0


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"n_cells": 0}, r"n_cells must be an integer >= 1, not 0"),
        ({"n_genes": 2.5}, r"n_genes must be an integer >= 1"),
        ({"n_cell_types": True}, r"n_cell_types must be an integer >= 1, not True"),
        ({"n_batches": -1}, r"n_batches must be an integer >= 1"),
        ({"seed": -3}, r"seed must be an integer >= 0"),
        ({"n_genes": 20, "n_programs": 21, "markers_per_type": 1}, r"n_programs \(21\) must not exceed n_genes \(20\)"),
        (
            {"n_genes": 40, "n_cell_types": 5, "markers_per_type": 10},
            r"n_cell_types \* markers_per_type \(5 \* 10 = 50\) must not exceed n_genes \(40\)",
        ),
        ({"markers_per_type": -1}, r"markers_per_type must be an integer >= 0"),
        ({"marker_fold_change": 0}, r"marker_fold_change must be a finite number > 0"),
        ({"mean_library_size": float("nan")}, r"mean_library_size must be a finite number > 0"),
        ({"library_size_sd": -0.1}, r"library_size_sd must be a finite number >= 0"),
        ({"program_fraction": 1.5}, r"program_fraction must be in \(0, 1\]"),
        ({"dispersion": "high"}, r"dispersion must be a finite number > 0"),
        ({"n_jobs": 0}, r"n_jobs must be a positive integer or None"),
        ({"program_model": "linear"}, r"program_model must be one of \('log1p', 'log-linear'\), not 'linear'"),
        (
            {"program_model": "log-linear", "n_programs": 8, "program_fraction": 0.2},
            r"puts each of the 8 programs on its own 20 genes, more than the 100 genes",
        ),
        ({"n_conditions": 0}, r"n_conditions must be an integer >= 1, not 0"),
        ({"response_fraction": 0}, r"response_fraction must be a finite number > 0"),
        ({"response_fraction": 2.0}, r"response_fraction must be in \(0, 1\]"),
        ({"response_sd": -1}, r"response_sd must be a finite number >= 0"),
    ],
)
def test_bad_arguments(kwargs, match):
    arguments = {"n_cells": 10, "n_genes": 100, **kwargs}
    with pytest.raises(ValueError, match=match):
        dgm.datasets.simulate(**arguments)


def test_the_shared_test_fixture_configuration():
    """tests/conftest.py builds its data with these arguments; every type and batch must be present."""
    adata = dgm.datasets.simulate(300, 60, n_cell_types=3, n_batches=2, n_programs=4, seed=0)
    assert adata.shape == (300, 60)
    assert isinstance(adata.obs["cell_type"].dtype, pd.CategoricalDtype)
    assert adata.obs["cell_type"].value_counts().min() >= 20
    assert adata.obs["batch"].value_counts().min() >= 100


def test_log_linear_programs_are_disjoint_bounded_and_linear_in_the_log_rate():
    kwargs = {"n_cell_types": 4, "n_programs": 5, "program_fraction": 0.1, "markers_per_type": 0, "seed": 2}
    adata = dgm.datasets.simulate(3000, 200, program_model="log-linear", **kwargs)
    programs, activity = adata.varm["programs"], adata.obsm["program_activity"]
    assert ((programs > 0).sum(axis=1) <= 1).all()  # disjoint
    assert ((programs > 0).sum(axis=0) == 20).all()
    loadings = programs[programs > 0]
    assert loadings.min() >= 1.0 and loadings.max() <= 2.5
    assert activity.min() >= 0 and activity.max() <= 1.5
    profiles = adata.uns["simulation"]["program_profiles"]
    used = profiles > 0
    assert used.any(axis=0).all() and not used.all(axis=0).any()  # each program on in some types, off in others
    # Linear on the log scale: a program's genes rise by exp(loading * activity) over cells with it off.
    normalised = np.asarray(adata.X.toarray() / adata.obs["n_counts"].to_numpy()[:, None])
    k = 0
    on, off = activity[:, k] > 0, activity[:, k] == 0
    genes = np.flatnonzero(programs[:, k])
    observed = np.log(normalised[on][:, genes].mean(0) / normalised[off][:, genes].mean(0))
    predicted = np.log(np.exp(np.outer(activity[on, k], programs[genes, k])).mean(0))
    assert np.corrcoef(observed, predicted)[0, 1] > 0.8
    # The other parts of the truth are the same under both program models.
    log1p = dgm.datasets.simulate(3000, 200, **kwargs)
    np.testing.assert_array_equal(log1p.var["base_log_expression"], adata.var["base_log_expression"])
    np.testing.assert_array_equal(log1p.obs["cell_type"], adata.obs["cell_type"])


def test_conditions_carry_a_cell_type_dependent_response(tmp_path):
    adata = dgm.datasets.simulate(4000, 120, n_cell_types=2, n_conditions=2, markers_per_type=0, seed=1)
    assert list(adata.obs["condition"].cat.categories) == ["control", "condition_1"]
    assert adata.obs["condition"].value_counts().min() > 1800
    change = adata.uns["simulation"]["condition_log_change"]
    assert change.shape == (2, 2, 120)
    assert not change[0].any()
    responding = np.flatnonzero(change[1].any(axis=0))
    assert responding.size == 12
    assert not np.allclose(change[1, 0, responding], change[1, 1, responding])
    normalised = adata.X.toarray() / adata.obs["n_counts"].to_numpy()[:, None]
    control = (adata.obs["condition"] == "control").to_numpy()
    for t in range(2):
        cells = (adata.obs["cell_type"] == f"type_{t}").to_numpy()
        observed = np.log(
            normalised[cells & ~control][:, responding].mean(0) / normalised[cells & control][:, responding].mean(0)
        )
        assert np.corrcoef(observed, change[1, t, responding])[0, 1] > 0.9
    adata.write_h5ad(tmp_path / "sim.h5ad")
    back = ad.read_h5ad(tmp_path / "sim.h5ad")
    np.testing.assert_array_equal(back.uns["simulation"]["condition_log_change"], change)
    assert back.obs["condition"].equals(adata.obs["condition"])


def test_one_condition_leaves_the_data_as_before():
    adata = dgm.datasets.simulate(200, 40, seed=4)
    assert "condition" not in adata.obs and "condition_log_change" not in adata.uns["simulation"]
    assert adata.uns["simulation"]["program_model"] == "log1p"


def test_expected_proportions_rebuild_the_rate_model():
    from scdgm.datasets._simulate import expected_proportions

    adata = dgm.datasets.simulate(3000, 80, n_cell_types=3, n_batches=2, n_conditions=2, seed=6)
    proportions = expected_proportions(adata)
    assert proportions.shape == adata.shape
    np.testing.assert_allclose(proportions.sum(axis=1), 1.0)
    # the observed shares of each type's pooled counts follow the expected ones
    counts = adata.X.toarray()
    for t in adata.obs["cell_type"].cat.categories:
        cells = (adata.obs["cell_type"] == t).to_numpy()
        observed = counts[cells].sum(0) / counts[cells].sum()
        expected = (proportions[cells] * adata.obs["n_counts"].to_numpy()[cells, None]).sum(0) / counts[cells].sum()
        assert np.corrcoef(np.log(observed + 1e-6), np.log(expected + 1e-6))[0, 1] > 0.95
