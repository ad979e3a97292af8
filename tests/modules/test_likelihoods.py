"""Our log-likelihood formulas against scvi-tools, torch and pyro distributions."""

import numpy as np
import pytest
import torch

from scdgm.modules import _likelihoods as lk


def _counts(n_cells=16, n_genes=50, *, dense=False, extreme=False, seed=0):
    """NB-ish counts with many zeros and non-trivial means and dispersions.

    ``extreme`` adds tiny means and counts up to 2e5; float32 cannot resolve those to 1e-5 in any
    implementation (lgamma of 2e5 is 2.3e6), so they are compared in float64.
    """
    g = torch.Generator().manual_seed(seed)
    mu = torch.exp(torch.randn(n_cells, n_genes, generator=g) * 2.0).clamp_max(500.0)
    theta = torch.exp(torch.randn(n_genes, generator=g) * 1.5)
    x = torch.poisson(mu * torch.rand(n_cells, n_genes, generator=g) * 2, generator=g)
    zi_logits = torch.randn(n_cells, n_genes, generator=g) * 3.0
    x[2, :3] = torch.tensor([1000.0, 0.0, 2000.0])
    if extreme:
        mu, theta, x, zi_logits = mu.double(), theta.double(), x.double(), zi_logits.double()
        mu[0, :5] = torch.tensor([1e-6, 1e-3, 1e3, 5e4, 2e5], dtype=torch.float64)
        x[1, :3] = torch.tensor([0.0, 1e4, 1e5], dtype=torch.float64)
        x[0, 3:5] = torch.tensor([6e4, 2.2e5], dtype=torch.float64)
    if dense:
        x = x + 1.0
    return x, mu, theta, zi_logits


_CASES = [
    pytest.param({"dense": False}, id="float32-sparse-path"),
    pytest.param({"dense": True}, id="float32-dense-path"),
    pytest.param({"dense": False, "extreme": True}, id="float64-extreme-sparse-path"),
    pytest.param({"dense": True, "extreme": True}, id="float64-extreme-dense-path"),
]


def _assert_close(ours, reference, rtol=1e-5, atol=1e-5):
    np.testing.assert_allclose(
        ours.detach().double().numpy(), reference.detach().double().numpy(), rtol=rtol, atol=atol
    )


@pytest.mark.parametrize("case", _CASES)
def test_nb_matches_scvi_and_torch(case):
    from scvi.distributions import NegativeBinomial

    x, mu, theta, _ = _counts(**case)
    assert (x == 0).any() != case["dense"]
    ours = lk.nb_log_likelihood(x, mu, theta)
    _assert_close(ours, NegativeBinomial(mu=mu, theta=theta.expand_as(mu)).log_prob(x).sum(-1))
    _assert_close(ours, lk.distribution({"mu": mu, "theta": theta}, "nb").log_prob(x).sum(-1))
    # elementwise: one gene at a time
    for gene in (0, 1, 2, 7):
        column = lk.nb_log_likelihood(x[:, gene : gene + 1], mu[:, gene : gene + 1], theta[gene : gene + 1])
        _assert_close(column, NegativeBinomial(mu=mu[:, gene], theta=theta[gene].expand(len(x))).log_prob(x[:, gene]))


def test_nb_with_log_mu_and_gene_batch_theta():
    from scvi.distributions import NegativeBinomial

    x, mu, _, _ = _counts()
    theta = torch.exp(torch.randn(*mu.shape, generator=torch.Generator().manual_seed(3)))
    ours = lk.nb_log_likelihood(x, mu, theta, log_mu=torch.log(mu))
    _assert_close(ours, NegativeBinomial(mu=mu, theta=theta).log_prob(x).sum(-1))


@pytest.mark.parametrize("case", _CASES)
def test_zinb_matches_scvi_and_pyro(case):
    from scvi.distributions import ZeroInflatedNegativeBinomial

    x, mu, theta, zi_logits = _counts(**case, seed=1)
    ours = lk.zinb_log_likelihood(x, mu, theta, zi_logits)
    reference = ZeroInflatedNegativeBinomial(mu=mu, theta=theta.expand_as(mu), zi_logits=zi_logits).log_prob(x)
    _assert_close(ours, reference.sum(-1))
    params = {"mu": mu, "theta": theta, "zi_logits": zi_logits}
    _assert_close(ours, lk.distribution(params, "zinb").log_prob(x).sum(-1))
    _assert_close(ours, lk.log_likelihood(x, params, "zinb"))


@pytest.mark.parametrize("case", _CASES)
def test_poisson_matches_scvi(case):
    from scvi.distributions import Poisson

    x, mu, _, _ = _counts(**case, seed=2)
    ours = lk.poisson_log_likelihood(x, mu)
    _assert_close(ours, Poisson(mu).log_prob(x).sum(-1))
    _assert_close(ours, torch.distributions.Poisson(mu).log_prob(x).sum(-1))


def test_normal_and_bernoulli_match_torch():
    g = torch.Generator().manual_seed(4)
    x = torch.randn(16, 50, generator=g) * 3
    mean = torch.randn(16, 50, generator=g)
    var = torch.exp(torch.randn(50, generator=g))
    reference = torch.distributions.Normal(mean, var.sqrt().expand_as(mean)).log_prob(x).sum(-1)
    _assert_close(lk.normal_log_likelihood(x, mean, var), reference)
    _assert_close(lk.log_likelihood(x, {"mean": mean, "var": var}, "normal"), reference)
    var_cells = torch.exp(torch.randn(16, 50, generator=g))
    reference = torch.distributions.Normal(mean, var_cells.sqrt()).log_prob(x).sum(-1)
    _assert_close(lk.normal_log_likelihood(x, mean, var_cells), reference)

    binary = (torch.rand(16, 50, generator=g) > 0.7).float()
    logits = torch.randn(16, 50, generator=g) * 5
    reference = torch.distributions.Bernoulli(logits=logits).log_prob(binary).sum(-1)
    _assert_close(lk.bernoulli_log_likelihood(binary, logits), reference)


def test_gradients_match_library():
    """The sparse CPU path must give the same gradients as the dense library formula."""
    from scvi.distributions import NegativeBinomial

    x, mu, theta, _ = _counts(seed=5)
    grads = []
    for fn in (
        lambda m, t: lk.nb_log_likelihood(x, m, t).sum(),
        lambda m, t: NegativeBinomial(mu=m, theta=t.expand_as(m)).log_prob(x).sum(),
    ):
        m, t = mu.clone().requires_grad_(), theta.clone().requires_grad_()
        fn(m, t).backward()
        grads.append((m.grad, t.grad))
    _assert_close(grads[0][0], grads[1][0], rtol=1e-4, atol=1e-5)
    _assert_close(grads[0][1], grads[1][1], rtol=1e-4, atol=1e-4)


def test_empty_rows_and_all_zero_input():
    x = torch.zeros(3, 10)
    mu = torch.full((3, 10), 0.5)
    theta = torch.ones(10)
    expected = (
        torch.distributions.NegativeBinomial(total_count=theta.expand_as(mu), logits=torch.log(mu)).log_prob(x).sum(-1)
    )
    _assert_close(lk.nb_log_likelihood(x, mu, theta), expected)
    _assert_close(lk.poisson_log_likelihood(x, mu), torch.full((3,), -5.0))


def test_unknown_likelihood():
    with pytest.raises(ValueError, match="Unknown likelihood 'gamma'; choose one of 'nb', 'zinb'"):
        lk.log_likelihood(torch.zeros(2, 3), {}, "gamma")


@pytest.mark.parametrize("likelihood", lk.LIKELIHOODS)
def test_sample_is_reproducible_with_generator(likelihood):
    g = torch.Generator().manual_seed(0)
    mu = torch.exp(torch.randn(200, 30, generator=g))
    params = {
        "mu": mu,
        "theta": torch.full((30,), 5.0),
        "zi_logits": torch.full_like(mu, -1.0),
        "mean": mu,
        "var": torch.full((30,), 0.01),
        "logits": torch.log(mu),
    }
    first = lk.sample(params, likelihood, generator=torch.Generator().manual_seed(1))
    second = lk.sample(params, likelihood, generator=torch.Generator().manual_seed(1))
    other = lk.sample(params, likelihood, generator=torch.Generator().manual_seed(2))
    assert first.shape == (200, 30)
    assert torch.equal(first, second)
    assert not torch.equal(first, other)
    expected_mean = {
        "nb": mu,
        "zinb": mu * torch.sigmoid(torch.tensor(1.0)),
        "poisson": mu,
        "normal": mu,
        "bernoulli": torch.sigmoid(torch.log(mu)),
    }[likelihood]
    # the sample mean over many cells tracks the distribution mean
    np.testing.assert_allclose(first.mean().item(), expected_mean.mean().item(), rtol=0.1)


def _entries(x, extra_zero=None):
    """The non-zero entries of ``x`` sorted by row, optionally with one stored zero (as CSR may hold)."""
    flat = torch.nonzero(x.reshape(-1)).squeeze(1)
    if extra_zero is not None:
        flat = torch.sort(torch.cat([flat, extra_zero]))[0]
    rows = torch.div(flat, x.shape[1], rounding_mode="floor")
    return rows, (flat - rows * x.shape[1]).int(), x.reshape(-1)[flat]


@pytest.mark.parametrize("likelihood", ["nb", "zinb", "poisson"])
@pytest.mark.parametrize("theta_per_cell", [False, True])
def test_known_entries_give_the_scan_result(likelihood, theta_per_cell):
    """Entries handed over by the data layer (here with one stored zero, as CSR may hold) change nothing."""
    x, mu, theta, zi_logits = _counts(seed=6)
    if theta_per_cell:
        theta = theta.expand_as(mu).contiguous() * torch.linspace(0.5, 2.0, mu.shape[0]).unsqueeze(1)
    stored_zero = torch.nonzero(x.reshape(-1) == 0)[0]
    params = {"mu": mu, "theta": theta, "zi_logits": zi_logits}
    values = []
    for entries in (None, _entries(x, stored_zero)):
        m, t = mu.clone().requires_grad_(), theta.clone().requires_grad_(likelihood != "poisson")
        ll = lk.log_likelihood(x, {**params, "mu": m, "theta": t}, likelihood, entries=entries)
        ll.sum().backward()
        values.append((ll, m.grad, t.grad if t.requires_grad else torch.zeros(1)))
    for ours, scan in zip(values[1], values[0], strict=True):
        _assert_close(ours, scan)
    dense = (lk.distribution(params, likelihood).log_prob(x)).sum(-1)
    _assert_close(values[1][0], dense, rtol=1e-4, atol=1e-4)


def _decoder_inputs(likelihood, theta_per_cell, *, dtype=torch.float64, seed=3):
    g = torch.Generator().manual_seed(seed)
    n_cells, n_genes = 9, 17
    logits = torch.randn(n_cells, n_genes, generator=g, dtype=dtype) * 2
    library = torch.rand(n_cells, 1, generator=g, dtype=dtype) * 500 + 1
    x = torch.poisson(torch.softmax(logits, -1) * library * torch.rand(n_cells, 1, generator=g, dtype=dtype) * 2)
    x[0] = 0.0  # a cell without counts
    shape = (n_cells, n_genes) if theta_per_cell else (1, n_genes)
    theta = torch.exp(torch.randn(*shape, generator=g, dtype=dtype))
    zi_logits = torch.randn(n_cells, n_genes, generator=g, dtype=dtype) * 2
    inputs = {"logits": logits}
    if likelihood != "poisson":
        inputs["theta"] = theta
    if likelihood == "zinb":
        inputs["zi_logits"] = zi_logits
    return x, library, {k: v.requires_grad_() for k, v in inputs.items()}


def _through_params(x, library, likelihood, logits, theta=None, zi_logits=None, entries=None):
    """The reference: the decoder's parameters as :meth:`VAEModule.generative` forms them, then autograd."""
    log_scale = torch.log_softmax(logits, dim=-1)
    params = {"mu": torch.exp(log_scale) * library, "log_mu": log_scale + torch.log(library)}
    if theta is not None:
        params["theta"] = theta
    if zi_logits is not None:
        params["zi_logits"] = zi_logits
    return lk.log_likelihood(x, params, likelihood, entries=entries)


@pytest.mark.parametrize("likelihood", ["nb", "zinb", "poisson"])
@pytest.mark.parametrize("theta_per_cell", [False, True])
@pytest.mark.parametrize("with_entries", [False, True])
def test_decoder_likelihood_matches_autograd_through_the_parameters(likelihood, theta_per_cell, with_entries):
    """The hand-written backward gives autograd's gradients, for any weight per cell (float64, to rounding)."""
    x, library, inputs = _decoder_inputs(likelihood, theta_per_cell)
    entries = _entries(x) if with_entries else None
    ours = lk.decoder_log_likelihood(x, library=library, likelihood=likelihood, entries=entries, **inputs)
    reference = _through_params(x, library, likelihood, **inputs)
    torch.testing.assert_close(ours, reference, rtol=1e-12, atol=1e-10)
    weights = torch.linspace(-1.0, 2.0, x.shape[0], dtype=x.dtype)
    grads = torch.autograd.grad((ours * weights).sum(), list(inputs.values()))
    expected = torch.autograd.grad((reference * weights).sum(), list(inputs.values()))
    for name, got, want in zip(inputs, grads, expected, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10, msg=f"gradient of {name}")


@pytest.mark.parametrize("likelihood", ["nb", "zinb", "poisson"])
def test_decoder_likelihood_passes_gradcheck(likelihood):
    x, library, inputs = _decoder_inputs(likelihood, theta_per_cell=False, seed=5)
    entries = _entries(x)
    names = list(inputs)

    def fn(*tensors):
        return lk.decoder_log_likelihood(
            x, library=library, likelihood=likelihood, entries=entries, **dict(zip(names, tensors, strict=True))
        )

    assert torch.autograd.gradcheck(fn, tuple(inputs.values()))


def test_decoder_likelihood_in_float32_matches_the_float64_value():
    x, library, inputs = _decoder_inputs("zinb", theta_per_cell=False)
    exact = lk.decoder_log_likelihood(x, library=library, likelihood="zinb", **inputs)
    single = lk.decoder_log_likelihood(
        x.float(), library=library.float(), likelihood="zinb", **{k: v.detach().float() for k, v in inputs.items()}
    )
    assert single.dtype == torch.float32
    torch.testing.assert_close(single.double(), exact.detach(), rtol=1e-5, atol=1e-3)


def test_decoder_likelihood_refuses_mismatched_parameters():
    x, library, inputs = _decoder_inputs("zinb", theta_per_cell=False)
    with pytest.raises(ValueError, match="count likelihoods"):
        lk.decoder_log_likelihood(x, inputs["logits"], library, "normal")
    with pytest.raises(ValueError, match="'nb' takes theta and no zi_logits, but got neither"):
        lk.decoder_log_likelihood(x, inputs["logits"], library, "nb")
    with pytest.raises(ValueError, match="'nb' takes theta and no zi_logits, but got theta and zi_logits"):
        lk.decoder_log_likelihood(
            x, inputs["logits"], library, "nb", theta=inputs["theta"], zi_logits=inputs["zi_logits"]
        )


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_digamma_of_positive_values_matches_torch(dtype):
    y = torch.logspace(-5, 7, 20_001, dtype=torch.float64)
    y = torch.cat([y, torch.arange(1, 200, dtype=torch.float64), torch.arange(1, 200, dtype=torch.float64) + 0.37])
    exact = torch.digamma(y)
    ours = lk._digamma_positive(y.to(dtype)).double()
    if dtype == torch.float64:
        torch.testing.assert_close(ours, exact, rtol=1e-8, atol=1e-8)
    else:
        # float32 both ways: no further from the float64 value than torch's own float32 kernel, plus rounding
        theirs = torch.digamma(y.float()).double()
        assert torch.all((ours - exact).abs() <= (theirs - exact).abs() + 4e-6 * exact.abs().clamp_min(1.0))
