"""Plots in scanpy's style."""

from ._attributions import attributions
from ._history import history
from ._latent import latent
from ._loadings import loadings
from ._patterns import patterns
from ._perturbation import perturbation
from ._synthetic import synthetic
from ._uncertainty import uncertainty

__all__ = ["attributions", "history", "latent", "loadings", "patterns", "perturbation", "synthetic", "uncertainty"]
