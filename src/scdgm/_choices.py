"""The choices string arguments take, declared once for the modules and the tools (importing this is light)."""

KINDS = ("vae", "ae", "dae")
"""Autoencoder kinds: variational, plain, denoising."""
LIKELIHOODS = ("nb", "zinb", "poisson", "normal", "bernoulli")
"""Likelihoods of the VAE family's decoder."""
COUNT_LIKELIHOODS = ("nb", "zinb", "poisson")
"""Likelihoods that need raw counts and a library size."""
DISPERSED_LIKELIHOODS = ("nb", "zinb", "normal")
"""Likelihoods with a dispersion (or variance) parameter per gene."""
DECODERS = ("mlp", "linear")
"""Decoders: a multilayer perceptron, or one linear map (LDVAE)."""
DISPERSIONS = ("gene", "gene-batch")
"""Where the dispersion is shared: per gene, or per gene and batch."""
INFERENCES = ("svi", "nuts")
"""How a Bayesian classifier's posterior is approximated."""
PRECISIONS = ("32-true", "bf16-mixed", "16-mixed")
"""Training precisions (Lightning Fabric's names)."""
IG_METHODS = ("gausslegendre", "riemann_left", "riemann_right", "riemann_middle", "riemann_trapezoid")
"""Quadrature rules of integrated gradients."""
PROGRAM_MODELS = ("log1p", "log-linear")
"""How the simulator's gene programs act on the log rate: through log(1 + W a), or linearly (W a)."""
