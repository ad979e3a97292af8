"""The Bayesian classifier module on raw tensors: network, prior, KL, loss, predictive, state, SVI and NUTS."""

import math

import numpy as np
import pytest
import torch

from scdgm.modules import MODULE_CLASSES, BayesianClassifierModule
from scdgm.modules._bayes import mlp_logits


def _module(n_input=3, n_classes=2, **kwargs):
    torch.manual_seed(0)
    return BayesianClassifierModule(n_input, n_classes, **kwargs)


def _blobs(n_per_class=40, n_input=2, seed=0):
    """Three well separated Gaussian blobs."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.tensor([[4.0, 0.0], [-4.0, 0.0], [0.0, 4.0]])[:, :n_input]
    x = torch.cat([c + torch.randn(n_per_class, n_input, generator=g) for c in centres])
    y = torch.arange(3).repeat_interleave(n_per_class)
    return x, y


def test_mlp_logits_shapes_and_logistic_regression():
    x = torch.randn(5, 3)
    w, b = torch.randn(4, 3), torch.randn(4)
    out = mlp_logits(x, {"weight_0": w, "bias_0": b}, n_layers=0)
    torch.testing.assert_close(out, x @ w.T + b)
    draws = {"weight_0": torch.randn(7, 6, 3), "bias_0": torch.randn(7, 6), "weight_1": torch.randn(7, 2, 6)}
    draws["bias_1"] = torch.randn(7, 2)
    out = mlp_logits(x, draws, n_layers=1)
    assert out.shape == (7, 5, 2)
    hidden = torch.relu(x @ draws["weight_0"][3].T + draws["bias_0"][3])
    torch.testing.assert_close(out[3], hidden @ draws["weight_1"][3].T + draws["bias_1"][3])


def test_prior_scales_with_fan_in():
    module = _module(n_input=16, n_classes=3, n_hidden=4, prior_scale=2.0)
    assert module.model.site_names == ["weight_0", "bias_0", "weight_1", "bias_1"]
    assert module.model.site_shape("weight_0") == (4, 16) and module.model.site_shape("bias_1") == (3,)
    prior = module.model.prior("weight_0")
    assert prior.event_shape == (4, 16)
    np.testing.assert_allclose(prior.base_dist.scale.unique().item(), 2.0 / 4.0)
    np.testing.assert_allclose(module.model.prior("weight_1").base_dist.scale.unique().item(), 2.0 / 2.0)
    np.testing.assert_allclose(module.model.prior("bias_0").base_dist.scale.unique().item(), 2.0)


def test_kl_matches_the_closed_form():
    module = _module(n_input=3, n_classes=2, n_hidden=4, prior_scale=1.5)
    expected = 0.0
    with torch.no_grad():
        kl_total = float(module.kl_divergence())
    for name in module.model.site_names:
        loc, scale = (t.detach() for t in module.guide_loc_scale(name))
        prior_scale = module.model.prior(name).base_dist.scale
        kl = torch.log(prior_scale / scale) + (scale**2 + loc**2) / (2 * prior_scale**2) - 0.5
        expected += float(kl.sum())
    assert math.isclose(kl_total, expected, rel_tol=1e-5)
    assert expected > 0


def test_loss_terms():
    module = _module(n_input=2, n_classes=3, n_hidden=5, n_train=50)
    x, y = _blobs(5)
    module.eval()
    torch.manual_seed(1)
    out = module({"x": x, "labels": y}, kl_weight=0.25)
    assert out.n_obs == 15
    torch.testing.assert_close(out.terms["kl"], module.kl_divergence().detach() / 50)
    torch.testing.assert_close(out.terms["loss"], out.terms["nll"] + 0.25 * out.terms["kl"])
    assert set(out.terms) == {"nll", "kl", "loss"}
    # training draws one weight set per step: two steps differ, and the loss carries gradients
    module.train()
    first = module({"x": x, "labels": y})
    second = module({"x": x, "labels": y})
    assert not torch.equal(first.terms["nll"], second.terms["nll"])
    first.loss.backward()
    locs = [p for name, p in module.named_parameters() if "locs" in name]
    assert locs and all(p.grad is not None for p in locs)


def test_draw_weights_and_predictive_summary():
    module = _module(n_input=3, n_classes=4, n_hidden=6)
    draws = module.draw_weights(10)
    assert draws["weight_0"].shape == (10, 6, 3) and draws["bias_1"].shape == (10, 4)
    single = module.draw_weights()
    assert single["weight_1"].shape == (4, 6)
    means = module.draw_weights(mean=True)
    loc, _ = module.guide_loc_scale("weight_0")
    torch.testing.assert_close(means["weight_0"], loc)
    x = torch.randn(8, 3)
    summary = module.predictive_summary(x, draws)
    assert summary.shape == (8, 5)
    proba, aleatoric = summary[:, :4], summary[:, 4]
    torch.testing.assert_close(proba.sum(1), torch.ones(8))
    entropy = -(proba * proba.log()).sum(1)
    assert torch.all(aleatoric <= entropy + 1e-5)  # mutual information >= 0
    # identical draws carry no epistemic uncertainty
    same = {k: v[:1].expand(5, *v.shape[1:]) for k, v in draws.items()}
    summary = module.predictive_summary(x, same)
    proba = summary[:, :4]
    torch.testing.assert_close(summary[:, 4], -(proba * proba.log()).sum(1), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(proba, module.probabilities(x, draws)[0:1].mean(0))


def test_standardization_is_applied_and_floored():
    module = _module(n_input=2)
    module.set_standardization(torch.tensor([1.0, -2.0]), torch.tensor([2.0, 0.0]))
    assert module.feature_sd[1] == pytest.approx(1e-6)
    torch.testing.assert_close(module.standardize(torch.tensor([[3.0, -2.0]])), torch.tensor([[1.0, 0.0]]))


def _rotation(n_input, n_components, seed=0):
    """Random orthonormal columns ``(n_input, n_components)``."""
    q, _ = torch.linalg.qr(torch.randn(n_input, n_input, generator=torch.Generator().manual_seed(seed)))
    return q[:, :n_components].contiguous()


def test_principal_axes_keep_the_prior_of_the_features():
    module = _module(n_input=9, n_classes=3, n_hidden=4, prior_scale=3.0, n_components=4)
    assert module.model.site_shape("weight_0") == (4, 4)
    # the isotropic prior of the 9 features, seen along 4 orthonormal axes: the same scale per weight
    np.testing.assert_allclose(module.model.prior("weight_0").base_dist.scale.unique().item(), 3.0 / 3.0)
    rotation = _rotation(9, 4)
    mean, sd = torch.randn(9), torch.rand(9) + 0.5
    module.set_standardization(mean, sd, rotation)
    x = torch.randn(5, 9)
    torch.testing.assert_close(module.standardize(x), ((x - mean) / sd) @ rotation)
    # the first layer along the axes is the same map as its weights carried back to the features
    weights = module.draw_weights(3)
    plain = _module(n_input=9, n_classes=3, n_hidden=4)
    plain.set_standardization(mean, sd)
    in_features = {**weights, "weight_0": module.feature_weights(weights["weight_0"])}
    assert in_features["weight_0"].shape == (3, 4, 9)
    torch.testing.assert_close(
        plain.probabilities(x, in_features), module.probabilities(x, weights), rtol=1e-5, atol=1e-6
    )


def test_rotation_is_required_exactly_with_n_components():
    rotated, plain = _module(n_input=3, n_components=2), _module(n_input=3)
    mean, sd = torch.zeros(3), torch.ones(3)
    with pytest.raises(ValueError, match="built with n_components and needs a rotation"):
        rotated.set_standardization(mean, sd)
    with pytest.raises(ValueError, match="without n_components; it takes no rotation"):
        plain.set_standardization(mean, sd, _rotation(3, 2))
    with pytest.raises(ValueError, match=r"rotation must have shape \(3, 2\), got \(3, 3\)"):
        rotated.set_standardization(mean + 1.0, sd, _rotation(3, 3))
    # nothing is stored by a refused call
    assert torch.equal(rotated.feature_mean, torch.zeros(3))
    assert torch.equal(rotated.rotation, torch.eye(3, 2))
    torch.testing.assert_close(plain.feature_weights(torch.ones(2, 3)), torch.ones(2, 3))


@pytest.mark.parametrize("n_components", [None, 2])
def test_state_dict_rebuilds_the_same_module(n_components):
    module = _module(n_input=3, n_classes=3, n_hidden=4, n_train=10, n_components=n_components)
    rotation = None if n_components is None else _rotation(3, n_components)
    module.set_standardization(torch.tensor([1.0, 2.0, 3.0]), torch.tensor([0.5, 1.0, 2.0]), rotation)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(0.1)
    torch.manual_seed(5)
    rebuilt = MODULE_CLASSES["BayesianClassifierModule"](**module.init_kwargs)
    rebuilt.load_state_dict(module.state_dict())
    x = torch.randn(6, 3)
    torch.testing.assert_close(rebuilt.kl_divergence(), module.kl_divergence())
    torch.manual_seed(3)
    a = module.predictive_summary(x, module.draw_weights(20))
    torch.manual_seed(3)
    b = rebuilt.predictive_summary(x, rebuilt.draw_weights(20))
    torch.testing.assert_close(a, b)


def test_svi_through_the_engine_learns_separable_classes():
    from scdgm.train import fit

    x, y = _blobs(30)
    module = _module(n_input=2, n_classes=3, n_hidden=8, n_train=len(y), prior_scale=3.0)
    module.set_standardization(x.mean(0), x.std(0))
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))
    batches = [{"x": x[order[i : i + 45]], "labels": y[order[i : i + 45]]} for i in (0, 45)]
    result = fit(module, batches, max_epochs=40, lr=0.03, weight_decay=0.0, kl_warmup_epochs=5)
    assert result.history["train_nll"][-1] < result.history["train_nll"][0]
    torch.manual_seed(0)
    proba = module.predictive_summary(x, module.draw_weights(50))[:, :3]
    assert (proba.argmax(1) == y).float().mean() > 0.95


def test_nuts_keeps_draws():
    x, y = _blobs(8)
    module = _module(n_input=2, n_classes=3, n_layers=0, n_posterior_samples=12)
    assert module.inference == "nuts"
    module.set_standardization(x.mean(0), x.std(0))
    torch.manual_seed(0)
    diagnostics = module.run_nuts(x, y, num_warmup=10, max_tree_depth=5)
    assert set(diagnostics) == {"divergences", "acceptance_rate", "min_n_eff", "max_r_hat", "step_size"}
    assert 0 < diagnostics["acceptance_rate"] <= 1 and diagnostics["step_size"] > 0
    draws = module.posterior.weight_0
    assert draws.shape == (12, 3, 2) and torch.all(draws.std(0) > 0)
    picked = module.draw_weights(4)["weight_0"]
    torch.testing.assert_close(picked, draws[[0, 4, 7, 11]])
    assert module.draw_weights()["weight_0"].shape == (12, 3, 2)
    proba = module.predictive_summary(x, module.draw_weights())[:, :3]
    assert (proba.argmax(1) == y).float().mean() > 0.9
    assert "posterior.weight_0" in module.state_dict()


def test_nuts_needs_draws_to_keep():
    module = _module()
    assert module.inference == "svi"
    with pytest.raises(ValueError, match="n_posterior_samples=0"):
        module.run_nuts(torch.zeros(4, 3), torch.zeros(4, dtype=torch.long), num_warmup=1)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"n_classes": 1}, "n_classes must be an integer >= 2"),
        ({"n_hidden": 0}, "n_hidden must be an integer >= 1"),
        ({"prior_scale": -1.0}, "prior_scale must be a finite number > 0"),
        ({"prior_scale": float("nan")}, "prior_scale must be a finite number > 0"),
        ({"n_layers": True}, "n_layers must be an integer"),
        ({"n_components": 0}, "n_components must be an integer >= 1"),
        ({"n_components": 4}, "n_components=4 cannot exceed n_input=3"),
    ],
)
def test_bad_arguments(kwargs, match):
    args = {"n_input": 3, "n_classes": 2, **kwargs}
    with pytest.raises(ValueError, match=match):
        BayesianClassifierModule(args.pop("n_input"), args.pop("n_classes"), **args)
