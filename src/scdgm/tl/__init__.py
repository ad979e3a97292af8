"""Models and their results, written into AnnData."""

from ._bayes import bayes_classify, bayes_predict
from ._denoise import denoise
from ._embed import embed
from ._generate import generate
from ._integrated_gradients import integrated_gradients
from ._ldvae import ldvae_loadings
from ._synthetic_quality import synthetic_quality
from ._vae import vae

__all__ = [
    "bayes_classify",
    "bayes_predict",
    "denoise",
    "embed",
    "generate",
    "integrated_gradients",
    "ldvae_loadings",
    "synthetic_quality",
    "vae",
]
