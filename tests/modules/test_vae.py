"""VAEModule on raw tensors: every configuration trains, and each part does what it claims."""

import itertools

import pytest
import torch

from scdgm._choices import COUNT_LIKELIHOODS, LIKELIHOODS
from scdgm.modules import MODULE_CLASSES, BaseModule, LossOutput, VAEModule

N_GENES = 100


def _batch(likelihood="nb", n_cells=32, n_batch=0, seed=0):
    g = torch.Generator().manual_seed(seed)
    rates = torch.exp(torch.randn(1, N_GENES, generator=g)) * torch.exp(torch.randn(n_cells, 1, generator=g) * 0.3)
    counts = torch.poisson(rates * 2, generator=g)
    if likelihood in COUNT_LIKELIHOODS:
        x = counts
    elif likelihood == "normal":
        x = torch.log1p(counts)
    else:
        x = (counts > 0).float()
    batch = {"x": x, "library": counts.sum(1, keepdim=True).clamp_min(1.0), "index": torch.arange(n_cells)}
    if n_batch:
        batch["batch"] = torch.randint(0, n_batch, (n_cells,), generator=g)
    return batch


COMBINATIONS = list(itertools.product(("vae", "ae", "dae"), LIKELIHOODS, ("mlp", "linear")))


@pytest.mark.parametrize(("kind", "likelihood", "decoder"), COMBINATIONS)
def test_every_combination_trains(kind, likelihood, decoder):
    torch.manual_seed(0)
    module = VAEModule(N_GENES, n_latent=5, n_hidden=16, kind=kind, likelihood=likelihood, decoder=decoder)
    batch = _batch(likelihood)
    out = module(batch, kl_weight=0.5)
    assert isinstance(out, LossOutput)
    assert out.n_obs == 32
    assert out.loss.dim() == 0
    assert torch.isfinite(out.loss)
    assert set(out.terms) == {"reconstruction", "kl", "elbo", "loss"}
    assert all(t.dim() == 0 and not t.requires_grad for t in out.terms.values())
    torch.testing.assert_close(out.terms["elbo"], out.terms["reconstruction"] + out.terms["kl"])
    torch.testing.assert_close(out.terms["loss"], out.terms["reconstruction"] + 0.5 * out.terms["kl"])
    if kind == "vae":
        assert out.terms["kl"] > 0
    else:
        assert out.terms["kl"] == 0
    out.loss.backward()
    for name, param in module.named_parameters():
        assert param.grad is not None, name
        assert torch.isfinite(param.grad).all(), name
    # the reconstruction is -log p(x | z): positive for discrete data, where p <= 1
    if likelihood != "normal":
        assert out.terms["reconstruction"] > 0

    module.eval()
    mean, var = module.encode(batch["x"])
    assert mean.shape == var.shape == (32, 5)
    assert (var > 0).all() if kind == "vae" else (var == 0).all()
    torch.testing.assert_close(module.latent_mean(batch), mean)
    expression = module.expected_expression(batch)
    assert expression.shape == (32, N_GENES)
    assert torch.isfinite(expression).all()
    if likelihood == "bernoulli":
        assert ((expression > 0) & (expression < 1)).all()
    z = torch.randn(7, 5)
    drawn = module.sample_counts(z, torch.full((7, 1), 200.0), generator=torch.Generator().manual_seed(0))
    assert drawn.shape == (7, N_GENES)
    if likelihood in COUNT_LIKELIHOODS or likelihood == "bernoulli":
        assert (drawn >= 0).all()
        assert torch.equal(drawn, drawn.round())


@pytest.mark.parametrize("likelihood", ["nb", "zinb", "normal"])
@pytest.mark.parametrize("decoder", ["mlp", "linear"])
def test_batches_and_gene_batch_dispersion(likelihood, decoder):
    torch.manual_seed(0)
    module = VAEModule(
        N_GENES,
        n_batch=3,
        n_latent=4,
        n_hidden=16,
        n_layers=2,
        likelihood=likelihood,
        decoder=decoder,
        dispersion="gene-batch",
    )
    batch = _batch(likelihood, n_batch=3)
    out = module(batch)
    out.loss.backward()
    assert torch.isfinite(out.loss)
    assert module.log_dispersion.shape == (3, N_GENES)
    assert torch.isfinite(module.log_dispersion.grad).all()
    module.eval()
    params = module.generative(torch.zeros(4, 4), torch.full((4, 1), 100.0), torch.tensor([0, 1, 2, 0]))
    key = "var" if likelihood == "normal" else "theta"
    torch.testing.assert_close(params[key][0], torch.exp(module.log_dispersion[0]))
    torch.testing.assert_close(params[key][1], torch.exp(module.log_dispersion[1]))
    # the batch code changes the decoded output
    shifted = module.generative(torch.zeros(4, 4), torch.full((4, 1), 100.0), torch.tensor([1, 1, 2, 0]))
    mean_key = "mean" if likelihood == "normal" else "mu"
    assert not torch.allclose(params[mean_key][0], shifted[mean_key][0])
    torch.testing.assert_close(params[mean_key][1:], shifted[mean_key][1:])
    with pytest.raises(ValueError, match="n_batch=3; pass the batch codes"):
        module({"x": batch["x"], "library": batch["library"]})


def test_batch_covariate_equals_one_hot_concatenation():
    """The batch lookup is the concatenated one-hot input of a conditional VAE."""
    torch.manual_seed(0)
    module = VAEModule(N_GENES, n_batch=3, n_latent=4, n_hidden=8, use_batch_norm=False, dropout=0.0).eval()
    batch = _batch(n_batch=3)
    layer = module.encoder_layers[0].linear
    one_hot = torch.nn.functional.one_hot(batch["batch"], 3).float()
    weight = torch.cat([layer.linear.weight, layer.batch_weight.T], dim=1)
    expected = torch.cat([torch.log1p(batch["x"]), one_hot], dim=1) @ weight.T + layer.linear.bias
    torch.testing.assert_close(layer(torch.log1p(batch["x"]), batch["batch"]), expected)


def test_expected_expression_options():
    torch.manual_seed(0)
    module = VAEModule(N_GENES, n_batch=2, n_latent=4, n_hidden=16).eval()
    batch = _batch(n_batch=2)
    observed = module.expected_expression(batch)
    torch.testing.assert_close(observed.sum(1, keepdim=True), batch["library"])
    fixed = module.expected_expression(batch, library_size=1e4)
    torch.testing.assert_close(fixed.sum(1), torch.full((32,), 1e4))
    torch.testing.assert_close(fixed / 1e4, observed / batch["library"])
    as_batch_1 = module.expected_expression(batch, decode_batch=1)
    in_batch_1 = batch["batch"] == 1
    torch.testing.assert_close(as_batch_1[in_batch_1], observed[in_batch_1])
    assert not torch.allclose(as_batch_1[~in_batch_1], observed[~in_batch_1])
    # sampling z: close to, but not the same as, decoding the mean
    sampled = module.expected_expression(batch, n_samples=20)
    assert sampled.shape == observed.shape
    assert not torch.allclose(sampled, observed)
    torch.testing.assert_close(sampled.sum(1, keepdim=True), batch["library"])
    with pytest.raises(ValueError, match="decode_batch=2 is not a batch code"):
        module.expected_expression(batch, decode_batch=2)
    with pytest.raises(ValueError, match="n_samples must be"):
        module.expected_expression(batch, n_samples=0)
    with pytest.raises(ValueError, match="library_size must be positive"):
        module.expected_expression(batch, library_size=0.0)
    with pytest.raises(ValueError, match="needs a module with batches"):
        VAEModule(N_GENES).expected_expression(_batch(), decode_batch=0)


def test_dae_corrupts_only_in_training():
    torch.manual_seed(0)
    module = VAEModule(N_GENES, n_latent=4, n_hidden=16, kind="dae", corruption=0.5, dropout=0.0, use_batch_norm=False)
    batch = _batch()
    module.train()
    first, second = module(batch).loss, module(batch).loss
    assert not torch.equal(first, second)
    module.eval()
    torch.testing.assert_close(module(batch).loss, module(batch).loss, rtol=0, atol=0)
    # without corruption a training-mode forward is deterministic too (no dropout, no batch norm)
    clean = VAEModule(N_GENES, n_latent=4, n_hidden=16, kind="dae", corruption=0.0, dropout=0.0, use_batch_norm=False)
    assert torch.equal(clean(batch).loss, clean(batch).loss)


def test_ae_code_is_deterministic_and_kl_free():
    torch.manual_seed(0)
    module = VAEModule(N_GENES, n_latent=4, n_hidden=16, kind="ae", dropout=0.0, use_batch_norm=False)
    batch = _batch()
    first, second = module(batch, kl_weight=3.0), module(batch, kl_weight=3.0)
    assert torch.equal(first.loss, second.loss)
    assert first.terms["kl"] == 0
    torch.testing.assert_close(first.loss, first.terms["reconstruction"])
    assert module.var_encoder is None


def test_vae_kl_is_analytic():
    torch.manual_seed(0)
    module = VAEModule(N_GENES, n_latent=4, n_hidden=16).eval()
    batch = _batch()
    mean, var = module.encode(batch["x"])
    posterior = torch.distributions.Normal(mean, var.sqrt())
    prior = torch.distributions.Normal(torch.zeros_like(mean), torch.ones_like(var))
    expected = torch.distributions.kl_divergence(posterior, prior).sum(-1).mean()
    torch.testing.assert_close(module(batch).terms["kl"], expected)


@pytest.mark.parametrize("likelihood", COUNT_LIKELIHOODS)
@pytest.mark.parametrize("n_batch", [0, 3])
def test_training_loss_is_the_likelihood_of_the_generative_parameters(likelihood, n_batch):
    """forward's fused likelihood equals log_likelihood of what generative() returns, gradients included."""
    from scdgm.modules._likelihoods import log_likelihood

    torch.manual_seed(0)
    dispersion = "gene-batch" if n_batch and likelihood != "poisson" else "gene"
    module = VAEModule(N_GENES, n_batch=n_batch, n_latent=4, n_hidden=16, likelihood=likelihood, dispersion=dispersion)
    module = module.eval()
    batch = _batch(likelihood, n_batch=n_batch)
    with torch.random.fork_rng():
        torch.manual_seed(1)
        out = module(batch, kl_weight=0.0)  # the loss is then the reconstruction term alone
        torch.manual_seed(1)
        mean, var = module.encode(batch["x"], batch.get("batch"))
        z = mean + var.sqrt() * torch.randn_like(mean)
        params = module.generative(z, batch["library"], batch.get("batch"))
        expected = -log_likelihood(batch["x"], params, likelihood).mean()
    torch.testing.assert_close(out.loss, expected, rtol=1e-6, atol=1e-4)
    torch.testing.assert_close(out.terms["reconstruction"], expected.detach(), rtol=1e-6, atol=1e-4)
    ours = torch.autograd.grad(out.loss, list(module.parameters()), allow_unused=True)
    theirs = torch.autograd.grad(expected, list(module.parameters()), allow_unused=True)
    for (name, _), a, b in zip(module.named_parameters(), ours, theirs, strict=True):
        if b is None:
            assert a is None or not a.any(), name
        else:
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5, msg=f"gradient of {name}")


@pytest.mark.parametrize(("use_batch_norm", "likelihood"), [(True, "normal"), (False, "normal"), (True, "nb")])
def test_linear_loadings_are_the_decoder_map(use_batch_norm, likelihood):
    torch.manual_seed(0)
    module = VAEModule(
        N_GENES, n_batch=2, n_latent=6, decoder="linear", likelihood=likelihood, use_batch_norm=use_batch_norm
    )
    if use_batch_norm:
        # give the batch norm non-trivial running statistics and affine weights
        module.train()
        for seed in range(5):
            module(_batch(likelihood, n_batch=2, seed=seed))
        with torch.no_grad():
            module.output_norm.weight.uniform_(0.5, 2.0)
        assert not torch.allclose(module.output_norm.running_var, torch.ones(N_GENES))
    module.eval()
    loadings = module.linear_loadings()
    assert loadings.shape == (N_GENES, 6)
    assert not loadings.requires_grad
    z = torch.randn(3, 6)
    library = torch.full((3, 1), 500.0)
    batch_index = torch.tensor([0, 1, 1])
    key = "mean" if likelihood == "normal" else "log_mu"
    base = module.generative(z, library, batch_index)[key]
    for k in range(6):
        step = module.generative(z + torch.nn.functional.one_hot(torch.tensor(k), 6), library, batch_index)[key]
        difference = step - base
        if key == "log_mu":
            # the softmax over genes shifts every gene of a cell by the same constant
            difference = difference - difference.mean(1, keepdim=True)
            expected = (loadings[:, k] - loadings[:, k].mean()).expand_as(difference)
        else:
            expected = loadings[:, k].expand_as(difference)
        torch.testing.assert_close(difference, expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("use_batch_norm", [True, False])
def test_loadings_penalty_is_l1_of_the_effective_loadings(use_batch_norm):
    torch.manual_seed(0)
    module = VAEModule(N_GENES, n_latent=4, decoder="linear", loadings_l1=0.05, use_batch_norm=use_batch_norm)
    batch = _batch()
    module.train()
    for seed in range(3):  # non-trivial running statistics
        module(_batch(seed=seed))
    # evaluation mode: exactly the L1 norm of the reported loadings, outside the ELBO
    module.eval()
    out = module(batch)
    expected = 0.05 * module.linear_loadings().abs().sum()
    torch.testing.assert_close(out.terms["penalty"], expected)
    torch.testing.assert_close(out.loss, out.terms["elbo"] + expected)
    # training mode: the normalisation uses the minibatch's variance, and the penalty is differentiable
    module.train()
    out = module(batch)
    weight = module.output.linear.weight
    grad = torch.autograd.grad(out.loss, weight)[0]
    assert out.terms["penalty"] > 0 and torch.isfinite(grad).all() and grad.abs().sum() > 0
    if use_batch_norm:
        # batch normalisation makes the penalty blind to the overall scale of the weights (up to its eps)
        z = torch.randn(32, 4)
        with torch.no_grad():
            before = module._effective_loadings(z).abs().sum()
            weight.mul_(3.0)
            after = module._effective_loadings(z).abs().sum()
        torch.testing.assert_close(before, after, rtol=1e-2, atol=0)


def test_no_penalty_term_without_loadings_l1():
    module = VAEModule(N_GENES, n_latent=4, decoder="linear")
    assert "penalty" not in module(_batch()).terms


def test_linear_loadings_need_linear_decoder():
    with pytest.raises(ValueError, match='decoder="linear"'):
        VAEModule(N_GENES).linear_loadings()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"kind": "gan"}, "kind='gan' is not supported. Choose one of \\['vae', 'ae', 'dae'\\]"),
        (
            {"likelihood": "gamma"},
            "likelihood='gamma' is not supported. Choose one of \\['nb', 'zinb', 'poisson', 'normal', 'bernoulli'\\]",
        ),
        ({"decoder": "conv"}, "decoder='conv' is not supported. Choose one of \\['mlp', 'linear'\\]"),
        ({"dispersion": "cell"}, "dispersion='cell' is not supported. Choose one of \\['gene', 'gene-batch'\\]"),
        ({"n_latent": 100}, "n_latent=100 must be smaller than n_input=100"),
        ({"n_latent": 0}, "n_latent must be an integer >= 1"),
        ({"n_hidden": 2.5}, "n_hidden must be an integer >= 1"),
        ({"n_layers": 0}, "n_layers must be an integer >= 1"),
        ({"n_batch": -1}, "n_batch must be an integer >= 0"),
        ({"n_batch": True}, "n_batch must be an integer >= 0"),
        ({"dropout": 1.0}, r"dropout must be a finite number in \[0, 1\)"),
        ({"corruption": -0.1}, r"corruption must be a finite number in \[0, 1\)"),
        ({"dispersion": "gene-batch"}, r"needs batches \(n_batch > 0\)"),
        ({"dispersion": "gene-batch", "n_batch": 2, "likelihood": "poisson"}, "no dispersion parameter"),
        ({"use_batch_norm": "yes"}, "use_batch_norm must be True or False"),
        ({"loadings_l1": -0.1, "decoder": "linear"}, "loadings_l1 must be a finite number >= 0"),
        ({"loadings_l1": float("inf"), "decoder": "linear"}, "loadings_l1 must be a finite number >= 0"),
        ({"loadings_l1": 0.1}, 'penalises the gene loadings of a linear decoder; use decoder="linear"'),
    ],
)
def test_invalid_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        VAEModule(N_GENES, **kwargs)


def test_wrong_input_shape():
    with pytest.raises(ValueError, match=r"Expected input of shape \(cells, 100\), got \(4, 99\)"):
        VAEModule(N_GENES)({"x": torch.zeros(4, 99), "library": torch.ones(4, 1)})


@pytest.mark.parametrize(
    "kwargs", [{}, {"n_batch": 2, "likelihood": "zinb", "dispersion": "gene-batch", "decoder": "linear"}]
)
def test_init_kwargs_rebuild_identical_module(kwargs):
    torch.manual_seed(0)
    module = VAEModule(N_GENES, n_latent=4, n_hidden=16, **kwargs)
    batch = _batch(module.likelihood, n_batch=module.n_batch)
    module.train()
    module(batch)  # move the batch-norm running statistics off their defaults
    module.eval()
    assert all(type(v) in (int, float, str, bool) for v in module.init_kwargs.values())
    rebuilt = MODULE_CLASSES[type(module).__name__](**module.init_kwargs)
    state = {name: tensor.numpy().copy() for name, tensor in module.state_dict().items()}
    rebuilt.load_state_dict({name: torch.as_tensor(array) for name, array in state.items()})
    rebuilt.eval()
    assert rebuilt.init_kwargs == module.init_kwargs
    torch.testing.assert_close(rebuilt.latent_mean(batch), module.latent_mean(batch), rtol=0, atol=0)
    torch.testing.assert_close(rebuilt.expected_expression(batch), module.expected_expression(batch), rtol=0, atol=0)
    torch.manual_seed(1)
    expected = module(batch).loss
    torch.manual_seed(1)
    torch.testing.assert_close(rebuilt(batch).loss, expected, rtol=0, atol=0)


@pytest.mark.parametrize("likelihood", ["nb", "bernoulli"])
def test_adam_lowers_the_loss_on_a_tiny_problem(likelihood):
    """Two cell types with different gene programmes: training must learn them and separate the codes."""
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    n_cells, n_genes = 128, 30
    types = torch.arange(n_cells) % 2
    programmes = torch.exp(torch.randn(2, n_genes, generator=g) * 1.5)
    counts = torch.poisson(programmes[types] * 3, generator=g)
    x = counts if likelihood == "nb" else (counts > 2).float()
    batch = {"x": x, "library": counts.sum(1, keepdim=True)}
    module = VAEModule(n_genes, n_latent=2, n_hidden=16, likelihood=likelihood)
    optimizer = torch.optim.Adam(module.parameters(), lr=1e-2)
    module.eval()
    before = module(batch).terms["elbo"]
    module.train()
    for _ in range(300):
        optimizer.zero_grad()
        module(batch).loss.backward()
        optimizer.step()
    module.eval()
    after = module(batch).terms["elbo"]
    assert after < 0.8 * before
    latent = module.latent_mean(batch)
    gap = (latent[types == 0].mean(0) - latent[types == 1].mean(0)).norm()
    spread = latent[types == 0].std(0).norm() + latent[types == 1].std(0).norm()
    assert gap > 2 * spread


def test_registry():
    assert MODULE_CLASSES["VAEModule"] is VAEModule
    assert all(issubclass(cls, BaseModule) and cls.__name__ == name for name, cls in MODULE_CLASSES.items())
