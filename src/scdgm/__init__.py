"""scdgm: deep generative and Bayesian models for single-cell data, in the scanpy ecosystem.

``import scdgm as dgm`` is light: torch, pyro, lightning and scvi-tools are imported only by the
functions that need them.
"""

from . import datasets, get, pl, pp, tl
from ._models import get_model
from ._results import package_version
from ._settings import settings

__version__ = package_version()

__all__ = ["datasets", "get", "get_model", "pl", "pp", "settings", "tl"]
