"""Tidy pandas tables of the results that ``dgm.tl`` stores in an AnnData, like ``sc.get``."""

from ._attributions import attributions
from ._calibration import calibration
from ._differential_expression import differential_expression
from ._genes import loadings, top_genes
from ._patterns import patterns
from ._perturbation import perturbation
from ._synthetic import synthetic_quality
from ._training import history, metrics

__all__ = [
    "attributions",
    "calibration",
    "differential_expression",
    "history",
    "loadings",
    "metrics",
    "patterns",
    "perturbation",
    "synthetic_quality",
    "top_genes",
]
