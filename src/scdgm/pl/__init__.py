"""Plots in scanpy's style."""

from ._history import history
from ._latent import latent

__all__ = ["history", "latent"]
