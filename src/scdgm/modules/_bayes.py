"""A Bayesian neural-network classifier in Pyro: priors on the weights, posterior by SVI or NUTS.

The generative model is a multilayer perceptron whose weights and biases carry normal priors and
whose output is a categorical label. Its posterior is approximated either by a mean-field normal
guide (:class:`pyro.infer.autoguide.AutoNormal`) trained by the package's engine, or by draws of the
No-U-Turn sampler kept in buffers. Both live in the module's ``state_dict``, so a trained module is
stored and rebuilt like any other (``MODULE_CLASSES[name](**init_kwargs)`` then ``load_state_dict``).
"""

from __future__ import annotations

import contextlib
import functools
import math
from collections.abc import Iterator
from operator import attrgetter
from typing import Any

import numpy as np
import pyro
import pyro.distributions as dist
import torch
import torch.nn.functional as F
from pyro.infer.autoguide import AutoNormal
from pyro.nn import PyroModule, PyroSample

from .._checks import check_positive
from ._base import BaseModule, LossOutput, check_integer

# Weight draws per minibatch when the loss is evaluated in eval mode (validation): a steadier monitor
# for early stopping than the single draw of a training step.
_EVAL_DRAWS = 8
# Floor of the standard deviation of an input feature: constant features are centred, not blown up.
SD_FLOOR = 1e-6


@contextlib.contextmanager
def module_local_params() -> Iterator[None]:
    """Keep Pyro parameters inside their module (its ``state_dict``) instead of the global param store."""
    with pyro.settings.context(module_local_params=True):
        yield


def _normal_prior(net: PyroModule, scale_name: str, shape: tuple[int, ...]) -> dist.Distribution:
    scale = getattr(net, scale_name)
    return dist.Normal(torch.zeros_like(scale), scale).expand(shape).to_event(len(shape))


def _init_loc(site: dict[str, Any], prior_scale: float) -> torch.Tensor:
    """Initial guide mean of a weight site: a prior draw rescaled to ``N(0, 1 / fan_in)``; biases start at 0.

    Drawing the start from the prior itself (``init_to_sample``) ties it to ``prior_scale``: a broad prior
    then starts the network with huge logits that SVI takes thousands of steps to undo.
    """
    value = site["fn"].sample().detach()
    if site["name"].startswith("bias"):
        return torch.zeros_like(value)
    return value / prior_scale


def mlp_logits(x: torch.Tensor, weights: dict[str, torch.Tensor], n_layers: int) -> torch.Tensor:
    """Class logits of the network for inputs ``x`` and one or many weight draws.

    Parameters
    ----------
    x
        Standardised inputs, ``(cells, features)``.
    weights
        ``"weight_<i>"`` of shape ``([draws,] out, in)`` and ``"bias_<i>"`` of shape ``([draws,] out)``
        for ``i = 0 .. n_layers`` (the last pair is the output layer).
    n_layers
        Hidden layers (ReLU); ``0`` is multinomial logistic regression.

    Returns
    -------
    ``([draws,] cells, classes)`` logits.
    """
    h = x
    for i in range(n_layers + 1):
        weight, bias = weights[f"weight_{i}"], weights[f"bias_{i}"]
        h = torch.matmul(h, weight.transpose(-1, -2)) + bias.unsqueeze(-2)
        if i < n_layers:
            h = F.relu(h)
    return h


class BayesianMLP(PyroModule):
    """The Pyro model: an MLP with normal priors on all weights and a categorical likelihood.

    A weight of a layer with ``n`` inputs has prior ``N(0, prior_scale**2 / n)`` and a bias
    ``N(0, prior_scale**2)``: scaling by the fan-in keeps the prior's spread of the pre-activations
    at about ``prior_scale`` whatever the number of inputs, so 10 latent dimensions and 2,000 genes
    are regularised alike. ``input_fan_in`` replaces ``n_input`` in the first layer's scaling when the
    inputs are coordinates along orthonormal axes of a space with more dimensions (see
    :class:`BayesianClassifierModule`): the isotropic prior is then the same as in the original space.
    """

    def __init__(
        self,
        n_input: int,
        n_classes: int,
        n_hidden: int,
        n_layers: int,
        prior_scale: float,
        input_fan_in: int | None = None,
    ) -> None:
        super().__init__()
        self.n_layers = n_layers
        sizes = [n_input] + [n_hidden] * n_layers + [n_classes]
        self.layer_shapes = [(n_out, n_in) for n_in, n_out in zip(sizes[:-1], sizes[1:], strict=True)]
        for i, (n_out, n_in) in enumerate(self.layer_shapes):
            fan_in = input_fan_in if i == 0 and input_fan_in is not None else n_in
            # Prior scales are buffers so that `.to(device)` moves the prior with the module.
            self.register_buffer(f"weight_prior_scale_{i}", torch.tensor(prior_scale / math.sqrt(fan_in)))
            self.register_buffer(f"bias_prior_scale_{i}", torch.tensor(float(prior_scale)))
            weight_prior = functools.partial(_normal_prior, scale_name=f"weight_prior_scale_{i}", shape=(n_out, n_in))
            bias_prior = functools.partial(_normal_prior, scale_name=f"bias_prior_scale_{i}", shape=(n_out,))
            setattr(self, f"weight_{i}", PyroSample(weight_prior))
            setattr(self, f"bias_{i}", PyroSample(bias_prior))

    @property
    def site_names(self) -> list[str]:
        """Names of the weight sample sites, in layer order."""
        return [f"{kind}_{i}" for i in range(self.n_layers + 1) for kind in ("weight", "bias")]

    def site_shape(self, name: str) -> tuple[int, ...]:
        """Shape of the sample site ``name``: ``(out, in)`` for a weight, ``(out,)`` for a bias."""
        kind, i = name.rsplit("_", 1)
        n_out, n_in = self.layer_shapes[int(i)]
        return (n_out, n_in) if kind == "weight" else (n_out,)

    def prior(self, name: str) -> dist.Distribution:
        """Prior of the sample site ``name``."""
        kind, i = name.rsplit("_", 1)
        return _normal_prior(self, f"{kind}_prior_scale_{i}", self.site_shape(name))

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None, n_total: int | None = None) -> torch.Tensor:
        """Sample the weights from their priors, then the labels of the cells ``x``.

        Parameters
        ----------
        x
            Standardised inputs, ``(cells, features)``.
        y
            Observed class codes, ``(cells,)``; ``None`` samples them.
        n_total
            Cells in the whole data set when ``x`` is a minibatch: the likelihood is scaled by
            ``n_total / cells`` so the prior counts once per data set.

        Returns
        -------
        The logits, ``(cells, classes)``.
        """
        weights = {name: getattr(self, name) for name in self.site_names}
        logits = mlp_logits(x, weights, self.n_layers)
        n_cells = x.shape[0]
        size = n_cells if n_total is None else int(n_total)
        subsample = None if size == n_cells else torch.arange(n_cells, device=x.device)
        with pyro.plate("cells", size=size, subsample=subsample):
            pyro.sample("label", dist.Categorical(logits=logits), obs=y)
        return logits


class BayesianClassifierModule(BaseModule):
    """A Bayesian neural-network cell-type classifier: Pyro model, mean-field guide, optional NUTS draws.

    Inputs are standardised with a per-feature mean and standard deviation held in buffers (set them
    from the training cells with :meth:`set_standardization`), so the normal priors suit inputs of any
    scale. With ``n_components``, the standardised inputs are further projected on that many orthonormal
    axes (the principal axes of the training cells, also set by :meth:`set_standardization`) and the
    first layer reads these coordinates. The prior is unchanged, since an isotropic normal prior does
    not depend on the basis; what changes is the mean-field guide, which is now independent along
    the principal axes rather than along the features. For correlated features such as genes this
    matters: a guide independent per gene cannot express that correlated genes' weights trade off
    against one another, so it overstates the spread of the predictions and makes them underconfident.
    The loss is the negative ELBO per training cell,
    ``E_q[-log p(y | x, w)] + kl_weight * KL(q(w) || p(w)) / n_train``, with the KL in closed form
    (both are normal); the likelihood of a minibatch is thus scaled to the training set and the KL
    counts once per data set.

    Parameters
    ----------
    n_input
        Input features.
    n_classes
        Classes (at least 2).
    n_hidden
        Units per hidden layer.
    n_layers
        Hidden layers; ``0`` gives Bayesian multinomial logistic regression.
    prior_scale
        Prior standard deviation (see :class:`BayesianMLP` for the fan-in scaling).
    n_train
        Training cells, which sets the weight of the KL per cell.
    init_scale
        Initial standard deviation of the guide, as a fraction of the prior's at each weight.
    n_posterior_samples
        Number of NUTS draws the module holds (``0`` for a module fitted by SVI).
    n_components
        Orthonormal axes the standardised inputs are projected on before the first layer (at most
        ``n_input``); ``None`` reads the standardised features themselves.
    """

    # The held-out predictive NLL of the labels picks the kept epoch, not the annealed objective: the
    # NLL rises long before the ELBO stops falling on small data, and the KL weight does not enter it.
    early_stopping_term = "nll"
    early_stopping_during_warmup = True

    def __init__(
        self,
        n_input: int,
        n_classes: int,
        *,
        n_hidden: int = 32,
        n_layers: int = 1,
        prior_scale: float = 3.0,
        n_train: int = 1,
        init_scale: float = 0.1,
        n_posterior_samples: int = 0,
        n_components: int | None = None,
    ) -> None:
        super().__init__()
        n_input = check_integer("n_input", n_input, 1)
        n_classes = check_integer("n_classes", n_classes, 2)
        n_hidden = check_integer("n_hidden", n_hidden, 1)
        n_layers = check_integer("n_layers", n_layers, 0)
        prior_scale = check_positive("prior_scale", prior_scale)
        n_train = check_integer("n_train", n_train, 1)
        init_scale = check_positive("init_scale", init_scale)
        n_posterior_samples = check_integer("n_posterior_samples", n_posterior_samples, 0)
        if n_components is not None:
            n_components = check_integer("n_components", n_components, 1)
            if n_components > n_input:
                msg = f"n_components={n_components} cannot exceed n_input={n_input}."
                raise ValueError(msg)
        self.init_kwargs = {
            "n_input": n_input,
            "n_classes": n_classes,
            "n_hidden": n_hidden,
            "n_layers": n_layers,
            "prior_scale": prior_scale,
            "n_train": n_train,
            "init_scale": init_scale,
            "n_posterior_samples": n_posterior_samples,
            "n_components": n_components,
        }
        self.n_classes = n_classes
        self.n_layers = n_layers
        self.n_train = n_train
        self.register_buffer("feature_mean", torch.zeros(n_input))
        self.register_buffer("feature_sd", torch.ones(n_input))
        width = n_input if n_components is None else n_components
        self.register_buffer("rotation", None if n_components is None else torch.eye(n_input, n_components))
        # Pyro modules must be built (and called) with module-local params on, to own their parameters.
        with module_local_params():
            self.model = BayesianMLP(
                n_input=width,
                n_classes=n_classes,
                n_hidden=n_hidden,
                n_layers=n_layers,
                prior_scale=prior_scale,
                input_fan_in=n_input,
            )
            init_loc = functools.partial(_init_loc, prior_scale=prior_scale)
            self.guide = AutoNormal(self.model, init_loc_fn=init_loc, init_scale=init_scale)
            # AutoNormal creates its parameters on first call; do it now so they are in the state_dict
            # of a fresh module (needed to load stored weights into a rebuilt one).
            self.guide(torch.zeros(1, width), torch.zeros(1, dtype=torch.long))
        # Every guide scale starts at `init_scale` times its prior's. A fixed absolute start (0.01) sits
        # ~4 nats per weight below a prior of scale ~0.5, a KL that the optimiser's small steps on the
        # scales' logarithm take thousands of steps to shed, so short runs ended near a point estimate.
        unconstrained = torch.distributions.transform_to(AutoNormal.scale_constraint).inv
        with torch.no_grad():
            for name in self.model.site_names:
                target = init_scale * self.model.prior(name).base_dist.scale
                param = getattr(self.guide.scales, f"{name}_unconstrained")
                param.copy_(unconstrained(target.expand_as(param)))
        self.posterior = torch.nn.Module()
        for name in self.model.site_names:
            shape = self.model.site_shape(name)
            self.posterior.register_buffer(name, torch.zeros(n_posterior_samples, *shape))

    @property
    def inference(self) -> str:
        """``"nuts"`` when the module holds NUTS draws, else ``"svi"``."""
        return "nuts" if self.init_kwargs["n_posterior_samples"] > 0 else "svi"

    def set_standardization(self, mean: torch.Tensor, sd: torch.Tensor, rotation: torch.Tensor | None = None) -> None:
        """Store the per-feature mean and standard deviation of the training inputs, and the axes.

        Parameters
        ----------
        mean, sd
            ``(features,)`` tensors; standard deviations below ``1e-6`` are raised to it.
        rotation
            ``(features, n_components)`` matrix with orthonormal columns that the standardised inputs
            are projected on; required exactly when the module was built with ``n_components``.
        """
        if (rotation is None) != (self.rotation is None):
            msg = (
                "This module was built with n_components and needs a rotation."
                if rotation is None
                else "This module was built without n_components; it takes no rotation."
            )
            raise ValueError(msg)
        if rotation is not None:
            rotation = torch.as_tensor(rotation, dtype=torch.float32)
            if rotation.shape != self.rotation.shape:
                msg = f"rotation must have shape {tuple(self.rotation.shape)}, got {tuple(rotation.shape)}."
                raise ValueError(msg)
            self.rotation.copy_(rotation)
        self.feature_mean.copy_(torch.as_tensor(mean, dtype=torch.float32))
        self.feature_sd.copy_(torch.as_tensor(sd, dtype=torch.float32).clamp_min(SD_FLOOR))

    def standardize(self, x: torch.Tensor) -> torch.Tensor:
        """Inputs centred and scaled with the stored training statistics, then projected on the axes."""
        z = (x - self.feature_mean) / self.feature_sd
        return z if self.rotation is None else z @ self.rotation

    def feature_weights(self, weight: torch.Tensor) -> torch.Tensor:
        """First-layer weights ``([draws,] out, width)`` as weights of the standardised features ``(..., features)``."""
        return weight if self.rotation is None else weight @ self.rotation.T

    def guide_loc_scale(self, name: str) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and standard deviation of the mean-field guide at the site ``name``."""
        with module_local_params():
            return attrgetter(name)(self.guide.locs), attrgetter(name)(self.guide.scales)

    def kl_divergence(self) -> torch.Tensor:
        """``KL(q(w) || p(w))`` of the guide to the prior, summed over all weights (closed form)."""
        total = torch.zeros((), device=self.feature_mean.device)
        for name in self.model.site_names:
            loc, scale = self.guide_loc_scale(name)
            prior = self.model.prior(name)
            total = total + torch.distributions.kl_divergence(dist.Normal(loc, scale), prior.base_dist).sum()
        return total

    def draw_weights(self, num_samples: int | None = None, *, mean: bool = False) -> dict[str, torch.Tensor]:
        """Weights drawn from the posterior.

        Parameters
        ----------
        num_samples
            Draws, stacked along a leading axis. From the guide (SVI) any number, reparameterised
            (differentiable), and ``None`` gives a single draw without the leading axis (a training
            step); from the NUTS draws at most as many as stored, evenly thinned, ``None`` all of them.
        mean
            Return the guide's means instead, without the leading axis (SVI only).

        Returns
        -------
        ``{"weight_<i>": ([draws,] out, in), "bias_<i>": ([draws,] out)}``.
        """
        if self.inference == "nuts":
            stored = self.init_kwargs["n_posterior_samples"]
            n = stored if num_samples is None else min(int(num_samples), stored)
            pick = torch.linspace(0, stored - 1, n, device=self.feature_mean.device).round().long()
            return {name: getattr(self.posterior, name).index_select(0, pick) for name in self.model.site_names}
        weights = {}
        for name in self.model.site_names:
            loc, scale = self.guide_loc_scale(name)
            if mean:
                weights[name] = loc
                continue
            shape = loc.shape if num_samples is None else (int(num_samples), *loc.shape)
            weights[name] = loc + scale * torch.randn(shape, device=loc.device, dtype=loc.dtype)
        return weights

    def probabilities(self, x: torch.Tensor, weights: dict[str, torch.Tensor]) -> torch.Tensor:
        """Class probabilities of raw inputs ``x`` under each weight draw: ``(draws, cells, classes)``."""
        return torch.softmax(mlp_logits(self.standardize(x), weights, self.n_layers), dim=-1)

    def predictive_summary(self, x: torch.Tensor, weights: dict[str, torch.Tensor]) -> torch.Tensor:
        """Posterior predictive of ``x`` reduced over draws, for uncertainty per cell.

        Returns
        -------
        ``(cells, classes + 1)``: the mean class probabilities, then the expected entropy of the
        per-draw probabilities (the aleatoric part of the total predictive entropy).
        """
        log_p = torch.log_softmax(mlp_logits(self.standardize(x), weights, self.n_layers), dim=-1)
        p = log_p.exp()
        expected_entropy = -(p * log_p).sum(-1).mean(0)
        return torch.cat([p.mean(0), expected_entropy.unsqueeze(-1)], dim=-1)

    def forward(self, batch: dict[str, torch.Tensor], kl_weight: float = 1.0) -> LossOutput:
        """Negative ELBO per training cell of one minibatch (``"x"``, ``"labels"``).

        Parameters
        ----------
        batch
            ``"x"`` (cells x features, float32) and ``"labels"`` (int64 class codes, no ``-1``).
        kl_weight
            Weight of the KL to the prior (KL warm-up, tempering).

        Returns
        -------
        The loss and its terms: ``"nll"`` (in training the expected negative log-likelihood per cell
        under one weight draw; in eval mode the posterior predictive's, over 8 draws, which the
        engine's early stopping watches), ``"kl"`` (KL to the prior divided by ``n_train``) and
        ``"loss"`` (``nll + kl_weight * kl``, the negative ELBO per cell at ``kl_weight=1`` in training).
        """
        x, y = batch["x"], batch["labels"]
        if self.training:
            logits = mlp_logits(self.standardize(x), self.draw_weights(), self.n_layers)
            nll = F.cross_entropy(logits, y)
        else:
            # the posterior predictive's NLL, -log mean_s p_s(y | x), as the held-out metrics report it
            logits = mlp_logits(self.standardize(x), self.draw_weights(_EVAL_DRAWS), self.n_layers)
            log_p = torch.logsumexp(torch.log_softmax(logits, dim=-1), dim=0) - math.log(_EVAL_DRAWS)
            nll = F.nll_loss(log_p, y)
        kl = self.kl_divergence() / self.n_train
        loss = nll + kl_weight * kl
        terms = {
            "nll": nll.detach(),
            "kl": kl.detach(),
            "loss": loss.detach(),
        }
        return LossOutput(loss=loss, terms=terms, n_obs=int(x.shape[0]))

    def run_nuts(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        *,
        num_warmup: int,
        target_accept_prob: float = 0.8,
        max_tree_depth: int = 8,
        progress_bar: bool = False,
    ) -> dict[str, Any]:
        """Draw the posterior of the weights with NUTS on all of ``x, y`` and keep the draws in the module.

        The number of draws kept is ``n_posterior_samples`` of the constructor. Seed torch first for
        reproducible chains.

        Parameters
        ----------
        x
            Raw inputs (standardised here), ``(cells, features)``.
        y
            Class codes, ``(cells,)``.
        num_warmup
            Adaptation steps, discarded.
        target_accept_prob, max_tree_depth
            NUTS step-size target and tree depth bound.
        progress_bar
            Show Pyro's progress bar.

        Returns
        -------
        Sampler diagnostics: ``"divergences"`` (after warm-up), ``"acceptance_rate"`` (after warm-up),
        ``"min_n_eff"``, ``"max_r_hat"``
        (over all weights; ``r_hat`` is NaN from a single chain of few draws), ``"step_size"``.
        """
        from pyro.infer import MCMC, NUTS

        n_samples = self.init_kwargs["n_posterior_samples"]
        if n_samples < 1:
            msg = "This module was built with n_posterior_samples=0; build it with the number of NUTS draws to keep."
            raise ValueError(msg)
        xs = self.standardize(x)
        kernel = NUTS(self.model, target_accept_prob=target_accept_prob, max_tree_depth=max_tree_depth)
        mcmc = MCMC(kernel, num_samples=n_samples, warmup_steps=int(num_warmup), disable_progbar=not progress_bar)
        mcmc.run(xs, y)
        samples = mcmc.get_samples()
        with torch.no_grad():
            for name in self.model.site_names:
                getattr(self.posterior, name).copy_(samples[name].reshape(n_samples, *self.model.site_shape(name)))
        # Pyro's MCMC reports per-site n_eff / r_hat and, per chain, the divergent transitions and the
        # acceptance rate of the sampling phase (`get_extra_fields` is NumPyro's API, not Pyro's).
        diagnostics = mcmc.diagnostics()
        n_eff = [float(diagnostics[name]["n_eff"].min()) for name in self.model.site_names]
        r_hat = [float(diagnostics[name]["r_hat"].max()) for name in self.model.site_names]
        divergences = sum(len(d) for d in diagnostics.get("divergences", {}).values())
        acceptance = [float(a) for a in diagnostics.get("acceptance rate", {}).values()]
        return {
            "divergences": int(divergences),
            "acceptance_rate": float(np.mean(acceptance)) if acceptance else float("nan"),
            "min_n_eff": min(n_eff) if n_eff else float("nan"),
            "max_r_hat": max(r_hat) if r_hat else float("nan"),
            "step_size": float(kernel.step_size),
        }
