"""Integrated gradients on raw tensors: quadrature rules, captum agreement, completeness, the fast path."""

import numpy as np
import pytest
import torch
from torch import nn

from scdgm.modules import VAEModule
from scdgm.modules._attribution import (
    LinearFirst,
    SampledBaselines,
    accumulate,
    bytes_per_cell,
    classifier_head,
    classifier_on_inputs,
    completeness_error,
    integrated_gradients,
    path_rule,
    vae_encoder,
)

captum_attr = pytest.importorskip("captum.attr")


def _relative(ours: torch.Tensor, reference: torch.Tensor) -> float:
    return float((ours - reference).norm() / reference.norm())


def _mlp(n_in=12, n_hidden=16, n_out=3, seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Linear(n_in, n_hidden), nn.Tanh(), nn.Linear(n_hidden, n_hidden), nn.ReLU(), nn.Linear(n_hidden, n_out)
    ).eval()


def _as_linear_first(net: nn.Sequential) -> LinearFirst:
    return LinearFirst(net[0].weight, lambda context: net[0].bias, lambda z, context: net[1:](z))


def _captum(forward, inputs, baselines, target, method, n_steps, extra=None):
    ig = captum_attr.IntegratedGradients(forward)
    return ig.attribute(
        inputs, baselines=baselines, target=target, additional_forward_args=extra, n_steps=n_steps, method=method
    )


# ------------------------------------------------------------------------------------- quadrature rules


@pytest.mark.parametrize(
    "method", ["gausslegendre", "riemann_left", "riemann_right", "riemann_middle", "riemann_trapezoid"]
)
def test_rules_are_normalised_and_on_the_unit_interval(method):
    alphas, weights = path_rule(method, 7)
    assert alphas.shape == weights.shape == (7,)
    assert np.all((alphas >= 0) & (alphas <= 1))
    np.testing.assert_allclose(weights.sum(), 1.0, rtol=1e-12)


def test_gauss_legendre_is_exact_for_polynomials():
    alphas, weights = path_rule("gausslegendre", 5)
    # degree 9 = 2 * 5 - 1: integral of a^9 over [0, 1] is 1/10
    np.testing.assert_allclose((weights * alphas**9).sum(), 0.1, rtol=1e-12)


def test_rule_errors():
    with pytest.raises(ValueError, match="n_steps must be an integer >= 1"):
        path_rule("gausslegendre", 0)
    with pytest.raises(ValueError, match="needs n_steps >= 2"):
        path_rule("riemann_trapezoid", 1)
    with pytest.raises(ValueError, match="method='simpson' is not supported"):
        path_rule("simpson", 5)


# ------------------------------------------------------------------------------------- captum agreement


@pytest.mark.parametrize("fast", [False, True])
@pytest.mark.parametrize(
    "method", ["gausslegendre", "riemann_trapezoid", "riemann_left", "riemann_right", "riemann_middle"]
)
def test_mlp_agrees_with_captum(method, fast):
    net = _mlp()
    torch.manual_seed(1)
    x, base = torch.randn(9, 12), torch.randn(9, 12) * 0.1
    n_steps = 24
    model = _as_linear_first(net) if fast else (lambda u, context: net(u))
    ours = integrated_gradients(model, x, base, n_steps=n_steps, method=method)
    assert ours.attributions.shape == (9, 3, 12)
    # captum's riemann_trapezoid uses steps of 1/n with halved ends (weights summing to (n - 1)/n);
    # ours is the textbook trapezoid (steps of 1/(n - 1)), so the two differ by exactly n/(n - 1).
    scale = n_steps / (n_steps - 1) if method == "riemann_trapezoid" else 1.0
    for t in range(3):
        reference = _captum(net, x, base, t, method, n_steps) * scale
        assert _relative(ours.attributions[:, t], reference) < 1e-4
        torch.testing.assert_close(
            ours.attributions[:, t], reference, rtol=1e-4, atol=1e-4 * float(reference.abs().max())
        )


@pytest.mark.parametrize("method", ["gausslegendre", "riemann_trapezoid"])
@pytest.mark.parametrize("input_space", ["encoder", "data"])
def test_vae_encoder_agrees_with_captum(method, input_space):
    torch.manual_seed(0)
    module = VAEModule(30, n_batch=2, n_latent=4, n_hidden=16, n_layers=2).eval()
    counts = torch.poisson(torch.rand(10, 30) * 4)
    batch = torch.randint(0, 2, (10,))
    n_steps = 20
    model = vae_encoder(module, input_space=input_space)
    assert isinstance(model, LinearFirst) == (input_space == "encoder")
    if input_space == "encoder":
        inputs = torch.log1p(counts)

        def forward(u, b):  # the encoder from its first layer on: what it computes after its own log1p
            return module.encode(torch.expm1(u), b)[0]
    else:
        inputs = counts

        def forward(x, b):
            return module.encode(x, b)[0]

    ours = integrated_gradients(model, inputs, None, context={"batch": batch}, n_steps=n_steps, method=method)
    scale = n_steps / (n_steps - 1) if method == "riemann_trapezoid" else 1.0
    for t in range(4):
        reference = _captum(forward, inputs, torch.zeros_like(inputs), t, method, n_steps, extra=(batch,)) * scale
        assert _relative(ours.attributions[:, t], reference) < 1e-4


@pytest.mark.parametrize("likelihood", ["nb", "normal"])
@pytest.mark.parametrize(("n_batch", "n_layers"), [(0, 1), (2, 1), (3, 2)])
def test_vae_encoder_in_two_parts_is_encode(likelihood, n_batch, n_layers):
    """The public pieces the fast path is built from recompose the encoder's mean exactly."""
    torch.manual_seed(0)
    module = VAEModule(15, n_batch=n_batch, n_latent=3, n_hidden=8, n_layers=n_layers, likelihood=likelihood)
    for _ in range(2):  # moves the BatchNorm running statistics away from their defaults
        train = {"x": torch.poisson(torch.rand(16, 15) * 4), "library": torch.full((16, 1), 30.0)}
        if n_batch:
            train["batch"] = torch.randint(0, n_batch, (16,))
        module(train)
    module.eval()
    x = torch.poisson(torch.rand(7, 15) * 4)
    batch = torch.randint(0, n_batch, (7,)) if n_batch else None
    with torch.no_grad():
        z = module.encoder_input(x) @ module.encoder_first_weight().T + module.encoder_first_offset(batch)
        torch.testing.assert_close(module.encoder_rest(z, batch), module.encode(x, batch)[0])
    weight = module.encoder_first_weight()
    assert any(weight is p for p in module.parameters())  # the parameter, not a copy
    if n_batch:
        with pytest.raises(ValueError, match="pass the batch codes"):
            module.encoder_first_offset(None)
        with pytest.raises(ValueError, match="pass the batch codes"):
            module.encoder_rest(z, None)


def test_accumulate_equals_one_call_over_all_cells():
    """Chunked sums, group means, per-cell values and completeness errors match one call on every cell."""
    net = _mlp(n_out=3)
    model = _as_linear_first(net)
    torch.manual_seed(3)
    x, base = torch.randn(10, 12), torch.randn(1, 12) * 0.1
    cells = torch.tensor([0, 2, 3, 5, 6, 7, 9])
    codes = torch.tensor([0, 1, 1, -1, 0, 1, 1, 0, -1, 0])  # -1: no group
    batches = [{"x": x[i], "index": i} for i in cells.split(3)]
    out = accumulate(
        model,
        batches,
        n_obs=10,
        baseline=base,
        targets=[2, 0],
        group_codes=codes,
        n_groups=3,
        n_steps=16,
        store_per_cell=True,
    )
    whole = integrated_gradients(model, x[cells], base, targets=[2, 0], n_steps=16)
    a = whole.attributions.double()
    assert out.n_cells == 7
    np.testing.assert_allclose(out.mean, a.mean(0).numpy(), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(out.mean_abs, a.abs().mean(0).numpy(), rtol=1e-5, atol=1e-7)
    change = (whole.output - whole.baseline_output).double().mean(0).numpy()
    np.testing.assert_allclose(out.output_change, change, rtol=1e-5, atol=1e-7)
    assert np.isnan(out.delta[[1, 4, 8]]).all()
    np.testing.assert_allclose(out.delta[cells.numpy()], whole.delta.numpy(), rtol=1e-4, atol=1e-7)
    assert np.isnan(out.per_cell[:, [1, 4, 8]]).all()
    np.testing.assert_allclose(out.per_cell[:, cells.numpy()], a.transpose(0, 1).numpy(), rtol=1e-5, atol=1e-7)
    in_group = codes[cells].numpy()
    np.testing.assert_array_equal(out.group_sizes, [3, 3, 0])  # cell 3 has no group, group 2 no cells
    for g in range(2):
        np.testing.assert_allclose(out.group_means[g], a[in_group == g].mean(0).numpy(), rtol=1e-5, atol=1e-7)
    np.testing.assert_array_equal(out.group_means[2], 0.0)


@pytest.mark.parametrize("fast", [True, False])
def test_sampled_baselines_average_the_paths_from_each(fast):
    """Expected gradients: each cell's attributions are the mean over its reference cells of the
    attributions against each; they sum to F(x) minus the mean of F over those references."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(12, 16), nn.Tanh(), nn.Linear(16, 3)).eval()  # smooth: the rule is exact enough
    model = _as_linear_first(net) if fast else (lambda u, c: net(u))
    torch.manual_seed(4)
    x = torch.randn(8, 12)
    references = torch.tensor([[3, 5], [4, 4], [0, 7], [1, 6], [2, 0], [7, 1], [5, 2], [6, 3]])
    served = []

    def fetch(rows):
        served.append(rows.clone())
        return x[rows]

    sampled = SampledBaselines(references, fetch, n_features=12)
    batches = [{"x": x[i], "index": i} for i in torch.arange(8).split(3)]
    out = accumulate(model, batches, n_obs=8, baseline=sampled, targets=[0, 2], n_steps=24, store_per_cell=True)
    assert sampled.n_baselines == 2
    torch.testing.assert_close(torch.cat(served), references.reshape(-1))  # cell-major, chunk by chunk
    each = [integrated_gradients(model, x, x[references[:, k]], targets=[0, 2], n_steps=24) for k in range(2)]
    expected = (each[0].attributions + each[1].attributions) / 2
    np.testing.assert_allclose(out.per_cell, expected.transpose(0, 1).numpy(), rtol=1e-5, atol=1e-6)
    change = each[0].output - (each[0].baseline_output + each[1].baseline_output) / 2
    np.testing.assert_allclose(out.output_change, change.double().mean(0).numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out.per_cell.sum(-1).T, change.numpy(), rtol=1e-3, atol=1e-4)  # complete
    assert float(np.max(out.delta)) < 1e-3


def test_fast_path_equals_generic_path_with_per_cell_baselines():
    net = _mlp(n_out=2)
    torch.manual_seed(2)
    x, base = torch.randn(6, 12), torch.randn(6, 12)
    fast = integrated_gradients(_as_linear_first(net), x, base, n_steps=16)
    slow = integrated_gradients(lambda u, c: net(u), x, base, n_steps=16)
    torch.testing.assert_close(fast.attributions, slow.attributions, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(fast.output, slow.output)
    torch.testing.assert_close(fast.baseline_output, slow.baseline_output)


# ------------------------------------------------------------------------------------- completeness


def test_completeness_on_a_smooth_model():
    net = nn.Sequential(nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, 3)).double().eval()
    x = torch.randn(5, 8, dtype=torch.float64)
    result = integrated_gradients(lambda u, c: net(u), x, None, n_steps=30, method="gausslegendre")
    np.testing.assert_allclose(
        result.attributions.sum(-1).numpy(), (result.output - result.baseline_output).numpy(), rtol=1e-8, atol=1e-10
    )
    assert float(result.delta.max()) < 1e-8
    coarse = integrated_gradients(lambda u, c: net(u), x, None, n_steps=2, method="riemann_right")
    assert float(coarse.delta.max()) > 1e-3  # the error measure does see a coarse rule


def test_completeness_error_definition():
    attributions = torch.tensor([[[1.0, 1.0], [0.0, 0.5]]])  # 1 cell, 2 targets, 2 features
    difference = torch.tensor([[2.2, 0.4]])
    # gaps 0.2 and 0.1, common scale 2.2
    np.testing.assert_allclose(completeness_error(attributions, difference).numpy(), [0.2 / 2.2], rtol=1e-6)


# ------------------------------------------------------------------------------------- classifier adaptors


@pytest.mark.parametrize(("n_layers", "n_components"), [(0, None), (1, None), (2, None), (1, 4)])
def test_classifier_fast_model_equals_posterior_predictive(n_layers, n_components):
    from scdgm.modules import BayesianClassifierModule

    torch.manual_seed(0)
    module = BayesianClassifierModule(
        6, 3, n_hidden=5, n_layers=n_layers, init_scale=0.3, n_components=n_components
    ).eval()
    rotation = None if n_components is None else torch.linalg.qr(torch.randn(6, 6))[0][:, :n_components]
    module.set_standardization(torch.rand(6), torch.rand(6) + 0.5, rotation)
    weights = module.draw_weights(7)
    x = torch.randn(4, 6)
    expected = module.probabilities(x, weights).mean(0)
    head = classifier_head(module, weights)
    fast = classifier_on_inputs(module, weights)
    torch.testing.assert_close(head(x, {}), expected)
    torch.testing.assert_close(fast(x, {}), expected, rtol=1e-5, atol=1e-6)
    a = integrated_gradients(fast, x, None, n_steps=12)
    b = integrated_gradients(head, x, None, n_steps=12)
    torch.testing.assert_close(a.attributions, b.attributions, rtol=1e-4, atol=1e-6)
    # probabilities sum to one, so the attributions of all classes cancel gene by gene
    torch.testing.assert_close(a.attributions.sum(1), torch.zeros(4, 6), rtol=0, atol=1e-5)


def test_encoder_then_classifier_agrees_with_captum():
    from scdgm.modules import BayesianClassifierModule

    torch.manual_seed(0)
    vae = VAEModule(20, n_latent=3, n_hidden=8).eval()
    classifier = BayesianClassifierModule(3, 2, n_hidden=4, init_scale=0.3).eval()
    weights = classifier.draw_weights(5)
    head = classifier_head(classifier, weights, output="logit")
    model = vae_encoder(vae).then(head)
    u = torch.log1p(torch.poisson(torch.rand(6, 20) * 3))
    ours = integrated_gradients(model, u, None, n_steps=16)

    def forward(v):
        return head(vae.encode(torch.expm1(v))[0], {})

    for t in range(2):
        assert (
            _relative(ours.attributions[:, t], _captum(forward, u, torch.zeros_like(u), t, "gausslegendre", 16)) < 1e-4
        )


# ------------------------------------------------------------------------------------- errors and sizing


def test_errors():
    net = _mlp()
    model = _as_linear_first(net)
    x = torch.randn(3, 12)
    with pytest.raises(ValueError, match="out of range"):
        integrated_gradients(model, x, None, targets=[3])
    with pytest.raises(ValueError, match="baselines must have shape"):
        integrated_gradients(model, x, torch.zeros(2, 12))
    with pytest.raises(ValueError, match="n_steps must be"):
        integrated_gradients(model, x, None, n_steps=0)
    with pytest.raises(ValueError, match="fast=True needs a LinearFirst"):
        integrated_gradients(lambda u, c: net(u), x, None, fast=True)


def test_fast_path_needs_less_memory():
    slow = bytes_per_cell(2000, 50, 10, n_hidden=128, fast=False)
    fast = bytes_per_cell(2000, 50, 10, n_hidden=128, fast=True)
    assert fast * 5 < slow
