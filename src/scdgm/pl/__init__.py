"""Plots in scanpy's style."""

from ._history import history
from ._latent import latent
from ._loadings import loadings

__all__ = ["history", "latent", "loadings"]
