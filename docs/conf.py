"""Sphinx configuration of the scdgm documentation."""

import shutil
from importlib.metadata import version as _package_version
from pathlib import Path

HERE = Path(__file__).parent

project = "scdgm"
author = "scdgm developers"
copyright = "2026, scdgm developers"
release = _package_version("scdgm")
version = release

extensions = [
    "myst_nb",
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",
    "sphinx.ext.intersphinx",
    "sphinx_autodoc_typehints",
]
autosummary_generate = True
autodoc_member_order = "bysource"
napoleon_google_docstring = False
napoleon_numpy_docstring = True
napoleon_use_rtype = True
typehints_defaults = None
always_document_param_types = False
myst_enable_extensions = ["colon_fence", "dollarmath"]
nb_execution_mode = "auto"
nb_execution_timeout = 600
nb_execution_raise_on_error = True
source_suffix = {".md": "myst-nb", ".ipynb": "myst-nb"}
exclude_patterns = ["_build", "**.ipynb_checkpoints"]
templates_path = []
html_theme = "pydata_sphinx_theme"
html_title = "scdgm"
intersphinx_mapping = {}
nitpicky = False
suppress_warnings = ["mystnb.unknown_mime_type"]

# Tutorials live in the repository's top-level tutorials/ folder (their home for readers of the repo);
# Sphinx only reads below docs/, so they are copied in at build time.
_tutorials = HERE / "generated" / "tutorials"
_tutorials.mkdir(parents=True, exist_ok=True)
for source in sorted((HERE.parent / "tutorials").glob("*.md")):
    if source.name != "README.md":
        shutil.copy2(source, _tutorials / source.name)
