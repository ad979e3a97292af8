"""Models and their results, written into AnnData."""

from ._bayes import bayes_classify, bayes_predict
from ._denoise import denoise
from ._embed import embed
from ._integrated_gradients import integrated_gradients
from ._ldvae import ldvae_loadings
from ._vae import vae

__all__ = ["bayes_classify", "bayes_predict", "denoise", "embed", "integrated_gradients", "ldvae_loadings", "vae"]
