"""Models and their results, written into AnnData."""

from ._bayes import bayes_classify, bayes_predict
from ._dbm import dbm
from ._decode import decode
from ._denoise import denoise
from ._differential_expression import differential_expression
from ._embed import embed
from ._generate import generate
from ._integrated_gradients import integrated_gradients
from ._ldvae import ldvae_loadings
from ._patterns import pattern_extractor
from ._perturbation import predict_perturbation
from ._synthetic_quality import synthetic_quality
from ._vae import vae

__all__ = [
    "bayes_classify",
    "bayes_predict",
    "dbm",
    "decode",
    "denoise",
    "differential_expression",
    "embed",
    "generate",
    "integrated_gradients",
    "ldvae_loadings",
    "pattern_extractor",
    "predict_perturbation",
    "synthetic_quality",
    "vae",
]
