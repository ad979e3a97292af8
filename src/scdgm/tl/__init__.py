"""Models and their results, written into AnnData."""

from ._denoise import denoise
from ._embed import embed
from ._ldvae import ldvae_loadings
from ._vae import vae

__all__ = ["denoise", "embed", "ldvae_loadings", "vae"]
