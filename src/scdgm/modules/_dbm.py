"""Bernoulli restricted and deep Boltzmann machines: learning, Gibbs sampling and partition functions, on tensors.

A Boltzmann machine here has binary layers ``x_0`` (visible, the genes) to ``x_L`` (hidden), weights
``W_l`` between neighbouring layers and a bias per unit; its energy is
``E(x) = -sum_l x_l^T W_l x_{i+1} - sum_l b_l^T x_l``. One hidden layer is a restricted Boltzmann
machine (RBM), more are a deep Boltzmann machine (DBM; Salakhutdinov & Hinton, 2009).

Units of odd layers (``x_1, x_3, ...``) are independent given the even layers (``x_0, x_2, ...``)
and the other way round, so block Gibbs sampling alternates the two parities, and either parity can
be summed out exactly: the partition function of a tiny model is a sum over one parity only
(:meth:`DBMModule.log_partition_exact`), and annealed importance sampling runs on the odd layers with
the even ones summed out (:meth:`DBMModule.log_partition_ais`).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ._base import BaseModule, LossOutput, check_integer

MAX_ENUMERATED_UNITS = 20
"""Most units of one parity that exact enumeration sums over (2**20 configurations)."""

DEFAULT_BURN_IN = 500
"""Gibbs sweeps before a chain's state is taken as a sample, unless told otherwise."""

DEFAULT_THINNING = 10
"""Gibbs sweeps between two samples taken from the same chain, unless told otherwise."""

PSEUDO_LIKELIHOOD_GENES = 20
"""Genes per cell whose conditional probability estimates the pseudo-log-likelihood."""

_BASE_RATE_CLIP = 1e-3
_ENUMERATION_CHUNK = 2**14


def hidden_sizes(n_hidden: Any) -> tuple[int, ...]:
    """``n_hidden`` (an int, or one int per hidden layer; numpy values and arrays too) as a tuple of ints >= 1."""
    values = np.asarray(n_hidden, dtype=object).reshape(-1).tolist() if not isinstance(n_hidden, int) else [n_hidden]
    if not values:
        msg = f"n_hidden must name at least one hidden layer, e.g. n_hidden=(50, 10), not {n_hidden!r}."
        raise ValueError(msg)
    sizes = []
    for value in values:
        if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
            msg = (
                f"n_hidden must be a positive integer or a sequence of them (units per hidden layer, e.g. (50, 10)), "
                f"not {n_hidden!r}."
            )
            raise ValueError(msg)
        sizes.append(int(value))
    return tuple(sizes)


def ais_temperatures(n: int) -> list[float]:
    """``n`` inverse temperatures from 0 to 1, denser near 1 where the distributions change fastest.

    The proportions of Salakhutdinov & Murray (2008): 3.5 % of the steps in ``[0, 0.5)``, 27.5 % in
    ``[0.5, 0.9)`` and the rest in ``[0.9, 1]``.
    """
    n = check_integer("n_temperatures", n, 2)
    first = max(1, round(0.035 * n))
    second = max(1, round(0.275 * n))
    third = max(1, n - first - second)
    betas = np.concatenate(
        [
            np.linspace(0.0, 0.5, first, endpoint=False),
            np.linspace(0.5, 0.9, second, endpoint=False),
            np.linspace(0.9, 1.0, third),
        ]
    )
    return [float(b) for b in betas]


def _bernoulli(p: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    return torch.bernoulli(p, generator=generator)


def _entropy(p: torch.Tensor) -> torch.Tensor:
    """Summed entropy of independent Bernoulli units, per row (0 log 0 = 0)."""
    return F.binary_cross_entropy(p, p, reduction="none").sum(-1)


class DBMModule(BaseModule):
    """A Bernoulli Boltzmann machine with one (RBM) or more (DBM) hidden layers.

    Training follows Salakhutdinov & Hinton (2009): the data-dependent statistics come from the
    mean-field approximation of the hidden layers given the cells (exact for one hidden layer), the
    model's statistics from persistent Gibbs chains (stochastic approximation, "persistent contrastive
    divergence"). :meth:`forward` returns a loss whose gradient is the negative of that estimate of the
    log-likelihood gradient, so the package's one training loop trains it like any module.

    Parameters
    ----------
    n_visible
        Visible units (genes).
    n_hidden
        Units per hidden layer: an int for an RBM, a sequence (e.g. ``(50, 10)``) for a DBM.
    mean_field_steps
        Fixed-point iterations of the mean-field approximation (one hidden layer needs none).
    gibbs_steps
        Gibbs sweeps of the persistent chains per training step.
    n_chains
        Persistent chains of the negative phase.

    Attributes
    ----------
    early_stopping_term
        ``"pseudo_nll"``: the negative pseudo-log-likelihood (:meth:`pseudo_log_likelihood`), which
        needs no partition function.

    Examples
    --------
    >>> module = DBMModule(20, n_hidden=(8, 4))
    >>> states = module.sample(module.initial_states(5), burn_in=10)
    >>> [tuple(s.shape) for s in states]
    [(1, 5, 20), (1, 5, 8), (1, 5, 4)]
    """

    early_stopping_term = "pseudo_nll"

    def __init__(
        self,
        n_visible: int,
        n_hidden: int | Sequence[int] = (50, 10),
        *,
        mean_field_steps: int = 10,
        gibbs_steps: int = 1,
        n_chains: int = 100,
    ) -> None:
        super().__init__()
        n_visible = check_integer("n_visible", n_visible, 1)
        hidden = hidden_sizes(n_hidden)
        self.init_kwargs = {
            "n_visible": n_visible,
            "n_hidden": list(hidden),
            "mean_field_steps": check_integer("mean_field_steps", mean_field_steps, 1),
            "gibbs_steps": check_integer("gibbs_steps", gibbs_steps, 1),
            "n_chains": check_integer("n_chains", n_chains, 1),
        }
        self.sizes = (n_visible, *hidden)
        self.mean_field_steps = self.init_kwargs["mean_field_steps"]
        self.gibbs_steps = self.init_kwargs["gibbs_steps"]
        self.n_chains = self.init_kwargs["n_chains"]
        self.weights = nn.ParameterList(
            [nn.Parameter(0.01 * torch.randn(a, b)) for a, b in zip(self.sizes[:-1], self.sizes[1:], strict=True)]
        )
        self.biases = nn.ParameterList([nn.Parameter(torch.zeros(n)) for n in self.sizes])
        # logits of the visible units' base rates: the starting point of AIS (and of the visible biases)
        self.register_buffer("base_logits", torch.zeros(n_visible))
        self._chains: list[torch.Tensor] | None = None

    # ------------------------------------------------------------------ structure

    @property
    def n_layers(self) -> int:
        """Number of hidden layers."""
        return len(self.sizes) - 1

    @property
    def n_visible(self) -> int:
        """Number of visible units."""
        return self.sizes[0]

    def set_base_rates(self, rates: torch.Tensor | np.ndarray) -> None:
        """Set the visible units' base rates (the training cells' detection rates).

        They define the model AIS starts from, and initialise the visible biases to their logits (as
        Hinton's practical guide recommends), so that training starts from the independent model.

        Parameters
        ----------
        rates
            One rate per visible unit, in ``[0, 1]`` (clipped to ``[1e-3, 1 - 1e-3]``).
        """
        rates = torch.as_tensor(np.asarray(rates, dtype=np.float32)).clamp(_BASE_RATE_CLIP, 1 - _BASE_RATE_CLIP)
        if rates.shape != (self.n_visible,):
            msg = f"rates must hold one value per visible unit ({self.n_visible}), got shape {tuple(rates.shape)}."
            raise ValueError(msg)
        with torch.no_grad():
            self.base_logits.copy_(torch.logit(rates).to(self.base_logits.device))
            self.biases[0].copy_(self.base_logits)

    def load_pretrained(self, rbms: Sequence[RBMModule]) -> None:
        """Take the weights of layer-wise pretrained RBMs, one per hidden layer, bottom first.

        The weights are used as trained (the RBMs were trained with doubled inputs where a DBM layer
        has two neighbours, see :func:`pretraining_factors`); the bias of a layer between two RBMs is
        the sum of the lower RBM's hidden and the upper RBM's visible bias, since in the DBM the
        layer receives both RBMs' inputs.

        Parameters
        ----------
        rbms
            Trained :class:`RBMModule` s whose sizes chain from ``n_visible`` to the top layer.
        """
        if len(rbms) != self.n_layers:
            msg = f"Expected {self.n_layers} RBMs (one per hidden layer), got {len(rbms)}."
            raise ValueError(msg)
        for i, rbm in enumerate(rbms):
            if tuple(rbm.weight.shape) != tuple(self.weights[i].shape):
                msg = f"RBM {i} has weights of shape {tuple(rbm.weight.shape)}, layer {i} needs {tuple(self.weights[i].shape)}."
                raise ValueError(msg)
        with torch.no_grad():
            for i, rbm in enumerate(rbms):
                self.weights[i].copy_(rbm.weight)
            self.biases[0].copy_(rbms[0].visible_bias)
            for i in range(1, self.n_layers):
                self.biases[i].copy_(rbms[i - 1].hidden_bias + rbms[i].visible_bias)
            self.biases[-1].copy_(rbms[-1].hidden_bias)

    # ------------------------------------------------------------------ conditionals

    def _neighbour_input(self, states: Sequence[torch.Tensor | None], i: int) -> torch.Tensor:
        """``W_{i-1}^T x_{i-1} + W_i x_{i+1}``: what layer ``i`` receives from its neighbours."""
        total = None
        if i > 0:
            total = states[i - 1] @ self.weights[i - 1]
        if i < self.n_layers:
            above = states[i + 1] @ self.weights[i].T
            total = above if total is None else total + above
        return total

    def conditional(self, states: Sequence[torch.Tensor], i: int) -> torch.Tensor:
        """``p(x_i = 1 | neighbours)`` for every unit of layer ``i``.

        Parameters
        ----------
        states
            One tensor per layer (cells x units); only layers ``i - 1`` and ``i + 1`` are read.
        i
            Layer index, 0 for the visible layer.

        Returns
        -------
        Cells x units of layer ``i``.
        """
        return torch.sigmoid(self._neighbour_input(states, i) + self.biases[i])

    def gibbs_sweep(
        self, states: list[torch.Tensor], generator: torch.Generator | None = None, *, clamp_visible: bool = False
    ) -> list[torch.Tensor]:
        """One block Gibbs sweep in place: odd layers given even, then even layers given odd.

        Parameters
        ----------
        states
            One tensor per layer, cells x units; replaced in the list.
        generator
            Random generator of the draws (default torch's global one).
        clamp_visible
            Keep the visible layer fixed (conditional sampling of the hidden layers).

        Returns
        -------
        ``states``.
        """
        for i in range(1, self.n_layers + 1, 2):
            states[i] = _bernoulli(self.conditional(states, i), generator)
        for i in range(2 if clamp_visible else 0, self.n_layers + 1, 2):
            states[i] = _bernoulli(self.conditional(states, i), generator)
        return states

    def mean_field(self, v: torch.Tensor, steps: int | None = None) -> list[torch.Tensor]:
        """Mean-field approximation ``q(h | v)`` of the hidden layers: one probability per unit and cell.

        Starts from a bottom-up pass with doubled weights for all but the top layer (which in the DBM
        receive input from above too; Salakhutdinov & Hinton, 2012), then updates odd and even hidden
        layers in turn, each a coordinate ascent step of the variational bound. One hidden layer is exact.

        Parameters
        ----------
        v
            Cells x visible units.
        steps
            Fixed-point iterations; default ``mean_field_steps``.

        Returns
        -------
        ``[v, mu_1, ..., mu_L]``.
        """
        mu = [v]
        for i in range(1, self.n_layers + 1):
            factor = 2.0 if i < self.n_layers else 1.0
            mu.append(torch.sigmoid(factor * (mu[i - 1] @ self.weights[i - 1]) + self.biases[i]))
        if self.n_layers > 1:
            for _ in range(self.mean_field_steps if steps is None else steps):
                for start in (1, 2):
                    for i in range(start, self.n_layers + 1, 2):
                        mu[i] = self.conditional(mu, i)
        return mu

    def top_activations(self, v: torch.Tensor) -> torch.Tensor:
        """Mean-field probabilities of the top hidden layer, cells x units (what ``tl.dbm`` stores in ``.obsm``)."""
        return self.mean_field(v)[-1]

    # ------------------------------------------------------------------ energies and bounds

    def energy(self, states: Sequence[torch.Tensor]) -> torch.Tensor:
        """``E(x)`` of each row (states may be probabilities: then it is ``E`` at the means).

        Parameters
        ----------
        states
            One tensor per layer, cells x units.

        Returns
        -------
        Shape ``(cells,)``.
        """
        total = -(states[0] @ self.biases[0])
        for i in range(self.n_layers):
            total = total - ((states[i] @ self.weights[i]) * states[i + 1]).sum(-1)
            total = total - states[i + 1] @ self.biases[i + 1]
        return total

    def variational_bound(self, v: torch.Tensor, mu: Sequence[torch.Tensor] | None = None) -> torch.Tensor:
        """The mean-field lower bound on ``log sum_h exp(-E(v, h))`` per cell (exact for one hidden layer).

        ``-E(v, mu) + sum_l H(mu_l)``: the energy is linear in each layer, so its expectation under the
        factorised ``q`` is the energy at the means. Subtracting ``log Z`` gives a lower bound on
        ``log p(v)``.

        Parameters
        ----------
        v
            Cells x visible units.
        mu
            Mean-field probabilities from :meth:`mean_field` (computed when not given).

        Returns
        -------
        Shape ``(cells,)``.
        """
        mu = self.mean_field(v) if mu is None else mu
        bound = -self.energy(mu)
        for layer in mu[1:]:
            bound = bound + _entropy(layer)
        return bound

    def reconstruction(self, v: torch.Tensor, mu: Sequence[torch.Tensor] | None = None) -> torch.Tensor:
        """Cross-entropy of ``v`` under ``p(v | mu_1)`` per cell: how well the mean-field state reproduces the cell.

        Parameters
        ----------
        v
            Cells x visible units.
        mu
            Mean-field probabilities from :meth:`mean_field` (computed when not given).

        Returns
        -------
        Shape ``(cells,)``, in nats.
        """
        mu = self.mean_field(v) if mu is None else mu
        logits = mu[1] @ self.weights[0].T + self.biases[0]
        return F.binary_cross_entropy_with_logits(logits, v, reduction="none").sum(-1)

    def _bias(self, i: int, beta: float) -> torch.Tensor:
        """Bias of layer ``i`` at inverse temperature ``beta``: from the base model's (``beta=0``) to the model's."""
        if beta == 1.0:
            return self.biases[i]
        base = self.base_logits if i == 0 else 0.0
        return (1.0 - beta) * base + beta * self.biases[i]

    def _log_marginal(
        self,
        kept: dict[int, torch.Tensor],
        beta: float = 1.0,
        *,
        neighbour: dict[int, torch.Tensor] | None = None,
        visible: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``log sum exp(-E_beta)`` over the layers of the other parity than ``kept``, per row.

        ``E_beta`` has weights ``beta * W`` and biases between the base model's and the model's. The
        layers summed out are independent given ``kept``, each unit contributing ``softplus`` of its
        input; a clamped ``visible`` contributes its linear term instead.
        """
        total = None
        for i, x in kept.items():
            term = x @ self._bias(i, beta)
            total = term if total is None else total + term
        summed = range(1 - next(iter(kept)) % 2, self.n_layers + 1, 2)
        for i in summed:
            given = neighbour[i] if neighbour is not None else self._neighbour_input(_as_list(kept, self), i)
            field = self._bias(i, beta) + beta * given
            term = (visible * field).sum(-1) if (i == 0 and visible is not None) else F.softplus(field).sum(-1)
            total = term if total is None else total + term
        return total

    # ------------------------------------------------------------------ partition function

    def log_partition_exact(self) -> float:
        """``log Z`` by enumerating every configuration of the smaller parity of layers (tiny models only).

        Returns
        -------
        The log partition function.

        Raises
        ------
        ValueError
            When both parities have more than ``MAX_ENUMERATED_UNITS`` units.
        """
        parity = min((0, 1), key=lambda p: sum(self.sizes[p::2]))
        layers = list(range(parity, self.n_layers + 1, 2))
        n_units = sum(self.sizes[i] for i in layers)
        if n_units > MAX_ENUMERATED_UNITS:
            msg = (
                f"Exact enumeration needs at most {MAX_ENUMERATED_UNITS} units in the odd or the even layers; this "
                f"model has {sum(self.sizes[0::2])} and {sum(self.sizes[1::2])}. Use log_partition_ais."
            )
            raise ValueError(msg)
        with torch.no_grad():
            parts = [
                torch.logsumexp(self._log_marginal(_split(configs, layers, self.sizes)), 0)
                for configs in _configurations(n_units, self.base_logits.device)
            ]
        return float(torch.logsumexp(torch.stack(parts), 0))

    def log_likelihood_exact(self, v: torch.Tensor) -> torch.Tensor:
        """``log p(v)`` per cell by enumerating the odd layers (tiny models only; for tests and checks).

        Parameters
        ----------
        v
            Cells x visible units.

        Returns
        -------
        Shape ``(cells,)``.
        """
        layers = list(range(1, self.n_layers + 1, 2))
        n_units = sum(self.sizes[i] for i in layers)
        if n_units > MAX_ENUMERATED_UNITS:
            msg = f"Exact enumeration needs at most {MAX_ENUMERATED_UNITS} units in the odd layers, not {n_units}."
            raise ValueError(msg)
        with torch.no_grad():
            per_chunk = []
            for configs in _configurations(n_units, v.device):
                kept = _split(configs, layers, self.sizes)
                # rows: cells x configurations, flattened
                n_cells, n_configs = v.shape[0], configs.shape[0]
                kept = {i: x.repeat(n_cells, 1) for i, x in kept.items()}
                visible = v.repeat_interleave(n_configs, 0)
                values = self._log_marginal(kept, visible=visible).reshape(n_cells, n_configs)
                per_chunk.append(torch.logsumexp(values, 1))
            return torch.logsumexp(torch.stack(per_chunk, 1), 1) - self.log_partition_exact()

    def log_partition_ais(
        self, n_runs: int = 100, n_temperatures: int = 1000, generator: torch.Generator | None = None
    ) -> tuple[float, float]:
        """``log Z`` by annealed importance sampling (Neal, 2001; Salakhutdinov & Murray, 2008).

        The runs anneal from a base model without weights whose visible units have the base rates
        (:meth:`set_base_rates`) and whose hidden units are fair coins (``log Z_0`` known exactly) to
        the model, through models with weights ``beta * W`` and biases interpolated between the two.
        The state of a run is the odd layers; the even layers (the visible one among them) are summed
        out exactly in the importance weights, and one block Gibbs sweep at each ``beta`` moves the state.

        The mean of the importance weights estimates ``Z`` without bias, so ``log Z`` is
        underestimated on average (Jensen), and a held-out log-likelihood computed with it overestimated;
        more runs and temperatures shrink both the bias and the variance.

        Parameters
        ----------
        n_runs
            Independent annealing runs.
        n_temperatures
            Inverse temperatures from 0 to 1 (:func:`ais_temperatures`).
        generator
            Random generator of the runs (default torch's global one).

        Returns
        -------
        ``(log_z, standard_error)``: the estimate and the delta-method standard error of ``log Z``
        (``std(w) / (mean(w) sqrt(n_runs))``).
        """
        n_runs = check_integer("n_runs", n_runs, 1)
        betas = ais_temperatures(n_temperatures)
        device = self.base_logits.device
        odd_layers = list(range(1, self.n_layers + 1, 2))
        even_layers = list(range(0, self.n_layers + 1, 2))
        with torch.no_grad():
            odd = {
                i: _bernoulli(torch.full((n_runs, self.sizes[i]), 0.5, device=device), generator) for i in odd_layers
            }
            log_w = torch.zeros(n_runs, device=device)
            for k in range(1, len(betas)):
                previous, beta = betas[k - 1], betas[k]
                neighbour = {i: self._neighbour_input(_as_list(odd, self), i) for i in even_layers}
                log_w += self._log_marginal(odd, beta, neighbour=neighbour) - self._log_marginal(
                    odd, previous, neighbour=neighbour
                )
                if k == len(betas) - 1:
                    break
                even = {
                    i: _bernoulli(torch.sigmoid(self._bias(i, beta) + beta * neighbour[i]), generator)
                    for i in even_layers
                }
                states = _as_list(even, self)
                odd = {
                    i: _bernoulli(
                        torch.sigmoid(self._bias(i, beta) + beta * self._neighbour_input(states, i)), generator
                    )
                    for i in odd_layers
                }
            log_z_base = float(F.softplus(self.base_logits).sum()) + sum(self.sizes[1:]) * math.log(2.0)
            log_mean_w = float(torch.logsumexp(log_w, 0)) - math.log(n_runs)
            relative = torch.exp(log_w - log_w.max()).double()
            error = float(relative.std() / (relative.mean() * math.sqrt(n_runs))) if n_runs > 1 else float("nan")
        return log_z_base + log_mean_w, error

    # ------------------------------------------------------------------ sampling

    def initial_states(
        self, n_chains: int, *, visible: torch.Tensor | None = None, generator: torch.Generator | None = None
    ) -> list[torch.Tensor]:
        """Starting states of ``n_chains`` Gibbs chains.

        Parameters
        ----------
        n_chains
            Number of chains.
        visible
            Cells x visible units to start from (the hidden layers drawn from their mean-field
            probabilities); default: every unit a fair coin.
        generator
            Random generator of the draws.

        Returns
        -------
        One tensor per layer, ``n_chains`` x units.
        """
        device = self.base_logits.device
        with torch.no_grad():
            if visible is None:
                return [_bernoulli(torch.full((n_chains, n), 0.5, device=device), generator) for n in self.sizes]
            mu = self.mean_field(visible.to(device))
            return [mu[0].clone(), *(_bernoulli(m, generator) for m in mu[1:])]

    def iter_samples(
        self,
        states: list[torch.Tensor],
        *,
        burn_in: int = DEFAULT_BURN_IN,
        n_per_chain: int = 1,
        thinning: int = DEFAULT_THINNING,
        generator: torch.Generator | None = None,
    ) -> Iterator[list[torch.Tensor]]:
        """Block Gibbs sampling: ``burn_in`` sweeps, then ``n_per_chain`` samples of every chain, ``thinning`` sweeps apart.

        Parameters
        ----------
        states
            Starting states, one tensor per layer (e.g. :meth:`initial_states`); not modified.
        burn_in
            Sweeps before the first sample (0 takes the starting state itself).
        n_per_chain
            Samples per chain.
        thinning
            Sweeps between two samples of a chain.
        generator
            Random generator of the draws.

        Returns
        -------
        An iterator of ``n_per_chain`` states of all chains, one tensor per layer (chains x units) each.
        """
        burn_in = check_integer("burn_in", burn_in, 0)
        n_per_chain = check_integer("n_per_chain", n_per_chain, 1)
        thinning = check_integer("thinning", thinning, 1)
        states = [s.clone() for s in states]
        with torch.no_grad():
            for _ in range(burn_in):
                self.gibbs_sweep(states, generator)
            for i in range(n_per_chain):
                if i:
                    for _ in range(thinning):
                        self.gibbs_sweep(states, generator)
                yield [state.clone() for state in states]

    def sample(
        self,
        states: list[torch.Tensor],
        *,
        burn_in: int = DEFAULT_BURN_IN,
        n_per_chain: int = 1,
        thinning: int = DEFAULT_THINNING,
        generator: torch.Generator | None = None,
    ) -> list[torch.Tensor]:
        """All samples of :meth:`iter_samples` at once.

        Parameters
        ----------
        states, burn_in, n_per_chain, thinning, generator
            As for :meth:`iter_samples`.

        Returns
        -------
        One tensor per layer of shape ``(n_per_chain, chains, units)``; sample ``i`` of every chain is
        at ``[i]``.
        """
        rounds = list(
            self.iter_samples(states, burn_in=burn_in, n_per_chain=n_per_chain, thinning=thinning, generator=generator)
        )
        return [torch.stack(layer) for layer in zip(*rounds, strict=True)]

    # ------------------------------------------------------------------ training

    def pseudo_log_likelihood(self, v: torch.Tensor, index: torch.Tensor | None = None) -> torch.Tensor:
        """Pseudo-log-likelihood ``sum_i log p(v_i | v_-i)`` per cell, estimated from ``PSEUDO_LIKELIHOOD_GENES`` genes.

        ``p(v_i | v_-i) = sigmoid(log p*(v) - log p*(v with gene i flipped))`` needs no partition
        function. ``log p*`` is the free energy for an RBM (exact) and its mean-field lower bound for
        a DBM (an approximation). Each cell's genes are a fixed set spread over all genes, chosen from
        its row ``index`` (so a cell is scored on the same genes every epoch), and the sum is scaled
        up to all genes. With few genes, all are used.

        Parameters
        ----------
        v
            Cells x visible units.
        index
            Row index of each cell in the data (default ``0 .. cells - 1``).

        Returns
        -------
        Shape ``(cells,)``.
        """
        n_cells, n_genes = v.shape
        k = min(PSEUDO_LIKELIHOOD_GENES, n_genes)
        index = torch.arange(n_cells, device=v.device) if index is None else index.to(v.device)
        stride = n_genes // k
        genes = (index.reshape(-1, 1) * 7919 + torch.arange(k, device=v.device) * stride) % n_genes
        flipped = v.repeat_interleave(k, 0)
        rows = torch.arange(n_cells * k, device=v.device)
        flipped[rows, genes.reshape(-1)] = 1.0 - flipped[rows, genes.reshape(-1)]
        both = torch.cat([v, flipped])
        bound = self.variational_bound(both)
        gap = bound[:n_cells].repeat_interleave(k) - bound[n_cells:]
        return F.logsigmoid(gap).reshape(n_cells, k).mean(1) * n_genes

    def _persistent_chains(self, like: torch.Tensor) -> list[torch.Tensor]:
        if self._chains is None or self._chains[0].device != like.device:
            self._chains = [
                _bernoulli(torch.full((self.n_chains, n), 0.5, device=like.device), None) for n in self.sizes
            ]
        return self._chains

    def forward(self, batch: dict[str, torch.Tensor], kl_weight: float = 1.0) -> LossOutput:
        """Loss of one minibatch: mean energy at the mean-field state minus mean energy of the persistent chains.

        Its gradient is minus the stochastic-approximation estimate of the log-likelihood gradient
        (data statistics from mean-field, model statistics from the chains); in training each call
        advances the chains by ``gibbs_steps`` sweeps.

        Parameters
        ----------
        batch
            ``"x"``: cells x visible units, 0/1.
        kl_weight
            Ignored (the engine passes it to every module).

        Returns
        -------
        The loss; terms ``"reconstruction"`` (cross-entropy of the cells under the mean-field
        reconstruction) and ``"pseudo_nll"`` (negative pseudo-log-likelihood), per cell.
        """
        v = batch["x"]
        with torch.no_grad():
            mu = [m.detach() for m in self.mean_field(v)]
            terms = {
                "reconstruction": self.reconstruction(v, mu).mean(),
                "pseudo_nll": -self.pseudo_log_likelihood(v, batch.get("index")).mean(),
            }
        if self.training:
            with torch.no_grad():
                chains = self._persistent_chains(v)
                for _ in range(self.gibbs_steps):
                    self.gibbs_sweep(chains)
            loss = self.energy(mu).mean() - self.energy(chains).mean()
        else:
            loss = terms["pseudo_nll"]
        return LossOutput(loss=loss, terms=terms, n_obs=int(v.shape[0]))


def _as_list(states: dict[int, torch.Tensor], module: DBMModule) -> list[torch.Tensor | None]:
    return [states.get(i) for i in range(module.n_layers + 1)]


def _configurations(n_units: int, device: torch.device | str) -> Any:
    """Every 0/1 vector of length ``n_units``, in chunks of rows."""
    total = 2**n_units
    bits = torch.arange(n_units, device=device)
    for start in range(0, total, _ENUMERATION_CHUNK):
        index = torch.arange(start, min(start + _ENUMERATION_CHUNK, total), device=device)
        yield ((index.unsqueeze(1) >> bits) & 1).float()


def _split(configs: torch.Tensor, layers: Sequence[int], sizes: Sequence[int]) -> dict[int, torch.Tensor]:
    """Columns of ``configs`` as the states of ``layers``, in order."""
    out, start = {}, 0
    for i in layers:
        out[i] = configs[:, start : start + sizes[i]]
        start += sizes[i]
    return out


def pretraining_factors(n_layers: int) -> list[tuple[float, float]]:
    """``(up_factor, down_factor)`` of each RBM of the layer-wise pretraining of a DBM with ``n_layers`` hidden layers.

    A DBM layer between two others receives input from both; an RBM trained alone sees only one
    side, so the pretraining doubles the input a layer will later get from its other neighbour
    (Salakhutdinov & Hinton, 2009; BoltzmannMachines.jl): the bottom RBM doubles the input of its
    hidden units, the top RBM that of its visible units, the RBMs between both.
    """
    if n_layers == 1:
        return [(1.0, 1.0)]
    return [(1.0 if i == n_layers - 1 else 2.0, 1.0 if i == 0 else 2.0) for i in range(n_layers)]


class RBMModule(BaseModule):
    """A Bernoulli RBM trained by contrastive divergence (CD-k) or persistent CD: one layer of DBM pretraining.

    ``up_factor`` and ``down_factor`` scale the input (weights and bias) of the hidden and of the
    visible units in the conditionals, as in the pretraining of a DBM (:func:`pretraining_factors`);
    both 1 is an ordinary RBM.

    Parameters
    ----------
    n_visible, n_hidden
        Units of the two layers.
    up_factor, down_factor
        Factors of the hidden and visible units' inputs.
    cd_steps
        Gibbs sweeps of the negative phase per training step.
    persistent
        Keep the negative chains between steps (PCD) instead of starting them at the minibatch (CD).
    n_chains
        Persistent chains (PCD only).

    Examples
    --------
    >>> rbm = RBMModule(20, 8, cd_steps=1)
    >>> rbm.hidden_probabilities(torch.ones(3, 20)).shape
    torch.Size([3, 8])
    """

    early_stopping_term = "reconstruction"

    def __init__(
        self,
        n_visible: int,
        n_hidden: int,
        *,
        up_factor: float = 1.0,
        down_factor: float = 1.0,
        cd_steps: int = 1,
        persistent: bool = False,
        n_chains: int = 100,
    ) -> None:
        super().__init__()
        self.init_kwargs = {
            "n_visible": check_integer("n_visible", n_visible, 1),
            "n_hidden": check_integer("n_hidden", n_hidden, 1),
            "up_factor": float(up_factor),
            "down_factor": float(down_factor),
            "cd_steps": check_integer("cd_steps", cd_steps, 1),
            "persistent": bool(persistent),
            "n_chains": check_integer("n_chains", n_chains, 1),
        }
        self.up_factor, self.down_factor = float(up_factor), float(down_factor)
        self.cd_steps, self.persistent, self.n_chains = cd_steps, bool(persistent), n_chains
        self.weight = nn.Parameter(0.01 * torch.randn(n_visible, n_hidden))
        self.visible_bias = nn.Parameter(torch.zeros(n_visible))
        self.hidden_bias = nn.Parameter(torch.zeros(n_hidden))
        self._chains: torch.Tensor | None = None

    def hidden_probabilities(self, v: torch.Tensor) -> torch.Tensor:
        """``p(h = 1 | v)`` with the up factor, cells x hidden units (the input of the next RBM up)."""
        return torch.sigmoid(self.up_factor * (v @ self.weight + self.hidden_bias))

    def visible_probabilities(self, h: torch.Tensor) -> torch.Tensor:
        """``p(v = 1 | h)`` with the down factor, cells x visible units."""
        return torch.sigmoid(self.down_factor * (h @ self.weight.T + self.visible_bias))

    def energy(self, v: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        """``-v^T W h - b^T v - c^T h`` per row."""
        return -((v @ self.weight) * h).sum(-1) - v @ self.visible_bias - h @ self.hidden_bias

    def forward(self, batch: dict[str, torch.Tensor], kl_weight: float = 1.0) -> LossOutput:
        """CD-k / PCD loss: energy of the data with their hidden probabilities minus that of the negative samples.

        Parameters
        ----------
        batch
            ``"x"``: cells x visible units (0/1, or probabilities for an upper layer).
        kl_weight
            Ignored.

        Returns
        -------
        The loss; term ``"reconstruction"``: cross-entropy of the data under one up-down pass.
        """
        v = batch["x"]
        with torch.no_grad():
            h_data = self.hidden_probabilities(v)
            reconstructed = self.visible_probabilities(h_data).clamp(1e-7, 1 - 1e-7)
            terms = {"reconstruction": F.binary_cross_entropy(reconstructed, v, reduction="none").sum(-1).mean()}
        if not self.training:
            return LossOutput(loss=terms["reconstruction"], terms=terms, n_obs=int(v.shape[0]))
        with torch.no_grad():
            if self.persistent:
                if self._chains is None or self._chains.device != v.device:
                    self._chains = _bernoulli(torch.full((self.n_chains, v.shape[1]), 0.5, device=v.device), None)
                negative = self._chains
            else:
                negative = v
            for _ in range(self.cd_steps):
                h = _bernoulli(self.hidden_probabilities(negative), None)
                negative = _bernoulli(self.visible_probabilities(h), None)
            if self.persistent:
                self._chains = negative
            h_negative = self.hidden_probabilities(negative)
        loss = self.energy(v, h_data).mean() - self.energy(negative, h_negative).mean()
        return LossOutput(loss=loss, terms=terms, n_obs=int(v.shape[0]))
