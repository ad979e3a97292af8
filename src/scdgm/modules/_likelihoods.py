"""Observation models p(x | z) of the autoencoders: per-cell log-likelihoods, library distributions and sampling.

The log-likelihoods are written as direct formulas because they run on every training step; each one
is tested against ``torch.distributions`` / ``pyro.distributions`` / ``scvi.distributions`` to 1e-5.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

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


Entries = tuple[torch.Tensor, torch.Tensor, torch.Tensor]
"""The non-zero entries of a cells x genes matrix: row, column (integer tensors) and value."""


def _entries_of(x: torch.Tensor) -> Entries | None:
    """The non-zero entries of ``x`` by a scan, on CPU and where they are few enough to be worth it."""
    if x.device.type != "cpu" or x.dim() != 2:
        return None
    flat = torch.nonzero(x.reshape(-1)).squeeze(1)
    if flat.numel() > _DENSE_ABOVE * x.numel():
        return None
    rows = torch.div(flat, x.shape[1], rounding_mode="floor")
    return rows, flat - rows * x.shape[1], x.reshape(-1).index_select(0, flat)


def _row_sums(values: torch.Tensor, rows: torch.Tensor, n_rows: int) -> torch.Tensor:
    """Sums of ``values`` by row."""
    return torch.zeros(n_rows, dtype=values.dtype, device=values.device).index_add(0, rows, values)


def _digamma_positive(y: torch.Tensor) -> torch.Tensor:
    """``digamma(y)`` for ``y > 0``, by the recurrence to ``y + 6`` and the asymptotic series there.

    Replaces ``torch.digamma`` in the backward pass of the count likelihoods, where it runs over every
    non-zero count of every step: torch's CPU kernel took about twice as long (0.58 against 0.30 ms for
    64,000 entries on two cores). Truncating the series at ``y + 6 >= 6`` errs by under ``3e-9``; tested
    against ``torch.digamma`` in float64.
    """
    shifted = torch.add(y, 6.0)
    total = torch.reciprocal(y)
    for k in range(1, 6):
        total.add_(torch.add(y, float(k)).reciprocal_())
    inv = torch.reciprocal(shifted)
    inv2 = inv.square()
    # log w - 1/(2w) - 1/(12 w^2) + 1/(120 w^4) - 1/(252 w^6), w = y + 6
    series = inv2.mul(-1.0 / 252).add_(1.0 / 120).mul_(inv2).sub_(1.0 / 12).mul_(inv2)
    series.sub_(inv.mul_(0.5)).add_(shifted.log_())
    return series.sub_(total)


class _GeneDispersionNormaliser(torch.autograd.Function):
    """Per cell, the sum over its non-zero entries of ``lgamma(x + theta) - lgamma(theta) - lgamma(x + 1)``, gene-wise theta.

    Written out (rather than left to autograd over gathers) so that each entry's dispersion is
    gathered once and the backward pass is one ``digamma`` over the entries and one scatter onto the
    genes: ``d/dtheta_g = sum over entries of gene g of digamma(x + theta_g) - digamma(theta_g)``.
    """

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any, theta: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor, values: torch.Tensor, n_cells: int
    ) -> torch.Tensor:
        shifted = theta.index_select(0, cols).add_(values)
        per_entry = torch.lgamma(shifted).sub_(torch.lgamma(values + 1.0))
        per_entry.sub_(torch.lgamma(theta).index_select(0, cols))
        ctx.save_for_backward(theta, rows, cols, shifted)
        return _row_sums(per_entry, rows, n_cells)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:  # type: ignore[override]
        theta, rows, cols, shifted = ctx.saved_tensors
        per_entry = _digamma_positive(shifted).sub_(torch.digamma(theta).index_select(0, cols))
        per_entry.mul_(grad.index_select(0, rows))
        return torch.zeros_like(theta).index_add_(0, cols, per_entry), None, None, None, None


def _count_normaliser(x: torch.Tensor, theta: torch.Tensor | None, entries: Entries | None = None) -> torch.Tensor:
    """Per cell, sum over genes of ``lgamma(x + theta) - lgamma(theta) - lgamma(x + 1)`` (``theta=None``: ``-lgamma(x + 1)``).

    Every term is exactly zero where ``x == 0``. On CPU, ``lgamma`` and the ``digamma`` of its
    backward pass cost about ten times a multiplication and dominate a training step, while
    single-cell counts are mostly zeros; there the terms are computed on the non-zero entries only,
    given by ``entries`` (as the data layer knows them from a sparse matrix) or found by a scan of
    ``x``. On accelerators without ``entries`` the dense form is cheap and avoids the host
    synchronisation of a scan.
    """
    if theta is not None:
        theta = _as_2d(theta)
    if entries is None:
        entries = _entries_of(x)
    if entries is None:
        values = -torch.lgamma(x + 1.0)
        if theta is not None:
            values = values + torch.lgamma(x + theta) - torch.lgamma(theta)
        return values.sum(-1)
    rows, cols, x_nz = entries
    x_nz = x_nz.to(x.dtype)
    if theta is None:
        per_entry = -torch.lgamma(x_nz + 1.0)
    elif theta.shape[0] == 1:
        return _GeneDispersionNormaliser.apply(theta.reshape(-1), rows, cols, x_nz, x.shape[0])
    else:
        theta_nz = theta[rows, cols]
        per_entry = torch.lgamma(x_nz + theta_nz) - torch.lgamma(theta_nz) - torch.lgamma(x_nz + 1.0)
    return _row_sums(per_entry, rows, x.shape[0])


def _log_mu(mu: torch.Tensor, log_mu: torch.Tensor | None) -> torch.Tensor:
    return torch.log(mu + EPS) if log_mu is None else log_mu


def nb_log_likelihood(
    x: torch.Tensor,
    mu: torch.Tensor,
    theta: torch.Tensor,
    *,
    log_mu: torch.Tensor | None = None,
    entries: Entries | None = None,
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
    entries
        The non-zero entries of ``x`` as ``(rows, cols, values)`` when the caller knows them (the data
        layer does, for sparse input); saves a scan of ``x``. Stored zeros among them change nothing.

    Returns
    -------
    Log-likelihood per cell, shape ``(cells,)``.
    """
    theta = _as_2d(theta)
    log_theta_mu = torch.log(theta + mu + EPS)
    elementwise = theta * (torch.log(theta + EPS) - log_theta_mu) + x * (_log_mu(mu, log_mu) - log_theta_mu)
    return elementwise.sum(-1) + _count_normaliser(x, theta, entries)


def zinb_log_likelihood(
    x: torch.Tensor,
    mu: torch.Tensor,
    theta: torch.Tensor,
    zi_logits: torch.Tensor,
    *,
    log_mu: torch.Tensor | None = None,
    entries: Entries | None = None,
) -> torch.Tensor:
    """Zero-inflated negative binomial log-likelihood, summed over genes.

    Parameters
    ----------
    x, mu, theta, log_mu, entries
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
    return elementwise.sum(-1) + _count_normaliser(x, theta, entries)


def poisson_log_likelihood(
    x: torch.Tensor, mu: torch.Tensor, *, log_mu: torch.Tensor | None = None, entries: Entries | None = None
) -> torch.Tensor:
    """Poisson log-likelihood, summed over genes.

    Parameters
    ----------
    x, mu, log_mu, entries
        As in :func:`nb_log_likelihood`.

    Returns
    -------
    Log-likelihood per cell, shape ``(cells,)``.
    """
    return (x * _log_mu(mu, log_mu) - mu).sum(-1) + _count_normaliser(x, None, entries)


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


class _DecoderCountLikelihood(torch.autograd.Function):
    """The dense part of the NB / ZINB / Poisson log-likelihood per cell, from the decoder's scale logits.

    Autograd would record about twenty element-wise operations over cells x genes for the softmax and
    the likelihood (and ``torch.where`` and two softplus for ZINB, each several times a multiplication
    on CPU), and replay them backwards. The derivatives have short closed forms, so the backward pass
    here is written out: with ``mu = library * softmax(logits)`` and ``r = 1 / (theta + mu + EPS)``, the
    gradient of the NB term for the logits is ``a - softmax(logits) * a.sum()`` with
    ``a = mu * dl/dmu = r * (x * (theta + EPS) - theta * mu)``. ZINB is NB plus, per gene,
    ``1{x == 0} softplus(zi - q) - softplus(zi)`` with ``q = log NB(0)``, so it needs no case split.
    The terms that are zero where ``x == 0`` (the log-gamma normaliser) are left to
    :func:`_count_normaliser`. Tested against autograd through :func:`log_likelihood`.
    """

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        logits: torch.Tensor,
        log_library: torch.Tensor,
        theta: torch.Tensor | None,
        zi_logits: torch.Tensor | None,
        x: torch.Tensor,
    ) -> torch.Tensor:
        # Fresh cells x genes buffers cost more than the arithmetic on them on CPU (first touch of new
        # memory), so each step below works in place where it can.
        log_scale = torch.log_softmax(logits, dim=-1)
        mu = torch.add(log_scale, log_library).exp_()
        # sum_g x log mu = sum_g x log_scale + log_library * sum_g x
        value = torch.linalg.vecdot(x, log_scale) + log_library.squeeze(-1) * x.sum(-1)
        saved: tuple[torch.Tensor, ...] = (x, mu, log_library)
        if theta is None:  # Poisson: sum_g mu is the library up to rounding, but sum it as the formula says
            value = value - mu.sum(-1)
        else:
            log_theta = torch.log(theta + EPS)
            log_total = torch.add(mu, theta + EPS).log_()
            # sum_g theta (log theta - log_total) - x log_total
            if theta.shape[0] == 1:
                value = value + (theta * log_theta).sum() - log_total @ theta.squeeze(0)
            else:
                value = value + torch.linalg.vecdot(theta, log_theta - log_total)
            value = value - torch.linalg.vecdot(x, log_total)
            saved = (*saved, theta, log_theta, log_total)
            if zi_logits is not None:
                is_zero = torch.sign(x).neg_().add_(1.0)  # counts are non-negative
                # zi - q, with q = log NB(0) = theta (log theta - log_total)
                zi_minus_q = torch.sub(log_total, log_theta).mul_(theta).add_(zi_logits)
                value = value + torch.linalg.vecdot(is_zero, F.softplus(zi_minus_q)) - F.softplus(zi_logits).sum(-1)
                saved = (*saved, zi_logits, zi_minus_q, is_zero)
        ctx.save_for_backward(*saved)
        ctx.has_theta, ctx.has_zi = theta is not None, zi_logits is not None
        return value

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:  # type: ignore[override]
        x, mu, log_library, *rest = ctx.saved_tensors
        grad_col = grad.unsqueeze(-1)
        grad_theta = grad_zi = None
        if not ctx.has_theta:
            a = x - mu
        else:
            theta, log_theta, log_total, *zi = rest
            r = torch.add(mu, theta + EPS).reciprocal_()
            # ZINB: keep = 1 - w0, w0 = P(structural zero | x), the share of each zero the NB part does not explain
            keep = None
            if ctx.has_zi:
                zi_logits, zi_minus_q, is_zero = zi
                w0 = torch.sigmoid(zi_minus_q).mul_(is_zero)
                if ctx.needs_input_grad[3]:
                    grad_zi = torch.sigmoid(zi_logits).sub_(w0).mul_(grad_col).neg_()
                keep = w0.neg_().add_(1.0)
            a = torch.mul(x, theta + EPS)
            if ctx.needs_input_grad[2]:
                # d/dtheta per entry: keep (log theta + theta/(theta+EPS) - log_total - theta r) - x r
                per_gene = log_theta + theta / (theta + EPS)
                inner = torch.mul(r, theta).add_(log_total)
                if keep is not None:
                    inner.mul_(keep)
                inner.addcmul_(x, r)
                if theta.shape[0] == 1:
                    weight = grad.sum() if keep is None else grad @ keep
                    grad_theta = (weight * per_gene.squeeze(0) - grad @ inner).unsqueeze(0)
                else:
                    base = per_gene if keep is None else per_gene * keep
                    grad_theta = inner.neg_().add_(base).mul_(grad_col)
            # a = mu dl/dmu = r (x (theta + EPS) - theta mu keep)
            if keep is None:
                a.addcmul_(mu, theta, value=-1.0)
            else:
                a.sub_(keep.mul_(mu).mul_(theta))
            a.mul_(r)
        grad_logits = None
        if ctx.needs_input_grad[0]:
            # softmax chain rule: a - softmax * sum(a), with softmax = mu / library
            shift = a.sum(-1, keepdim=True).mul_(torch.exp(-log_library)).mul_(grad_col)
            grad_logits = a.mul_(grad_col).addcmul_(mu, shift, value=-1.0)
        return grad_logits, None, grad_theta, grad_zi, None


def decoder_log_likelihood(
    x: torch.Tensor,
    logits: torch.Tensor,
    library: torch.Tensor,
    likelihood: str,
    *,
    theta: torch.Tensor | None = None,
    zi_logits: torch.Tensor | None = None,
    entries: Entries | None = None,
) -> torch.Tensor:
    """Count log-likelihood per cell from the decoder's scale logits: the training path of the count models.

    The same value as :func:`log_likelihood` with ``mu = library * softmax(logits)``, at a fraction of
    the cost of its forward and backward passes (see :class:`_DecoderCountLikelihood`).

    Parameters
    ----------
    x
        Counts, cells x genes.
    logits
        Scale logits, cells x genes (their softmax over genes is the expected share of each gene).
    library
        Library sizes, shape ``(cells, 1)`` or ``(cells,)``; not differentiated.
    likelihood
        ``"nb"``, ``"zinb"`` or ``"poisson"``.
    theta
        Inverse dispersions, ``(1, genes)`` or cells x genes; required for ``"nb"`` and ``"zinb"``.
    zi_logits
        Zero-inflation logits, cells x genes; required for ``"zinb"``.
    entries
        As in :func:`nb_log_likelihood`.

    Returns
    -------
    Log-likelihood per cell, shape ``(cells,)``.
    """
    if likelihood not in ("nb", "zinb", "poisson"):
        msg = f"decoder_log_likelihood is for count likelihoods ('nb', 'zinb', 'poisson'), not {likelihood!r}."
        raise ValueError(msg)
    if (likelihood == "poisson") != (theta is None) or (likelihood == "zinb") != (zi_logits is not None):
        takes = {
            "nb": "theta and no zi_logits",
            "zinb": "theta and zi_logits",
            "poisson": "neither theta nor zi_logits",
        }
        given = [name for name, value in (("theta", theta), ("zi_logits", zi_logits)) if value is not None]
        msg = f"likelihood={likelihood!r} takes {takes[likelihood]}, but got {' and '.join(given) or 'neither'}."
        raise ValueError(msg)
    log_library = torch.log(library.reshape(-1, 1).to(logits.dtype).clamp_min(EPS)).detach()
    if theta is not None:
        theta = _as_2d(theta)
    dense = _DecoderCountLikelihood.apply(logits, log_library, theta, zi_logits, x)
    return dense + _count_normaliser(x, theta, entries)


def log_likelihood(
    x: torch.Tensor, params: Mapping[str, torch.Tensor], likelihood: str, *, entries: Entries | None = None
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
    entries
        The non-zero entries of ``x`` as ``(rows, cols, values)``, when known (count likelihoods use them).

    Returns
    -------
    Log-likelihood per cell, shape ``(cells,)``.
    """
    _check_likelihood(likelihood)
    if likelihood == "nb":
        return nb_log_likelihood(x, params["mu"], params["theta"], log_mu=params.get("log_mu"), entries=entries)
    if likelihood == "zinb":
        return zinb_log_likelihood(
            x, params["mu"], params["theta"], params["zi_logits"], log_mu=params.get("log_mu"), entries=entries
        )
    if likelihood == "poisson":
        return poisson_log_likelihood(x, params["mu"], log_mu=params.get("log_mu"), entries=entries)
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
