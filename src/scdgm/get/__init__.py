"""Tidy pandas tables of the results that ``dgm.tl`` stores in an AnnData, like ``sc.get``."""

from ._attributions import attributions
from ._calibration import calibration
from ._genes import loadings, top_genes
from ._synthetic import synthetic_quality
from ._training import history, metrics

__all__ = ["attributions", "calibration", "history", "loadings", "metrics", "synthetic_quality", "top_genes"]
