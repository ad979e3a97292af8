"""DBMModule and RBMModule on raw tensors, checked against exact sums over every configuration of tiny models."""

import itertools

import numpy as np
import pytest
import torch

from scdgm.modules import MODULE_CLASSES, DBMModule, LossOutput, RBMModule
from scdgm.modules._dbm import ais_temperatures, hidden_sizes, pretraining_factors


def _random_model(n_hidden=(4, 3), n_visible=6, scale=1.0, seed=0):
    torch.manual_seed(seed)
    module = DBMModule(n_visible, n_hidden)
    with torch.no_grad():
        for w in module.weights:
            w.normal_(0, scale)
        for b in module.biases:
            b.normal_(0, 0.5)
    module.base_logits.copy_(torch.linspace(-1, 1, n_visible))
    return module


def _all_visible(n):
    return torch.tensor(list(itertools.product((0.0, 1.0), repeat=n)))


def _exact_rbm_gradient(module, data):
    """Gradient of the mean log-likelihood of ``data`` wrt the RBM's weights and biases, by enumeration."""
    W, c = module.weights[0], module.biases[1]
    with torch.no_grad():
        v = _all_visible(module.n_visible)
        p = torch.exp(module.log_likelihood_exact(v))
        h_all = torch.sigmoid(v @ W + c)
        h_data = torch.sigmoid(data @ W + c)
        grad_w = data.T @ h_data / len(data) - (v * p[:, None]).T @ h_all
        grad_b = data.mean(0) - p @ v
        grad_c = h_data.mean(0) - p @ h_all
    return grad_w, grad_b, grad_c


@pytest.mark.parametrize("n_hidden", [(4, 3), (5,), (3, 2, 2)])
def test_ais_matches_exact_log_partition(n_hidden):
    module = _random_model(n_hidden)
    exact = module.log_partition_exact()
    estimate, error = module.log_partition_ais(200, 500, torch.Generator().manual_seed(1))
    assert abs(estimate - exact) < max(0.1, 4 * error)
    assert 0 < error < 0.1


def test_exact_likelihood_sums_to_one_and_bounds_it():
    module = _random_model((4, 3))
    v = _all_visible(6)
    log_p = module.log_likelihood_exact(v)
    assert torch.exp(log_p).sum().item() == pytest.approx(1.0, abs=1e-5)
    # the mean-field bound is below the exact unnormalised log-probability for a DBM ...
    exact_unnormalised = log_p + module.log_partition_exact()
    bound = module.variational_bound(v).detach()
    assert torch.all(bound <= exact_unnormalised + 1e-5)
    # ... and equal to it (the negative free energy) for an RBM
    rbm = _random_model((5,))
    rbm_exact = rbm.log_likelihood_exact(v) + rbm.log_partition_exact()
    torch.testing.assert_close(rbm.variational_bound(v).detach(), rbm_exact, atol=1e-5, rtol=0)


def test_exact_partition_refuses_large_models():
    with pytest.raises(ValueError, match="at most 20 units"):
        DBMModule(30, (25,)).log_partition_exact()


def test_pcd_gradient_matches_exact_gradient():
    module = _random_model((4,), scale=0.7)
    module.n_chains, module.gibbs_steps = 20_000, 100
    data = torch.bernoulli(torch.full((64, 6), 0.4), generator=torch.Generator().manual_seed(2))
    module.train()
    out = module({"x": data})
    out.loss.backward()
    grad_w, grad_b, grad_c = _exact_rbm_gradient(module, data)
    # the loss is minimised: its gradient is minus the log-likelihood gradient
    torch.testing.assert_close(-module.weights[0].grad, grad_w, atol=0.02, rtol=0)
    torch.testing.assert_close(-module.biases[0].grad, grad_b, atol=0.02, rtol=0)
    torch.testing.assert_close(-module.biases[1].grad, grad_c, atol=0.02, rtol=0)


def test_cd_gradient_matches_exact_gradient_with_long_chains():
    torch.manual_seed(3)
    rbm = RBMModule(6, 4, cd_steps=200)
    reference = DBMModule(6, 4)
    with torch.no_grad():
        rbm.weight.normal_(0, 0.7)
        rbm.visible_bias.normal_(0, 0.5)
        rbm.hidden_bias.normal_(0, 0.5)
        reference.weights[0].copy_(rbm.weight)
        reference.biases[0].copy_(rbm.visible_bias)
        reference.biases[1].copy_(rbm.hidden_bias)
    data = torch.bernoulli(torch.full((20_000, 6), 0.4), generator=torch.Generator().manual_seed(2))
    rbm.train()
    rbm({"x": data}).loss.backward()
    grad_w, grad_b, grad_c = _exact_rbm_gradient(reference, data)
    torch.testing.assert_close(-rbm.weight.grad, grad_w, atol=0.02, rtol=0)
    torch.testing.assert_close(-rbm.visible_bias.grad, grad_b, atol=0.02, rtol=0)
    torch.testing.assert_close(-rbm.hidden_bias.grad, grad_c, atol=0.02, rtol=0)


def test_dbm_gradient_is_data_minus_model_statistics():
    module = _random_model((4, 3))
    module.train()
    v = torch.bernoulli(torch.full((10, 6), 0.5))
    out = module({"x": v})
    out.loss.backward()
    mu = module.mean_field(v)
    chains = module._chains
    with torch.no_grad():
        for i in range(2):
            data_term = mu[i].T @ mu[i + 1] / len(v)
            model_term = chains[i].T @ chains[i + 1] / len(chains[i])
            torch.testing.assert_close(-module.weights[i].grad, data_term - model_term, atol=1e-5, rtol=0)


def test_mean_field_reaches_a_fixed_point():
    module = _random_model((4, 3), scale=0.5)
    v = torch.bernoulli(torch.full((5, 6), 0.5))
    with torch.no_grad():
        mu = module.mean_field(v, steps=200)
        for i in (1, 2):
            torch.testing.assert_close(mu[i], module.conditional(mu, i), atol=1e-5, rtol=0)


def test_gibbs_samples_follow_the_model():
    module = _random_model((4, 3), scale=0.8)
    generator = torch.Generator().manual_seed(4)
    states = module.initial_states(20_000, generator=generator)
    samples = module.sample(states, burn_in=100, n_per_chain=2, thinning=5, generator=generator)
    assert [tuple(s.shape) for s in samples] == [(2, 20_000, 6), (2, 20_000, 4), (2, 20_000, 3)]
    v = _all_visible(6)
    p = torch.exp(module.log_likelihood_exact(v))
    exact_means = p @ v
    for i in range(2):
        torch.testing.assert_close(samples[0][i].mean(0), exact_means, atol=0.02, rtol=0)


def test_sampling_is_seeded_and_leaves_the_global_rng_alone():
    module = _random_model((4, 3))
    before = torch.random.get_rng_state()

    def draw(seed):
        g = torch.Generator().manual_seed(seed)
        return module.sample(module.initial_states(30, generator=g), burn_in=5, generator=g)[0]

    torch.testing.assert_close(draw(7), draw(7))
    assert not torch.equal(draw(7), draw(8))
    module.log_partition_ais(10, 20, torch.Generator().manual_seed(0))
    assert torch.equal(torch.random.get_rng_state(), before)


def test_chains_start_at_the_given_cells():
    module = _random_model((4, 3))
    v = torch.bernoulli(torch.full((8, 6), 0.5))
    states = module.initial_states(8, visible=v, generator=torch.Generator().manual_seed(0))
    assert torch.equal(states[0], v)
    first = module.sample(states, burn_in=0, generator=torch.Generator().manual_seed(0))
    assert torch.equal(first[0][0], v)


def test_pseudo_likelihood_of_an_rbm_is_exact():
    module = _random_model((4,))
    v = _all_visible(6)[::5]
    log_p = module.log_likelihood_exact(v)
    exact = torch.zeros(len(v))
    for i in range(6):
        flipped = v.clone()
        flipped[:, i] = 1 - flipped[:, i]
        exact += log_p - torch.logaddexp(log_p, module.log_likelihood_exact(flipped))
    torch.testing.assert_close(module.pseudo_log_likelihood(v).detach(), exact, atol=1e-4, rtol=0)


def test_pseudo_likelihood_scores_each_cell_on_fixed_genes():
    module = _random_model((8, 4), n_visible=60)
    v = torch.bernoulli(torch.full((4, 60), 0.5))
    index = torch.tensor([3, 10, 11, 40])
    first = module.pseudo_log_likelihood(v, index)
    torch.testing.assert_close(module.pseudo_log_likelihood(v, index), first)
    # the same cell at another row position gets the same score
    torch.testing.assert_close(module.pseudo_log_likelihood(v[[1]], index[[1]]), first[[1]])


def test_forward_terms_and_rebuild():
    module = _random_model((4, 3))
    batch = {"x": torch.bernoulli(torch.full((12, 6), 0.5)), "index": torch.arange(12)}
    module.train()
    out = module(batch)
    assert isinstance(out, LossOutput) and out.n_obs == 12
    assert set(out.terms) == {"reconstruction", "pseudo_nll"}
    assert all(torch.isfinite(t) for t in out.terms.values())
    out.loss.backward()
    assert all(p.grad is not None for p in module.parameters())
    assert module.early_stopping_term == "pseudo_nll"
    module.eval()
    rebuilt = MODULE_CLASSES["DBMModule"](**module.init_kwargs)
    rebuilt.load_state_dict(module.state_dict())
    rebuilt.eval()
    torch.testing.assert_close(rebuilt(batch).terms["pseudo_nll"], module(batch).terms["pseudo_nll"])


def test_pretraining_factors_and_weights():
    assert pretraining_factors(1) == [(1.0, 1.0)]
    assert pretraining_factors(2) == [(2.0, 1.0), (1.0, 2.0)]
    assert pretraining_factors(3) == [(2.0, 1.0), (2.0, 2.0), (1.0, 2.0)]
    rbms = [RBMModule(6, 4), RBMModule(4, 3)]
    for rbm in rbms:
        with torch.no_grad():
            for p in rbm.parameters():
                p.normal_()
    module = DBMModule(6, (4, 3))
    module.load_pretrained(rbms)
    torch.testing.assert_close(module.weights[1], rbms[1].weight)
    torch.testing.assert_close(module.biases[1], rbms[0].hidden_bias + rbms[1].visible_bias)
    torch.testing.assert_close(module.biases[2], rbms[1].hidden_bias)
    with pytest.raises(ValueError, match="Expected 2 RBMs"):
        module.load_pretrained(rbms[:1])


def test_base_rates_start_the_visible_biases():
    module = DBMModule(4, 3)
    module.set_base_rates(np.array([0.5, 0.9, 0.0, 1.0]))
    expected = torch.logit(torch.tensor([0.5, 0.9, 1e-3, 1 - 1e-3]))
    torch.testing.assert_close(module.biases[0].detach(), expected)
    torch.testing.assert_close(module.base_logits, expected)


@pytest.mark.parametrize("bad", [0, -1, (), (5, 0), 2.5, "50", True, (4, None)])
def test_bad_hidden_sizes(bad):
    with pytest.raises(ValueError, match="n_hidden"):
        hidden_sizes(bad)


def test_hidden_sizes_accept_numpy():
    assert hidden_sizes(np.array([5, 3])) == (5, 3)
    assert hidden_sizes(np.int64(4)) == (4,)


def test_temperatures():
    betas = ais_temperatures(100)
    assert len(betas) == 100 and betas[0] == 0.0 and betas[-1] == 1.0
    assert all(b < c for b, c in itertools.pairwise(betas))
