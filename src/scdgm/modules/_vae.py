"""The autoencoder family: VAE, plain and denoising autoencoders, count / Gaussian / Bernoulli decoders, LDVAE."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .._checks import check_bool, check_choice, check_fraction, check_number
from .._choices import COUNT_LIKELIHOODS, DECODERS, DISPERSED_LIKELIHOODS, DISPERSIONS, KINDS, LIKELIHOODS
from ._base import BaseModule, LossOutput, check_integer
from ._likelihoods import EPS, decoder_log_likelihood, log_likelihood, sample

# Floor of the posterior variance, so that log(var) in the KL stays finite.
_VAR_EPS = 1e-4
# BatchNorm settings of every layer (eps as in scVI; default momentum so short runs still settle the running stats).
_BN_EPS = 1e-3


def _batch_entries(batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None:
    """The stored entries of ``batch["x"]`` as the data layer serves them from sparse input, else ``None``."""
    if "x_entry_rows" not in batch:
        return None
    return batch["x_entry_rows"], batch["x_entry_cols"], batch["x_entry_values"]


class _CovariateLinear(nn.Module):
    """``Linear`` on the concatenation of an input and the one-hot batch code.

    The one-hot block of the weight is stored as ``batch_weight`` (batches x outputs) and added by
    lookup, which is the same map without building the one-hot matrix or copying the input.
    """

    def __init__(self, n_in: int, n_out: int, n_batch: int = 0) -> None:
        super().__init__()
        self.linear = nn.Linear(n_in, n_out)
        self.batch_weight: nn.Parameter | None = None
        if n_batch > 0:
            bound = 1.0 / math.sqrt(n_in + n_batch)
            self.batch_weight = nn.Parameter(torch.empty(n_batch, n_out).uniform_(-bound, bound))

    def forward(self, h: torch.Tensor, batch_index: torch.Tensor | None) -> torch.Tensor:
        out = self.linear(h)
        if self.batch_weight is not None:
            out = out + F.embedding(batch_index, self.batch_weight)
        return out


class _HiddenLayer(nn.Module):
    """Linear (with batch covariates) -> BatchNorm1d -> ReLU -> Dropout."""

    def __init__(self, n_in: int, n_out: int, n_batch: int, use_batch_norm: bool, dropout: float) -> None:
        super().__init__()
        self.linear = _CovariateLinear(n_in, n_out, n_batch)
        self.norm = nn.BatchNorm1d(n_out, eps=_BN_EPS) if use_batch_norm else nn.Identity()
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    def forward(self, h: torch.Tensor, batch_index: torch.Tensor | None) -> torch.Tensor:
        return self.activate(self.linear(h, batch_index))

    def activate(self, z: torch.Tensor) -> torch.Tensor:
        """Everything after the linear map, from its output ``z``."""
        return self.dropout(F.relu(self.norm(z)))


class VAEModule(BaseModule):
    """Variational or plain autoencoder of single-cell data with a choice of observation model.

    One module covers the autoencoder as non-linear PCA, the denoising autoencoder (ADAGE), the VAE
    and beta-VAE (Tybalt), count VAEs with the library size handled as in scVI, a Gaussian decoder
    for normalised data, a Bernoulli decoder for binarised data, batch-conditional encoders and
    decoders, and the linearly decoded VAE (LDVAE, Svensson et al. 2020).

    Parameters
    ----------
    n_input
        Number of genes (features).
    n_batch
        Number of batches; above 0 the one-hot batch code is an input of the encoder's first layer
        and of every decoder layer (conditional VAE).
    n_latent
        Dimensions of the latent space; fewer than ``n_input``.
    n_hidden
        Units of every hidden layer.
    n_layers
        Hidden layers of the encoder, and of the decoder when ``decoder="mlp"``.
    kind
        ``"vae"``: Gaussian ``q(z | x)``, reparameterised samples, analytic KL to ``N(0, I)``.
        ``"ae"``: deterministic autoencoder, the encoder mean is the code and the KL is zero.
        ``"dae"``: as ``"ae"``, but in training mode a random ``corruption`` share of the input
        entries is set to zero before encoding, and the clean input is reconstructed.
    likelihood
        ``"nb"``, ``"zinb"``, ``"poisson"`` for raw counts: the decoder gives a softmax over genes
        that is scaled by the cell's observed library size, and the encoder reads ``log1p(x)``.
        ``"normal"`` for normalised or scaled data (gene-wise learned variance), ``"bernoulli"`` for
        0/1 data; both read the input as it is.
    decoder
        ``"mlp"``: hidden layers mirroring the encoder. ``"linear"``: one linear map from the latent
        code (and batch) to the output, followed by batch normalisation when ``use_batch_norm``
        (LDVAE); its gene loadings come from :meth:`linear_loadings`.
    dropout
        Dropout rate of the encoder's hidden layers (the decoder has none, as in scVI).
    dispersion
        ``"gene"``: one inverse dispersion (``"nb"``, ``"zinb"``) or variance (``"normal"``) per gene.
        ``"gene-batch"``: one per gene and batch; needs ``n_batch > 0``.
    corruption
        Share of input entries masked to zero in training, for ``kind="dae"``.
    use_batch_norm
        Batch normalisation in the hidden layers and after the linear decoder.
    loadings_l1
        Linear decoder only: weight of an L1 penalty on the gene loadings (those of
        :meth:`linear_loadings`, with the batch normalisation folded in using the minibatch's
        statistics in training), added once per minibatch to the per-cell loss, like the ``alpha``
        of a lasso. It makes each factor load on few genes, which also pins down the rotation that an
        isotropic prior leaves free. ``0`` (default) for none. It is a penalty, not part of the ELBO.

    Examples
    --------
    >>> import torch
    >>> from scdgm.modules import VAEModule
    >>> module = VAEModule(100, n_latent=5, likelihood="nb")
    >>> x = torch.poisson(torch.rand(8, 100) * 3)
    >>> out = module({"x": x, "library": x.sum(1, keepdim=True)})
    >>> out.loss.backward()
    """

    def __init__(
        self,
        n_input: int,
        *,
        n_batch: int = 0,
        n_latent: int = 10,
        n_hidden: int = 128,
        n_layers: int = 1,
        kind: str = "vae",
        likelihood: str = "nb",
        decoder: str = "mlp",
        dropout: float = 0.1,
        dispersion: str = "gene",
        corruption: float = 0.1,
        use_batch_norm: bool = True,
        loadings_l1: float = 0.0,
    ) -> None:
        super().__init__()
        n_input = check_integer("n_input", n_input, 2)
        n_batch = check_integer("n_batch", n_batch, 0)
        n_latent = check_integer("n_latent", n_latent, 1)
        n_hidden = check_integer("n_hidden", n_hidden, 1)
        n_layers = check_integer("n_layers", n_layers, 1)
        kind = check_choice("kind", kind, KINDS)
        likelihood = check_choice("likelihood", likelihood, LIKELIHOODS)
        decoder = check_choice("decoder", decoder, DECODERS)
        dispersion = check_choice("dispersion", dispersion, DISPERSIONS)
        dropout = check_fraction("dropout", dropout)
        corruption = check_fraction("corruption", corruption)
        use_batch_norm = check_bool("use_batch_norm", use_batch_norm)
        loadings_l1 = check_number("loadings_l1", loadings_l1, minimum=0.0)
        if loadings_l1 > 0 and decoder != "linear":
            msg = f'loadings_l1={loadings_l1!r} penalises the gene loadings of a linear decoder; use decoder="linear" (LDVAE) or loadings_l1=0.'
            raise ValueError(msg)
        if n_latent >= n_input:
            msg = f"n_latent={n_latent} must be smaller than n_input={n_input}: the latent space should compress the input."
            raise ValueError(msg)
        if dispersion == "gene-batch":
            if n_batch == 0:
                msg = 'dispersion="gene-batch" needs batches (n_batch > 0); use dispersion="gene" without batches.'
                raise ValueError(msg)
            if likelihood not in DISPERSED_LIKELIHOODS:
                msg = (
                    f'dispersion="gene-batch" does not apply to likelihood={likelihood!r}, which has no dispersion '
                    f"parameter; it applies to {', '.join(map(repr, DISPERSED_LIKELIHOODS))}."
                )
                raise ValueError(msg)

        self.init_kwargs = {
            "n_input": n_input,
            "n_batch": n_batch,
            "n_latent": n_latent,
            "n_hidden": n_hidden,
            "n_layers": n_layers,
            "kind": kind,
            "likelihood": likelihood,
            "decoder": decoder,
            "dropout": dropout,
            "dispersion": dispersion,
            "corruption": corruption,
            "use_batch_norm": use_batch_norm,
            "loadings_l1": float(loadings_l1),
        }
        self.n_input, self.n_batch, self.n_latent = n_input, n_batch, n_latent
        self.kind, self.likelihood, self.decoder_type = kind, likelihood, decoder
        self.dispersion, self.corruption = dispersion, corruption
        self.loadings_l1 = float(loadings_l1)

        # encoder: the batch code enters the first layer only
        self.encoder_layers = nn.ModuleList(
            [
                _HiddenLayer(
                    n_input if i == 0 else n_hidden, n_hidden, n_batch if i == 0 else 0, use_batch_norm, dropout
                )
                for i in range(n_layers)
            ]
        )
        self.mean_encoder = nn.Linear(n_hidden, n_latent)
        self.var_encoder = nn.Linear(n_hidden, n_latent) if kind == "vae" else None

        # decoder: the batch code enters every layer
        if decoder == "mlp":
            self.decoder_layers = nn.ModuleList(
                [
                    _HiddenLayer(n_latent if i == 0 else n_hidden, n_hidden, n_batch, use_batch_norm, 0.0)
                    for i in range(n_layers)
                ]
            )
            n_decoded = n_hidden
            self.output_norm: nn.Module = nn.Identity()
        else:
            self.decoder_layers = nn.ModuleList()
            n_decoded = n_latent
            self.output_norm = nn.BatchNorm1d(n_input, eps=_BN_EPS) if use_batch_norm else nn.Identity()
        # scale logits ("nb", "zinb", "poisson"), mean ("normal") or logits ("bernoulli")
        self.output = _CovariateLinear(n_decoded, n_input, n_batch)
        self.zi_output = _CovariateLinear(n_decoded, n_input, n_batch) if likelihood == "zinb" else None

        # log inverse dispersion ("nb", "zinb") or log variance ("normal"), per gene or per batch and gene
        self.log_dispersion: nn.Parameter | None = None
        if likelihood in DISPERSED_LIKELIHOODS:
            shape = (n_batch, n_input) if dispersion == "gene-batch" else (n_input,)
            self.log_dispersion = nn.Parameter(torch.zeros(shape))

    # ------------------------------------------------------------------ helpers

    def _batch_index(self, batch_index: torch.Tensor | None) -> torch.Tensor | None:
        if self.n_batch == 0:
            return None
        if batch_index is None:
            msg = f"This module was built with n_batch={self.n_batch}; pass the batch codes (batch['batch'])."
            raise ValueError(msg)
        return batch_index.reshape(-1).long()

    def _check_x(self, x: torch.Tensor) -> None:
        if x.dim() != 2 or x.shape[1] != self.n_input:
            msg = f"Expected input of shape (cells, {self.n_input}), got {tuple(x.shape)}."
            raise ValueError(msg)

    def _encode(self, x: torch.Tensor, batch_index: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Posterior mean and log-variance (``None`` for the autoencoders)."""
        h = self.encoder_input(x)
        for layer in self.encoder_layers:
            h = layer(h, batch_index)
        mean = self.mean_encoder(h).float()
        if self.var_encoder is None:
            return mean, None
        var = torch.exp(self.var_encoder(h).float()) + _VAR_EPS
        return mean, var

    def _decode(self, z: torch.Tensor, batch_index: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
        h = z
        for layer in self.decoder_layers:
            h = layer(h, batch_index)
        # likelihoods are evaluated in float32 also under mixed precision
        raw = self.output_norm(self.output(h, batch_index)).float()
        zi = self.zi_output(h, batch_index).float() if self.zi_output is not None else None
        return raw, zi

    def _dispersion(self, batch_index: torch.Tensor | None) -> torch.Tensor:
        assert self.log_dispersion is not None
        if self.dispersion == "gene-batch":
            return torch.exp(F.embedding(batch_index, self.log_dispersion))
        return torch.exp(self.log_dispersion).unsqueeze(0)

    def _mean_of(self, params: dict[str, torch.Tensor]) -> torch.Tensor:
        if self.likelihood in COUNT_LIKELIHOODS:
            return params["mu"]
        if self.likelihood == "normal":
            return params["mean"]
        return torch.sigmoid(params["logits"])

    # ------------------------------------------------------------------ public

    def encode(self, x: torch.Tensor, batch_index: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and variance of ``q(z | x)``.

        Parameters
        ----------
        x
            Data as the module was trained on (raw counts for count likelihoods), cells x genes.
        batch_index
            Batch codes, shape ``(cells,)``; required when ``n_batch > 0``.

        Returns
        -------
        qz_mean
            Posterior means, cells x ``n_latent``; the code itself for ``"ae"`` / ``"dae"``.
        qz_var
            Posterior variances, cells x ``n_latent``; zeros for ``"ae"`` / ``"dae"``.
        """
        self._check_x(x)
        mean, var = self._encode(x, self._batch_index(batch_index))
        return mean, torch.zeros_like(mean) if var is None else var

    def latent_mean(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Posterior mean (the code, for the autoencoders) of every cell in a minibatch.

        Parameters
        ----------
        batch
            A minibatch dict with ``"x"`` and, with batches, ``"batch"``.

        Returns
        -------
        Cells x ``n_latent``.
        """
        return self.encode(batch["x"], batch.get("batch"))[0]

    # The encoder in two parts, for attribution methods that treat its first linear map apart
    # (integrated gradients' fast path): for cells ``x`` with batch codes ``b``,
    # ``encode(x, b)[0] == encoder_rest(encoder_input(x) @ encoder_first_weight().T + encoder_first_offset(b), b)``.

    def encoder_input(self, x: torch.Tensor) -> torch.Tensor:
        """What the encoder's first layer reads: ``log1p(x)`` for count likelihoods, ``x`` otherwise.

        Parameters
        ----------
        x
            Data as the module was trained on, cells x genes.

        Returns
        -------
        Cells x genes.
        """
        if self.likelihood not in COUNT_LIKELIHOODS:
            return x
        # log(x + 1), not log1p: torch's CPU log1p takes twice as long as add + log. They differ by the float32
        # rounding of 1 + x, at most 6e-8 in absolute terms: nothing for counts, and negligible for the
        # fractional inputs of integrated gradients' paths.
        return torch.add(x, 1.0).log_()

    def encoder_first_weight(self) -> torch.Tensor:
        """Weight of the encoder's first linear map on the genes, hidden x genes.

        Returns
        -------
        The parameter itself (not a copy), so gradients reach it.
        """
        return self.encoder_layers[0].linear.linear.weight

    def encoder_first_offset(self, batch_index: torch.Tensor | None = None) -> torch.Tensor:
        """The part of the encoder's first linear map that does not depend on the genes.

        Parameters
        ----------
        batch_index
            Batch codes, shape ``(cells,)``; required when ``n_batch > 0``.

        Returns
        -------
        The bias, shape ``(hidden,)``; with batches, the bias plus each cell's batch column,
        cells x hidden.
        """
        covariate_linear = self.encoder_layers[0].linear
        bias = covariate_linear.linear.bias
        if covariate_linear.batch_weight is None:
            return bias
        return bias + F.embedding(self._batch_index(batch_index), covariate_linear.batch_weight)

    def encoder_rest(self, preactivation: torch.Tensor, batch_index: torch.Tensor | None = None) -> torch.Tensor:
        """Posterior mean from the output of the encoder's first linear map (before its normalisation).

        Parameters
        ----------
        preactivation
            Cells x hidden, e.g. ``encoder_input(x) @ encoder_first_weight().T + encoder_first_offset(b)``.
        batch_index
            Batch codes, shape ``(cells,)``; required when ``n_batch > 0``.

        Returns
        -------
        Posterior means (the code, for the autoencoders), cells x ``n_latent``.
        """
        batch_index = self._batch_index(batch_index)
        h = self.encoder_layers[0].activate(preactivation)
        for layer in self.encoder_layers[1:]:
            h = layer(h, batch_index)
        return self.mean_encoder(h).float()

    def generative(
        self, z: torch.Tensor, library: torch.Tensor, batch_index: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        """Parameters of ``p(x | z)``.

        Parameters
        ----------
        z
            Latent codes, cells x ``n_latent``.
        library
            Library sizes (total counts), shape ``(cells, 1)`` or ``(cells,)``; used by count likelihoods.
        batch_index
            Batch codes, shape ``(cells,)``; required when ``n_batch > 0``.

        Returns
        -------
        For ``"nb"`` / ``"zinb"`` / ``"poisson"``: ``scale`` (softmax over genes), ``mu``
        (``scale * library``), ``log_mu``; ``theta`` (inverse dispersion, broadcastable to cells x
        genes) for ``"nb"`` / ``"zinb"``; ``zi_logits`` for ``"zinb"``. For ``"normal"``: ``mean`` and
        ``var`` (broadcastable). For ``"bernoulli"``: ``logits``.
        """
        batch_index = self._batch_index(batch_index)
        raw, zi_logits = self._decode(z, batch_index)
        if self.likelihood in COUNT_LIKELIHOODS:
            log_scale = torch.log_softmax(raw, dim=-1)
            log_library = torch.log(library.reshape(-1, 1).float().clamp_min(EPS))
            scale = torch.exp(log_scale)
            params = {"scale": scale, "mu": scale * torch.exp(log_library), "log_mu": log_scale + log_library}
            if self.likelihood != "poisson":
                params["theta"] = self._dispersion(batch_index)
            if zi_logits is not None:
                params["zi_logits"] = zi_logits
            return params
        if self.likelihood == "normal":
            return {"mean": raw, "var": self._dispersion(batch_index)}
        return {"logits": raw}

    def forward(self, batch: dict[str, torch.Tensor], kl_weight: float = 1.0) -> LossOutput:
        """Loss of one minibatch: ``-log p(x | z)`` plus ``kl_weight`` times the KL, averaged over cells.

        Parameters
        ----------
        batch
            ``"x"`` cells x genes, ``"library"`` (cells, 1), ``"batch"`` (cells,) when ``n_batch > 0``;
            optionally the stored entries of ``"x"`` (``"x_entry_rows"``, ``"x_entry_cols"``,
            ``"x_entry_values"``), which spare the count likelihoods a scan for non-zeros.
        kl_weight
            Weight of the KL term (beta, KL warm-up); irrelevant for the autoencoders.

        Returns
        -------
        Loss and per-cell means of ``"reconstruction"``, ``"kl"``, ``"elbo"`` and ``"loss"``, and
        ``"penalty"`` with ``loadings_l1 > 0``.
        """
        x = batch["x"]
        self._check_x(x)
        batch_index = self._batch_index(batch.get("batch"))
        encoder_input = x
        if self.kind == "dae" and self.training and self.corruption > 0:
            encoder_input = x * (torch.rand_like(x) >= self.corruption)
        mean, var = self._encode(encoder_input, batch_index)
        if var is None:
            z = mean
            kl = torch.zeros(x.shape[0], dtype=torch.float32, device=x.device)
        else:
            z = mean + torch.sqrt(var) * torch.randn_like(mean)
            kl = 0.5 * (var + mean.square() - 1.0 - torch.log(var)).sum(-1).float()
        if self.likelihood in COUNT_LIKELIHOODS:
            # the training path: the likelihood straight from the decoder's logits, backward written out
            raw, zi_logits = self._decode(z, batch_index)
            theta = self._dispersion(batch_index) if self.likelihood != "poisson" else None
            reconstruction = -decoder_log_likelihood(
                x.float(),
                raw,
                batch["library"],
                self.likelihood,
                theta=theta,
                zi_logits=zi_logits,
                entries=_batch_entries(batch),
            )
        else:
            params = self.generative(z, batch["library"], batch_index)
            reconstruction = -log_likelihood(x.float(), params, self.likelihood)
        penalty = None
        if self.loadings_l1 > 0:
            penalty = self.loadings_l1 * self._effective_loadings(z, batch_index).abs().sum()
        return LossOutput.from_terms(reconstruction, kl, kl_weight, penalty)

    def expected_expression(
        self,
        batch: dict[str, torch.Tensor],
        *,
        library_size: float | None = None,
        decode_batch: int | None = None,
        n_samples: int = 1,
    ) -> torch.Tensor:
        """Posterior mean of the decoded data: denoised expression.

        Parameters
        ----------
        batch
            A minibatch dict (``"x"``, ``"library"``, with batches ``"batch"``).
        library_size
            Count likelihoods: the gene scale is multiplied by this library size instead of each
            cell's observed one. Ignored by ``"normal"`` and ``"bernoulli"``.
        decode_batch
            Decode every cell as if from this batch (the encoder still reads the true batch).
        n_samples
            Draws of ``z ~ q(z | x)`` to average over; ``1`` decodes the posterior mean. The
            autoencoders have a deterministic code and always decode it once.

        Returns
        -------
        Cells x genes: ``scale * library`` for count likelihoods (the negative binomial mean, without
        zero inflation), the mean for ``"normal"``, the probability of a one for ``"bernoulli"``.
        """
        n_samples = check_integer("n_samples", n_samples, 1)
        if library_size is not None and not library_size > 0:
            msg = f"library_size must be positive, got {library_size!r}."
            raise ValueError(msg)
        x = batch["x"]
        n_cells = x.shape[0]
        mean, var = self.encode(x, batch.get("batch"))
        decode_index = self._batch_index(batch.get("batch"))
        if decode_batch is not None:
            if not 0 <= decode_batch < self.n_batch:
                msg = f"decode_batch={decode_batch!r} is not a batch code of this module (0 to {self.n_batch - 1})."
                if self.n_batch == 0:
                    msg = "decode_batch needs a module with batches (n_batch > 0)."
                raise ValueError(msg)
            decode_index = torch.full((n_cells,), int(decode_batch), dtype=torch.long, device=x.device)
        if library_size is None:
            library = batch["library"].reshape(-1, 1)
        else:
            library = torch.full((n_cells, 1), float(library_size), device=x.device)
        if self.kind != "vae" or n_samples == 1:
            return self.decoded_mean(mean, library, decode_index)
        # all draws decoded in one pass: (n_samples * cells) rows
        z = mean + torch.sqrt(var) * torch.randn((n_samples, *mean.shape), dtype=mean.dtype, device=mean.device)
        repeat_index = None if decode_index is None else decode_index.repeat(n_samples)
        params = self.generative(z.reshape(-1, self.n_latent), library.repeat(n_samples, 1), repeat_index)
        return self._mean_of(params).reshape(n_samples, n_cells, -1).mean(0)

    def decoded_mean(
        self, z: torch.Tensor, library: torch.Tensor, batch_index: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Mean of ``p(x | z)``: what :meth:`expected_expression` returns, from given latent codes.

        Parameters
        ----------
        z
            Latent codes, cells x ``n_latent``.
        library
            Library sizes, shape ``(cells, 1)``; used by count likelihoods.
        batch_index
            Batch codes, shape ``(cells,)``; required when ``n_batch > 0``.

        Returns
        -------
        Cells x genes: ``scale * library`` for count likelihoods (without zero inflation), the mean for
        ``"normal"``, the probability of a one for ``"bernoulli"``.
        """
        return self._mean_of(self.generative(z, library, batch_index))

    def sample_counts(
        self,
        z: torch.Tensor,
        library: torch.Tensor,
        batch_index: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Draw data from ``p(x | z)``: counts, Gaussian values or 0/1 depending on the likelihood.

        Parameters
        ----------
        z
            Latent codes, cells x ``n_latent``.
        library
            Library sizes, shape ``(cells, 1)``; used by count likelihoods.
        batch_index
            Batch codes, shape ``(cells,)``; required when ``n_batch > 0``.
        generator
            Random generator, for reproducible draws.

        Returns
        -------
        Cells x genes.
        """
        with torch.no_grad():
            params = self.generative(z, library, batch_index)
        return sample(params, self.likelihood, generator=generator)

    def _effective_loadings(
        self, z: torch.Tensor | None = None, batch_index: torch.Tensor | None = None
    ) -> torch.Tensor:
        """The linear decoder's weight with its batch normalisation folded in, genes x ``n_latent``.

        In training mode the normalisation divides by the minibatch's own variance of the decoder
        output, so ``z`` (and the batch codes) of the minibatch are needed and the result is
        differentiable; otherwise it uses the running variance.
        """
        weight = self.output.linear.weight
        norm = self.output_norm
        if isinstance(norm, nn.BatchNorm1d):
            if self.training and z is not None:
                variance = self.output(z, batch_index).float().var(0, unbiased=False)
            else:
                variance = norm.running_var
            factor = torch.rsqrt(variance + norm.eps)
            if norm.affine:
                factor = factor * norm.weight
            weight = weight * factor.unsqueeze(1)
        return weight

    def linear_loadings(self) -> torch.Tensor:
        """Gene loadings of the linear decoder: the effective linear map from ``z`` to the output.

        The map goes to the gene log-scale (up to a per-cell constant) for count likelihoods, to the
        mean for ``"normal"`` and to the logits for ``"bernoulli"``. Batch normalisation after the
        linear layer is folded in as in evaluation mode (running variance, affine weight); batch
        columns are left out.

        Returns
        -------
        Genes x ``n_latent``, detached.
        """
        if self.decoder_type != "linear":
            msg = 'linear_loadings needs a linear decoder; build the module with decoder="linear" (LDVAE).'
            raise ValueError(msg)
        return self._effective_loadings().detach().clone()
