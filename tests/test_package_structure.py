"""The conventions of DESIGN.md, checked on every public function of pp, tl and pl."""

import inspect
import subprocess
import sys

import pytest

import scdgm as dgm

# Tools that return something new (an AnnData of synthetic cells, a table) instead of writing into adata
# take no copy=.
RETURN_NEW = {"generate", "synthetic_quality", "predict_perturbation", "decode"}
NAMESPACES = {"pp": dgm.pp, "tl": dgm.tl, "pl": dgm.pl, "get": dgm.get}
PUBLIC = [(ns, name, getattr(module, name)) for ns, module in NAMESPACES.items() for name in module.__all__]


def test_namespaces_are_not_empty():
    assert {ns for ns, _, _ in PUBLIC} == set(NAMESPACES)


@pytest.mark.parametrize(("ns", "name", "func"), PUBLIC, ids=[f"{ns}.{name}" for ns, name, _ in PUBLIC])
def test_signature_conventions(ns, name, func):
    params = list(inspect.signature(func).parameters.values())
    assert params[0].name == "adata", f"{ns}.{name}: first parameter must be adata"
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    assert len(positional) <= 3, f"{ns}.{name}: at most 3 positional parameters"
    after_positional = params[len(positional) :]
    assert all(p.kind in (p.KEYWORD_ONLY, p.VAR_KEYWORD) for p in after_positional)
    names = {p.name for p in params}
    if ns in {"tl", "pp"} and name not in RETURN_NEW:
        assert "copy" in names, f"{ns}.{name} needs copy="
        assert inspect.signature(func).parameters["copy"].default is False
    if ns in {"tl", "pp"}:
        assert "key_added" in names, f"{ns}.{name} needs key_added="
    if ns == "pl":
        assert {"ax", "show", "return_fig"} <= names, f"pl.{name} needs ax=, show=, return_fig="
    stochastic = {"seed"} & names
    if ns == "tl":
        assert stochastic or name in {"embed"}, f"tl.{name} should take seed="
        # None resolves from dgm.settings, so that settings.seed / settings.device take effect
        for setting in {"seed", "device"} & names:
            assert inspect.signature(func).parameters[setting].default is None, f"tl.{name}: {setting}=None"


@pytest.mark.parametrize(("ns", "name", "func"), PUBLIC, ids=[f"{ns}.{name}" for ns, name, _ in PUBLIC])
def test_numpydoc_sections(ns, name, func):
    doc = inspect.getdoc(func) or ""
    for section in ("Parameters\n----------", "Returns\n-------", "Examples\n--------"):
        assert section in doc, f"{ns}.{name} lacks a {section.splitlines()[0]} section"
    params = [p for p in inspect.signature(func).parameters if p not in {"kwargs"}]
    documented = doc.split("Parameters\n----------")[1].split("Returns\n-------")[0]
    for param in params:
        assert param in documented, f"{ns}.{name}: parameter {param!r} is not documented"
    if ns == "tl":
        returns = doc.split("Returns\n-------")[1]
        assert "``." in returns, f"tl.{name}: Returns must list the fields written"


def test_datasets_are_documented():
    for name in dgm.datasets.__all__:
        doc = inspect.getdoc(getattr(dgm.datasets, name)) or ""
        assert "Returns\n-------" in doc


def test_import_is_light():
    code = (
        "import sys, time; t = time.perf_counter(); import scdgm; dt = time.perf_counter() - t; "
        "heavy = [m for m in ('torch', 'pyro', 'lightning', 'scvi', 'scanpy') if m in sys.modules]; "
        "print(dt); print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split("\n")
    assert out[1] == "", f"import scdgm imported {out[1]}"
    assert float(out[0]) < 5.0
