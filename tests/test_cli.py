"""The ``scdgm`` command line: options generated from the tools, checked paths, one-line errors."""

import functools
import inspect
import subprocess
import sys

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

import scdgm as dgm
from scdgm.cli import build_parser, main, parameter_docs

VAE_ARGS = ["--n-latent", "3", "--max-epochs", "2", "--batch-size", "32", "--device", "cpu"]


@pytest.fixture
def source(tmp_path):
    path = tmp_path / "in.h5ad"
    dgm.datasets.simulate(120, 30, n_cell_types=3, seed=0).write_h5ad(path)
    return path


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """An h5ad written by ``scdgm vae`` (trained once for the module)."""
    folder = tmp_path_factory.mktemp("cli")
    dgm.datasets.simulate(120, 30, n_cell_types=3, seed=0).write_h5ad(folder / "in.h5ad")
    out = folder / "vae.h5ad"
    assert main(["vae", str(folder / "in.h5ad"), str(out), *VAE_ARGS, "--no-early-stopping"]) == 0
    return out


def _spy(monkeypatch, name, result=None, namespace=dgm.tl):
    """Replace ``namespace.name`` by a recorder with the same signature and docstring."""
    calls = []
    original = getattr(namespace, name)

    @functools.wraps(original)
    def fake(adata, *args, **kwargs):
        calls.append({"adata": adata, "args": args, "kwargs": kwargs, "progress_bar": dgm.settings.progress_bar})
        return result(adata) if callable(result) else result

    monkeypatch.setattr(namespace, name, fake)
    return calls


def _error_line(capsys):
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


def test_vae_writes_latent_and_params(trained):
    adata = ad.read_h5ad(trained)
    assert adata.obsm["X_vae"].shape == (120, 3)
    params = adata.uns["vae"]["params"]
    assert params["n_latent"] == 3
    assert params["batch_size"] == 32


def test_bool_flag_reaches_params(trained):
    assert inspect.signature(dgm.tl.vae).parameters["early_stopping"].default is True
    assert not ad.read_h5ad(trained).uns["vae"]["params"]["early_stopping"]


def test_literal_option_rejects_bad_choice(source, tmp_path, capsys):
    out = tmp_path / "out.h5ad"
    assert main(["vae", str(source), str(out), "--likelihood", "gamma"]) == 2
    err = capsys.readouterr().err
    assert "argument --likelihood: invalid value 'gamma'" in err
    assert "'zinb'" in err
    assert not out.exists()


def test_tool_help_shows_docstring_and_default(capsys):
    doc = inspect.getdoc(dgm.tl.vae).splitlines()
    first_words = " ".join(doc[doc.index("n_latent, n_hidden, n_layers") + 1].split()[:4])
    default = inspect.signature(dgm.tl.vae).parameters["n_latent"].default
    assert main(["vae", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    entry = f"--n-latent N_LATENT {first_words}"
    assert entry in text
    assert f"(default: {default})" in text.split(entry)[1].split("--n-hidden")[0]
    assert "--early-stopping, --no-early-stopping" in text


def test_missing_input(tmp_path, capsys):
    out = tmp_path / "out.h5ad"
    assert main(["vae", str(tmp_path / "missing.h5ad"), str(out)]) == 2
    line = _error_line(capsys)
    assert line.startswith("scdgm vae: error:")
    assert "missing.h5ad" in line
    assert not out.exists()


def test_missing_output_directory_fails_before_the_tool(source, tmp_path, monkeypatch, capsys):
    calls = _spy(monkeypatch, "vae")
    assert main(["vae", str(source), str(tmp_path / "nope" / "out.h5ad")]) == 2
    assert calls == []
    assert "nope" in _error_line(capsys)


def test_existing_output_needs_force(source, tmp_path, capsys):
    out = tmp_path / "out.h5ad"
    out.write_bytes(b"old")
    assert main(["binarize", str(source), str(out)]) == 2
    assert "--force" in _error_line(capsys)
    assert out.read_bytes() == b"old"
    assert main(["binarize", str(source), str(out), "--force", "--key-added", "detected"]) == 0
    detected = ad.read_h5ad(out).layers["detected"]
    assert set(np.unique(detected.toarray() if sp.issparse(detected) else detected)) == {0, 1}


def test_user_error_in_tool_is_one_line(source, tmp_path, capsys):
    out = tmp_path / "out.h5ad"
    assert main(["vae", str(source), str(out), "--layer", "nope", *VAE_ARGS]) == 2
    line = _error_line(capsys)
    assert line.startswith("scdgm vae: error:")
    assert "nope" in line
    assert line[-1] not in "'\"", line  # a KeyError's message, not its repr in quotes
    assert not out.exists()
    with pytest.raises(KeyError):
        main(["vae", str(source), str(out), "--layer", "nope", "--debug", *VAE_ARGS])


def test_non_h5ad_input(tmp_path, capsys):
    source = tmp_path / "in.csv"
    source.write_text("a,b\n1,2\n")
    assert main(["vae", str(source), str(tmp_path / "out.h5ad")]) == 2
    assert ".h5ad" in _error_line(capsys)


def test_h5ad_that_is_not_hdf5(tmp_path, capsys):
    source = tmp_path / "in.h5ad"
    source.write_text("not hdf5")
    assert main(["binarize", str(source), str(tmp_path / "out.h5ad")]) == 2
    assert "HDF5" in _error_line(capsys)


def test_denoise_after_vae(trained, tmp_path):
    out = tmp_path / "denoised.h5ad"
    assert main(["denoise", str(trained), str(out), "--library-size", "none", "--device", "cpu"]) == 0
    adata = ad.read_h5ad(out)
    denoised = np.asarray(adata.layers["vae_denoised"])
    observed = np.asarray(adata.X.sum(1)).ravel()
    assert denoised.shape == (120, 30)
    np.testing.assert_allclose(denoised.sum(1), observed, rtol=1e-3)  # "none" kept each cell's library


def test_embed_with_reference(trained, source, tmp_path, capsys):
    out = tmp_path / "query.h5ad"
    assert main(["embed", str(source), str(out), "--reference", str(trained), "--device", "cpu"]) == 0
    query = ad.read_h5ad(out)
    np.testing.assert_allclose(query.obsm["X_vae"], ad.read_h5ad(trained).obsm["X_vae"], atol=1e-5)
    assert main(["embed", str(source), str(out), "--force", "--reference", str(tmp_path / "ref.h5ad")]) == 2
    assert "--reference" in _error_line(capsys)


def test_every_tool_is_a_command(capsys):
    for namespace in (dgm.tl, dgm.pp):
        for name in namespace.__all__:
            assert main([name, "--help"]) == 0, name
            assert f"usage: scdgm {name} " in capsys.readouterr().out


def test_progress_bar_follows_stderr(source, tmp_path, monkeypatch):
    calls = _spy(monkeypatch, "vae")
    monkeypatch.setattr(dgm.settings, "progress_bar", True)
    assert main(["vae", str(source), str(tmp_path / "a.h5ad")]) == 0
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    assert main(["vae", str(source), str(tmp_path / "b.h5ad")]) == 0
    assert [call["progress_bar"] for call in calls] == [False, True]


def test_positional_parameter_and_none_word():
    args = build_parser().parse_args(["bayes_classify", "in.h5ad", "out.h5ad", "cell_type", "--use-rep", "none"])
    assert args.labels_key == "cell_type"
    assert args.use_rep is None


def test_union_and_sequence_options(source, tmp_path, monkeypatch, capsys):
    calls = _spy(monkeypatch, "integrated_gradients")
    out = str(tmp_path / "out.h5ad")
    argv = ["integrated_gradients", str(source), out, "--force", "--baseline", "mean", "--target"]
    assert main([*argv, "0", "latent_1"]) == 0
    assert main([*argv, "2"]) == 0
    assert [call["kwargs"]["target"] for call in calls] == [[0, "latent_1"], 2]
    assert calls[0]["kwargs"]["baseline"] == "mean"
    assert "scvi_model" not in calls[0]["kwargs"]
    assert main(["integrated_gradients", str(source), out, "--force", "--baseline", "median"]) == 2
    assert "invalid value 'median'" in capsys.readouterr().err


def test_var_keyword_as_json(monkeypatch, source, tmp_path, capsys):
    calls = _spy(monkeypatch, "ldvae_loadings")
    argv = ["ldvae_loadings", str(source), str(tmp_path / "out.h5ad"), "--force", "--vae-kwargs"]
    assert main([*argv, '{"n_latent": 4}']) == 0
    assert calls[0]["kwargs"]["n_latent"] == 4
    assert main([*argv, "[1]"]) == 2
    assert "JSON object" in capsys.readouterr().err


def test_returned_anndata_is_written(source, tmp_path, monkeypatch):
    _spy(monkeypatch, "vae", result=lambda adata: adata[:7, :5].copy())
    out = tmp_path / "out.h5ad"
    assert main(["vae", str(source), str(out)]) == 0
    assert ad.read_h5ad(out).shape == (7, 5)


def test_returned_table_is_printed_and_input_written(source, tmp_path, monkeypatch, capsys):
    def record(adata):
        adata.uns["quality"] = {"score": 0.5}
        return pd.DataFrame({"score": [0.5]}, index=["energy_distance"])

    _spy(monkeypatch, "vae", result=record)
    out = tmp_path / "out.h5ad"
    assert main(["vae", str(source), str(out)]) == 0
    assert "energy_distance" in capsys.readouterr().out
    written = ad.read_h5ad(out)
    assert written.shape == (120, 30)
    assert written.uns["quality"]["score"] == 0.5


def test_failed_write_leaves_old_output(source, tmp_path, monkeypatch, capsys):
    out = tmp_path / "out.h5ad"
    out.write_bytes(b"old")

    def broken(self, path, **kwargs):
        path.write_bytes(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(ad.AnnData, "write_h5ad", broken)
    assert main(["binarize", str(source), str(out), "--force"]) == 2
    assert "disk full" in _error_line(capsys)
    assert out.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.h5ad", "out.h5ad"]


@pytest.mark.filterwarnings("ignore:Writing zarr v2")
def test_zarr_in_and_out(source, tmp_path):
    store = tmp_path / "in.zarr"
    ad.read_h5ad(source).write_zarr(store)
    out = tmp_path / "out.zarr"
    assert main(["binarize", str(store), str(out)]) == 0
    assert main(["binarize", str(store), str(out), "--force", "--key-added", "again"]) == 0
    written = ad.read_zarr(out)
    assert "again" in written.layers
    assert "binary" not in written.layers


def test_parameter_docs_reads_grouped_names():
    docs = parameter_docs(dgm.tl.vae)
    assert docs["n_latent"] == docs["n_layers"]
    assert "adata" in docs
    assert "\n" not in docs["kind"]
    assert "``" not in docs["kind"]


def test_version_from_python_m():
    for module in ("scdgm", "scdgm.cli"):
        result = subprocess.run(
            [sys.executable, "-m", module, "--version"], capture_output=True, text=True, check=False, timeout=120
        )
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip() == f"scdgm {dgm.__version__}"


def test_generate_then_judge_the_synthetic_cells(trained, source, tmp_path, capsys):
    synthetic = tmp_path / "synthetic.h5ad"
    assert (
        main(["generate", str(trained), str(synthetic), "--n-cells", "40", "--groupby", "cell_type", "--seed", "1"])
        == 0
    )
    cells = ad.read_h5ad(synthetic)
    assert cells.n_obs == 40 and list(cells.var_names) == list(ad.read_h5ad(trained).var_names)
    assert cells.uns["synthetic"]["model_key"] == "vae" and "cell_type" in cells.obs
    judged = tmp_path / "judged.h5ad"
    capsys.readouterr()
    args = ["synthetic_quality", str(synthetic), str(judged), "--reference", str(source), "--n-permutations", "20"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "classifier_auroc" in printed and "control" in printed
    table = dgm.get.synthetic_quality(ad.read_h5ad(judged))
    assert set(table["comparison"]) == {"synthetic", "control"}


def test_predict_perturbation_differential_expression_and_decode(tmp_path):
    source = tmp_path / "conditions.h5ad"
    data = dgm.datasets.simulate(150, 30, n_cell_types=3, n_conditions=2, seed=0)
    held = ((data.obs["cell_type"] == "type_0") & (data.obs["condition"] == "condition_1")).to_numpy()
    data[~held].copy().write_h5ad(source)
    trained = tmp_path / "vae.h5ad"
    assert main(["vae", str(source), str(trained), *VAE_ARGS, "--no-early-stopping"]) == 0
    predicted = tmp_path / "predicted.h5ad"
    args = ["--condition-key", "condition", "--control", "control", "--perturbed", "condition_1"]
    args += ["--groupby", "cell_type", "--group", "type_0", "--seed", "1"]
    assert main(["predict_perturbation", str(trained), str(predicted), *args]) == 0
    cells = ad.read_h5ad(predicted)
    assert set(cells.obs["cell_type"]) == {"type_0"} and list(dgm.get.perturbation(cells)["group"])[-1] == "delta"
    tested = tmp_path / "de.h5ad"
    args = ["--groupby", "cell_type", "--groups", "type_1", "--n-samples", "5"]
    assert main(["differential_expression", str(trained), str(tested), *args]) == 0
    table = dgm.get.differential_expression(ad.read_h5ad(tested), "type_1")
    assert len(table) == 30
    decoded = tmp_path / "decoded.h5ad"
    assert main(["decode", str(trained), str(decoded), "X_vae", "--no-sample"]) == 0
    assert ad.read_h5ad(decoded).n_obs == ad.read_h5ad(trained).n_obs
