"""Observation models p(x | z) of the autoencoders: per-cell log-likelihoods, library distributions and sampling.

The log-likelihoods are written as direct formulas because they run on every training step; each one
is tested against ``torch.distributions`` / ``pyro.distributions`` / ``scvi.distributions`` to 1e-5.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
import torch.nn.functional as F

from .._choices import LIKELIHOODS

EPS = 1e-8
_LOG_2PI = math.log(2.0 * math.pi)
# Above this share of non-zero entries the gather/scatter of the sparse path costs more than it saves.
_DENSE_ABOVE = 0.75


def _check_likelihood(likelihood: str) -> None:
    if likelihood not in LIKELIHOODS:
        msg = f"Unknown likelihood {likelihood!r}; choose one of {', '.join(map(repr, LIKELIHOODS))}."
        raise ValueError(msg)


def _as_2d(param: torch.Tensor) -> torch.Tensor:
    return param.unsqueeze(0) if param.dim() == 1 else param


def _count_normaliser(x: torch.Tensor, theta: torch.Tensor | None, nonzero: torch.Tensor | None = None) -> torch.Tensor:
    """Per cell, sum over genes of ``lgamma(x + theta) - lgamma(theta) - lgamma(x + 1)`` (``theta=None``: ``-lgamma(x + 1)``).

    Every term is exactly zero where ``x == 0``. On CPU, ``lgamma`` and the ``digamma`` of its
    backward pass cost about ten times a multiplication and dominate a training step, while
    single-cell counts are mostly zeros; there the terms are computed on the non-zero entries only,
    found by ``nonzero`` (flat positions in ``x``, as the data layer knows them from a sparse matrix)
    or by a scan of ``x``. With gene-wise ``theta``, ``lgamma(theta)`` is evaluated once per gene and
    gathered, so its ``digamma`` runs on genes, not on entries. On accelerators without ``nonzero``
    the dense form is cheap and avoids the host synchronisation of a scan.
    """
    if theta is not None:
        theta = _as_2d(theta)
    if nonzero is None and x.device.type == "cpu" and x.dim() == 2:
        found = torch.nonzero(x.reshape(-1)).squeeze(1)
        if found.numel() <= _DENSE_ABOVE * x.numel():
            nonzero = found
    if nonzero is None:
        values = -torch.lgamma(x + 1.0)
        if theta is not None:
            values = values + torch.lgamma(x + theta) - torch.lgamma(theta)
        return values.sum(-1)
    n_genes = x.shape[1]
    rows = torch.div(nonzero, n_genes, rounding_mode="floor")
    x_nz = x.reshape(-1).index_select(0, nonzero)
    values = -torch.lgamma(x_nz + 1.0)
    if theta is not None:
        if theta.shape[0] == 1:
            cols = nonzero - rows * n_genes
            gene_theta = theta.reshape(-1)
            values = values + torch.lgamma(x_nz + gene_theta.index_select(0, cols))
            values = values - torch.lgamma(gene_theta).index_select(0, cols)
        else:
            theta_nz = theta.expand_as(x).reshape(-1).index_select(0, nonzero)
            values = values + torch.lgamma(x_nz + theta_nz) - torch.lgamma(theta_nz)
    return torch.zeros(x.shape[0], dtype=values.dtype, device=x.device).index_add(0, rows, values)


def _log_mu(mu: torch.Tensor, log_mu: torch.Tensor | None) -> torch.Tensor:
    return torch.log(mu + EPS) if log_mu is None else log_mu


def nb_log_likelihood(
    x: torch.Tensor,
    mu: torch.Tensor,
    theta: torch.Tensor,
    *,
    log_mu: torch.Tensor | None = None,
    nonzero: torch.Tensor | None = None,
) -> torch.Tensor:
    """Negative binomial log-likelihood in the mean / inverse-dispersion parameterisation, summed over genes.

    Parameters
    ----------
    x
        Counts, cells x genes.
    mu
        Means, cells x genes.
    theta
        Inverse dispersions, broadcastable to ``x`` (``(genes,)``, ``(1, genes)`` or cells x genes).
    log_mu
        ``log(mu)`` when the caller already has it (more accurate and saves a logarithm).
    nonzero
        Flat (row-major) positions of the non-zero entries of ``x`` when the caller knows them
        (the data layer does, for sparse input); saves a scan of ``x``.

    Returns
    -------
    Log-likelihood per cell, shape ``(cells,)``.
    """
    theta = _as_2d(theta)
    log_theta_mu = torch.log(theta + mu + EPS)
    elementwise = theta * (torch.log(theta + EPS) - log_theta_mu) + x * (_log_mu(mu, log_mu) - log_theta_mu)
    return elementwise.sum(-1) + _count_normaliser(x, theta, nonzero)


def zinb_log_likelihood(
    x: torch.Tensor,
    mu: torch.Tensor,
    theta: torch.Tensor,
    zi_logits: torch.Tensor,
    *,
    log_mu: torch.Tensor | None = None,
    nonzero: torch.Tensor | None = None,
) -> torch.Tensor:
    """Zero-inflated negative binomial log-likelihood, summed over genes.

    Parameters
    ----------
    x, mu, theta, log_mu, nonzero
        As in :func:`nb_log_likelihood`.
    zi_logits
        Logits of the probability that an entry is an extra (structural) zero, cells x genes.

    Returns
    -------
    Log-likelihood per cell, shape ``(cells,)``.
    """
    theta = _as_2d(theta)
    log_theta_mu = torch.log(theta + mu + EPS)
    log_nb_zero = theta * (torch.log(theta + EPS) - log_theta_mu)
    softplus_neg = F.softplus(-zi_logits)
    # log(pi + (1 - pi) NB(0)) and log(1 - pi) + log NB(x), with pi = sigmoid(zi_logits) kept in log space
    case_zero = F.softplus(log_nb_zero - zi_logits) - softplus_neg
    case_nonzero = log_nb_zero - zi_logits - softplus_neg + x * (_log_mu(mu, log_mu) - log_theta_mu)
    elementwise = torch.where(x == 0, case_zero, case_nonzero)
    return elementwise.sum(-1) + _count_normaliser(x, theta, nonzero)


def poisson_log_likelihood(
    x: torch.Tensor, mu: torch.Tensor, *, log_mu: torch.Tensor | None = None, nonzero: torch.Tensor | None = None
) -> torch.Tensor:
    """Poisson log-likelihood, summed over genes.

    Parameters
    ----------
    x, mu, log_mu, nonzero
        As in :func:`nb_log_likelihood`.

    Returns
    -------
    Log-likelihood per cell, shape ``(cells,)``.
    """
    return (x * _log_mu(mu, log_mu) - mu).sum(-1) + _count_normaliser(x, None, nonzero)


def normal_log_likelihood(x: torch.Tensor, mean: torch.Tensor, var: torch.Tensor) -> torch.Tensor:
    """Gaussian log-likelihood, summed over genes.

    Parameters
    ----------
    x
        Observations, cells x genes.
    mean
        Means, cells x genes.
    var
        Variances, broadcastable to ``x``.

    Returns
    -------
    Log-likelihood per cell, shape ``(cells,)``.
    """
    var = _as_2d(var)
    # the variance-only term is summed before broadcasting: with gene-wise variances it is one row
    constant = -0.5 * (_LOG_2PI + torch.log(var)).sum(-1)
    return -0.5 * ((x - mean).square() / var).sum(-1) + constant


def bernoulli_log_likelihood(x: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """Bernoulli log-likelihood of 0/1 data, summed over genes.

    Parameters
    ----------
    x
        Binary observations, cells x genes.
    logits
        Logits of the probability of a one, cells x genes.

    Returns
    -------
    Log-likelihood per cell, shape ``(cells,)``.
    """
    return -F.binary_cross_entropy_with_logits(logits, x, reduction="none").sum(-1)


def log_likelihood(
    x: torch.Tensor, params: Mapping[str, torch.Tensor], likelihood: str, *, nonzero: torch.Tensor | None = None
) -> torch.Tensor:
    """Log-likelihood of ``x`` under the parameters a decoder produced, summed over genes.

    Parameters
    ----------
    x
        Observations, cells x genes.
    params
        The likelihood's parameters: ``mu``, ``theta`` (and optionally ``log_mu``) for ``"nb"``;
        also ``zi_logits`` for ``"zinb"``; ``mu`` for ``"poisson"``; ``mean`` and ``var`` for
        ``"normal"``; ``logits`` for ``"bernoulli"``.
    likelihood
        One of ``"nb"``, ``"zinb"``, ``"poisson"``, ``"normal"``, ``"bernoulli"``.
    nonzero
        Flat positions of the non-zero entries of ``x``, when known (count likelihoods use them).

    Returns
    -------
    Log-likelihood per cell, shape ``(cells,)``.
    """
    _check_likelihood(likelihood)
    if likelihood == "nb":
        return nb_log_likelihood(x, params["mu"], params["theta"], log_mu=params.get("log_mu"), nonzero=nonzero)
    if likelihood == "zinb":
        return zinb_log_likelihood(
            x, params["mu"], params["theta"], params["zi_logits"], log_mu=params.get("log_mu"), nonzero=nonzero
        )
    if likelihood == "poisson":
        return poisson_log_likelihood(x, params["mu"], log_mu=params.get("log_mu"), nonzero=nonzero)
    if likelihood == "normal":
        return normal_log_likelihood(x, params["mean"], params["var"])
    return bernoulli_log_likelihood(x, params["logits"])


def distribution(params: Mapping[str, torch.Tensor], likelihood: str) -> torch.distributions.Distribution:
    """The library distribution (torch or pyro) with the given parameters, one element per cell and gene.

    Parameters
    ----------
    params, likelihood
        As in :func:`log_likelihood`.

    Returns
    -------
    A distribution whose batch shape is cells x genes.
    """
    _check_likelihood(likelihood)
    if likelihood in ("nb", "zinb"):
        mu = params["mu"]
        theta = _as_2d(params["theta"]).expand_as(mu)
        logits = _log_mu(mu, params.get("log_mu")) - torch.log(theta + EPS)
        if likelihood == "nb":
            return torch.distributions.NegativeBinomial(total_count=theta, logits=logits, validate_args=False)
        import pyro.distributions

        return pyro.distributions.ZeroInflatedNegativeBinomial(
            total_count=theta, logits=logits, gate_logits=params["zi_logits"], validate_args=False
        )
    if likelihood == "poisson":
        return torch.distributions.Poisson(params["mu"], validate_args=False)
    if likelihood == "normal":
        mean = params["mean"]
        scale = _as_2d(params["var"]).sqrt().expand_as(mean)
        return torch.distributions.Normal(mean, scale, validate_args=False)
    return torch.distributions.Bernoulli(logits=params["logits"], validate_args=False)


def sample(
    params: Mapping[str, torch.Tensor], likelihood: str, *, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Draw observations from the likelihood, reproducibly when a generator is given.

    Parameters
    ----------
    params, likelihood
        As in :func:`log_likelihood`.
    generator
        Source of randomness; torch's global generator when ``None``. The library samplers take no
        generator, so a seed drawn from it seeds a forked global state for the draw.

    Returns
    -------
    A sample, cells x genes.
    """
    dist = distribution(params, likelihood)
    with torch.no_grad():
        if generator is None:
            return dist.sample()
        device = next(iter(params.values())).device
        seed = int(torch.randint(0, 2**62, (), generator=generator, device=generator.device))
        cuda_devices = [device.index or 0] if device.type == "cuda" else []
        with torch.random.fork_rng(devices=cuda_devices):
            torch.manual_seed(seed)
            return dist.sample()
