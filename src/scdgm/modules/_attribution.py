"""Integrated gradients (Sundararajan et al. 2017) in pure torch: quadrature rules, a generic path and a fast path.

The attribution of input feature ``g`` to output ``t`` of a model ``F`` at input ``u`` against a baseline
``u0`` is ``(u_g - u0_g) * integral_0^1 dF_t(u0 + a (u - u0)) / du_g da``, approximated by a quadrature
rule over ``n_steps`` points ``a``. Every step of every cell of a chunk runs in one forward pass, and
each target in one backward pass over it.

Models that meet their input first in one linear map (every encoder here) take a fast path: along the
straight path the pre-activation of that layer is ``z0 + a * W (u - u0)``, so the features x hidden
product is computed once per cell instead of once per step, the rest of the network runs on the
scaled pre-activations, and the gradients are carried back through ``W`` in one matrix product after
summing over steps. The result is the same integral, computed with the same rule.

Baselines may also be drawn from reference cells (:class:`SampledBaselines`, expected gradients): each
cell is attributed along the full path from each of its references and the attributions averaged.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

METHODS = ("gausslegendre", "riemann_left", "riemann_right", "riemann_middle", "riemann_trapezoid")
"""Quadrature rules over the straight path from baseline (``a = 0``) to input (``a = 1``)."""

Context = dict[str, torch.Tensor]
AttributionModel = Callable[[torch.Tensor, Context], torch.Tensor]
"""``model(u, context) -> outputs``: inputs ``(N, features)`` and per-row context (e.g. batch codes) to ``(N, targets)``."""


def path_rule(method: str, n_steps: int) -> tuple[np.ndarray, np.ndarray]:
    """Points on ``[0, 1]`` and their weights for integrating along the path.

    Parameters
    ----------
    method
        ``"gausslegendre"``: Gauss-Legendre nodes and weights mapped from ``[-1, 1]`` to ``[0, 1]``
        (exact for polynomials of degree ``2 n_steps - 1``). ``"riemann_left"``, ``"riemann_right"``,
        ``"riemann_middle"``: ``n_steps`` equal intervals, evaluated at their left end, right end or
        middle. ``"riemann_trapezoid"``: the trapezoid rule on ``n_steps`` evenly spaced points
        including both ends (needs ``n_steps >= 2``).
    n_steps
        Number of points.

    Returns
    -------
    alphas
        Positions along the path, ``float64``, shape ``(n_steps,)``.
    weights
        Quadrature weights, ``float64``, shape ``(n_steps,)``, summing to 1.
    """
    if isinstance(n_steps, bool) or not isinstance(n_steps, int | np.integer) or n_steps < 1:
        msg = f"n_steps must be an integer >= 1, not {n_steps!r}."
        raise ValueError(msg)
    n = int(n_steps)
    if method == "gausslegendre":
        nodes, weights = np.polynomial.legendre.leggauss(n)
        return (nodes + 1.0) / 2.0, weights / 2.0
    if method == "riemann_trapezoid":
        if n < 2:
            msg = "method='riemann_trapezoid' needs n_steps >= 2 (both ends of the path)."
            raise ValueError(msg)
        weights = np.full(n, 1.0 / (n - 1))
        weights[[0, -1]] /= 2.0
        return np.linspace(0.0, 1.0, n), weights
    offsets = {"riemann_left": 0.0, "riemann_right": 1.0, "riemann_middle": 0.5}
    if method not in offsets:
        msg = f"method={method!r} is not supported. Choose one of {list(METHODS)}."
        raise ValueError(msg)
    return (np.arange(n) + offsets[method]) / n, np.full(n, 1.0 / n)


class LinearFirst:
    """A model whose input meets one linear map first: ``F(u) = rest(u @ weight.T + offset(context), context)``.

    Models of this form take the fast path of :func:`integrated_gradients`.

    Parameters
    ----------
    weight
        The first layer's weight, ``(hidden, features)``.
    offset
        ``offset(context) -> (N, hidden)`` or ``(hidden,)``: bias plus anything that does not depend on
        the input (e.g. the contribution of a one-hot batch code).
    rest
        ``rest(z, context) -> (N, outputs)``: everything after the first linear map.
    """

    def __init__(
        self,
        weight: torch.Tensor,
        offset: Callable[[Context], torch.Tensor],
        rest: Callable[[torch.Tensor, Context], torch.Tensor],
    ) -> None:
        self.weight = weight
        self.offset = offset
        self.rest = rest

    @property
    def n_features(self) -> int:
        """Input features of the first layer."""
        return int(self.weight.shape[1])

    @property
    def n_hidden(self) -> int:
        """Units of the first layer."""
        return int(self.weight.shape[0])

    def preactivation(self, u: torch.Tensor, context: Context) -> torch.Tensor:
        """The first layer's output before any non-linearity, ``(N, hidden)``."""
        return u @ self.weight.T + self.offset(context)

    def __call__(self, u: torch.Tensor, context: Context) -> torch.Tensor:
        return self.rest(self.preactivation(u, context), context)

    def then(self, head: Callable[[torch.Tensor, Context], torch.Tensor]) -> LinearFirst:
        """The same model followed by ``head`` (e.g. a classifier reading the encoder's output)."""
        rest = self.rest
        return LinearFirst(self.weight, self.offset, lambda z, context: head(rest(z, context), context))


@dataclass
class Attributions:
    """Integrated gradients of one chunk of cells.

    Attributes
    ----------
    attributions
        ``(cells, targets, features)``.
    output
        Model outputs at the inputs, ``(cells, targets)``.
    baseline_output
        Model outputs at the baselines, ``(cells, targets)`` (the mean over a cell's baselines when
        it has several).
    path_change
        Size of the output change integrated, ``(cells, targets)``, when it is not
        ``|output - baseline_output|``: with several baselines per cell, the mean of
        ``|F(x) - F(b_k)|`` over them (their changes may cancel in the mean while each path's
        quadrature error does not).
    """

    attributions: torch.Tensor
    output: torch.Tensor
    baseline_output: torch.Tensor
    path_change: torch.Tensor | None = None

    @property
    def delta(self) -> torch.Tensor:
        """Relative completeness error per cell, see :func:`completeness_error`."""
        return completeness_error(self.attributions, self.output - self.baseline_output, scale=self.path_change)


def completeness_error(
    attributions: torch.Tensor, difference: torch.Tensor, *, scale: torch.Tensor | None = None, floor: float = 1e-6
) -> torch.Tensor:
    """Relative completeness error per cell.

    Integrated gradients are complete: a cell's attributions to target ``t`` sum to
    ``F_t(x) - F_t(baseline)``. The quadrature leaves a gap; per cell it is reported as

    ``max_t |sum_g A[c, t, g] - (F_t(x_c) - F_t(b_c))| / max(max_t |F_t(x_c) - F_t(b_c)|, floor)``,

    i.e. the worst gap over targets relative to the largest output change of the cell (a common
    scale, so a target that hardly changes does not inflate the error).

    Parameters
    ----------
    attributions
        ``(cells, targets, features)``.
    difference
        ``F(x) - F(baseline)``, ``(cells, targets)``.
    scale
        Output change to divide by, ``(cells, targets)``, instead of ``|difference|`` (for several
        baselines per cell: the mean size of the change along each path).
    floor
        Smallest denominator (for cells that equal their baseline).

    Returns
    -------
    ``(cells,)``.
    """
    gap = (attributions.sum(-1) - difference).abs().amax(-1)
    size = difference.abs() if scale is None else scale
    return gap / size.amax(-1).clamp_min(floor)


def _repeat_context(context: Context, n_steps: int) -> Context:
    # rows are step-major: row s * cells + c belongs to cell c
    return {name: value.repeat(n_steps, *([1] * (value.dim() - 1))) for name, value in context.items()}


def _integrate(
    outputs: torch.Tensor, wrt: torch.Tensor, weights: torch.Tensor, n_steps: int, targets: Sequence[int]
) -> torch.Tensor:
    """Quadrature of d outputs[:, t] / d wrt over steps, ``(cells, targets, width)``."""
    n_cells = wrt.shape[0] // n_steps
    per_target = []
    for i, t in enumerate(targets):
        (grad,) = torch.autograd.grad(outputs[:, t].sum(), wrt, retain_graph=i < len(targets) - 1)
        per_target.append(torch.einsum("s,scw->cw", weights, grad.view(n_steps, n_cells, -1)))
    return torch.stack(per_target, 1)


def integrated_gradients(
    model: AttributionModel | LinearFirst,
    inputs: torch.Tensor,
    baselines: torch.Tensor | None = None,
    *,
    targets: Sequence[int] | None = None,
    context: Context | None = None,
    n_steps: int = 50,
    method: str = "gausslegendre",
    fast: bool | None = None,
) -> Attributions:
    """Integrated gradients of every target for a chunk of cells, all steps in one pass.

    Parameters
    ----------
    model
        ``model(u, context) -> (N, outputs)``, or a :class:`LinearFirst` for the fast path. Rows must
        not interact (modules in eval mode: batch normalisation uses running statistics).
    inputs
        ``(cells, features)``, in the space the attributions refer to.
    baselines
        ``(cells, features)``, or one baseline ``(features,)`` / ``(1, features)`` for all cells;
        ``None`` is the all-zero input.
    targets
        Output columns to attribute; default all.
    context
        Per-cell tensors the model reads besides the input (batch codes), first dimension ``cells``.
    n_steps
        Points of the quadrature rule.
    method
        One of :data:`METHODS`, see :func:`path_rule`.
    fast
        Use the fast path; default: whenever ``model`` is a :class:`LinearFirst`.

    Returns
    -------
    :class:`Attributions`: ``(cells, targets, features)`` attributions and the outputs at input and baseline.
    """
    alphas, weights = path_rule(method, n_steps)
    if inputs.dim() != 2:
        msg = f"inputs must be (cells, features), got shape {tuple(inputs.shape)}."
        raise ValueError(msg)
    n_cells, n_features = inputs.shape
    if baselines is None:
        baselines = torch.zeros(1, n_features, dtype=inputs.dtype, device=inputs.device)
    baselines = baselines.to(dtype=inputs.dtype, device=inputs.device)
    if baselines.dim() == 1:
        baselines = baselines.unsqueeze(0)
    if baselines.dim() != 2 or baselines.shape[1] != n_features or baselines.shape[0] not in (1, n_cells):
        msg = f"baselines must have shape ({n_features},), (1, {n_features}) or ({n_cells}, {n_features}), got {tuple(baselines.shape)}."
        raise ValueError(msg)
    context = dict(context or {})
    fast = isinstance(model, LinearFirst) if fast is None else fast
    if fast and not isinstance(model, LinearFirst):
        msg = "fast=True needs a LinearFirst model (a first linear layer and the rest of the network)."
        raise ValueError(msg)

    with torch.no_grad():
        probe = model(inputs[:1], {k: v[:1] for k, v in context.items()})
    n_outputs = probe.shape[1]
    targets = list(range(n_outputs)) if targets is None else [int(t) for t in targets]
    bad = [t for t in targets if not 0 <= t < n_outputs]
    if bad:
        msg = f"targets {bad} are out of range: the model has {n_outputs} outputs (0 to {n_outputs - 1})."
        raise ValueError(msg)

    a = torch.as_tensor(alphas, dtype=inputs.dtype, device=inputs.device).view(-1, 1, 1)
    w = torch.as_tensor(weights, dtype=inputs.dtype, device=inputs.device)
    step_context = _repeat_context(context, n_steps)
    diff = inputs - baselines
    if fast:
        assert isinstance(model, LinearFirst)
        weight = model.weight.detach().to(inputs.dtype)
        with torch.no_grad():
            start = baselines @ weight.T + model.offset(context)  # (cells or 1, hidden)
            start = start.expand(n_cells, -1)
            direction = diff @ weight.T  # (cells, hidden): the one features x hidden product per cell
        with torch.enable_grad():
            z = (start.unsqueeze(0) + a * direction.unsqueeze(0)).reshape(n_steps * n_cells, -1).requires_grad_(True)
            outputs = model.rest(z, step_context)
            hidden_grads = _integrate(outputs, z, w, n_steps, targets)  # (cells, targets, hidden)
        attributions = (hidden_grads @ weight) * diff.unsqueeze(1)
        with torch.no_grad():
            ends = model.rest(torch.cat([start + direction, start]), _repeat_context(context, 2))[:, targets]
        output, baseline_output = ends[:n_cells], ends[n_cells:]
    else:
        with torch.enable_grad():
            points = (baselines.unsqueeze(0) + a * diff.unsqueeze(0)).reshape(n_steps * n_cells, n_features)
            points = points.detach().requires_grad_(True)
            outputs = model(points, step_context)
            attributions = _integrate(outputs, points, w, n_steps, targets) * diff.unsqueeze(1)
        with torch.no_grad():
            ends = model(torch.cat([inputs, baselines.expand(n_cells, -1)]), _repeat_context(context, 2))[:, targets]
        output, baseline_output = ends[:n_cells], ends[n_cells:]
    return Attributions(attributions.detach(), output.detach(), baseline_output.detach())


def bytes_per_cell(n_features: int, n_steps: int, n_targets: int, *, n_hidden: int, fast: bool) -> int:
    """Rough peak memory of one cell in :func:`integrated_gradients`, to size chunks to a budget.

    The generic path holds every step's input, its gradient and the activations (about three times
    ``n_hidden`` per step); the fast path only the activations; both hold the ``(targets, features)``
    result and a few per-cell feature vectors.
    """
    per_step = 3 * n_hidden + (0 if fast else 3 * n_features)
    return 4 * (n_steps * per_step + (n_targets + 4) * n_features + 2 * n_targets * n_hidden)


@dataclass
class SampledBaselines:
    """Baselines drawn from reference cells: ``index[c]`` holds the rows whose data are the baselines of cell ``c``.

    Used by :func:`accumulate` for expected gradients (Erion et al. 2021): a cell's attributions are
    the mean of its integrated gradients against each of its baselines, so they sum to
    ``F(x) - mean_k F(b_k)``.

    Attributes
    ----------
    index
        ``(n_obs, n_baselines)`` int64 rows of the reference cells, on the device of the data.
    fetch
        ``fetch(rows) -> (len(rows), n_features)``: the data of those rows, in the data space (like
        ``"x"`` of the batches).
    n_features
        Features of the data.
    """

    index: torch.Tensor
    fetch: Callable[[torch.Tensor], torch.Tensor]
    n_features: int

    @property
    def n_baselines(self) -> int:
        """Baselines per cell."""
        return int(self.index.shape[1])


def _against_sampled(
    model: AttributionModel | LinearFirst,
    inputs: torch.Tensor,
    baselines: torch.Tensor,
    context: Context,
    n_baselines: int,
    **kwargs: Any,
) -> Attributions:
    """Integrated gradients of each cell against each of its ``n_baselines`` baselines, averaged per cell.

    ``baselines`` is ``(cells * n_baselines, features)``, cell-major; every cell is repeated once per
    baseline, with its own context (the baseline cells are read with the attributed cell's batch).
    """
    n_cells = inputs.shape[0]
    repeated = {name: value.repeat_interleave(n_baselines, 0) for name, value in context.items()}
    result = integrated_gradients(
        model, inputs.repeat_interleave(n_baselines, 0), baselines, context=repeated, **kwargs
    )
    attributions = result.attributions.view(n_cells, n_baselines, *result.attributions.shape[1:]).mean(1)
    output = result.output.view(n_cells, n_baselines, -1)
    baseline_output = result.baseline_output.view(n_cells, n_baselines, -1)
    path_change = (output - baseline_output).abs().mean(1)
    return Attributions(attributions, output[:, 0], baseline_output.mean(1), path_change)


@dataclass
class AccumulatedAttributions:
    """Integrated gradients of many cells, summarised over cells and groups by :func:`accumulate`.

    Attributes
    ----------
    n_cells
        Cells attributed.
    mean
        Mean attribution over the attributed cells, ``(targets, features)``, ``float32``.
    mean_abs
        Mean absolute attribution, ``(targets, features)``, ``float32``.
    output_change
        Mean of ``F_t(x) - F_t(baseline)`` over the attributed cells, ``(targets,)``, ``float64``.
    delta
        Completeness error per cell (:func:`completeness_error`), ``(n_obs,)``, ``float32``; NaN for
        cells not attributed.
    group_means
        Mean attribution per group, ``(groups, targets, features)``, ``float32`` (zeros for a group
        without attributed cells); ``None`` without groups.
    group_sizes
        Attributed cells per group, ``(groups,)``, ``int64``; ``None`` without groups.
    per_cell
        Each cell's attributions, ``(targets, n_obs, features)``, ``float32``, NaN for cells not
        attributed; ``None`` unless asked for.
    """

    n_cells: int
    mean: np.ndarray
    mean_abs: np.ndarray
    output_change: np.ndarray
    delta: np.ndarray
    group_means: np.ndarray | None = None
    group_sizes: np.ndarray | None = None
    per_cell: np.ndarray | None = None


def accumulate(
    model: AttributionModel | LinearFirst,
    batches: Iterable[dict[str, torch.Tensor]],
    *,
    n_obs: int,
    baseline: torch.Tensor | SampledBaselines,
    targets: Sequence[int],
    to_path_space: Callable[[torch.Tensor], torch.Tensor] | None = None,
    group_codes: torch.Tensor | None = None,
    n_groups: int = 0,
    n_steps: int = 50,
    method: str = "gausslegendre",
    store_per_cell: bool = False,
) -> AccumulatedAttributions:
    """Integrated gradients of every cell served by ``batches``, chunk by chunk, summed as they come.

    Only the sums (in ``float64``, on the baseline's device) and the per-cell completeness errors
    are kept between chunks, so memory does not grow with the number of cells unless
    ``store_per_cell`` asks for every attribution.

    Parameters
    ----------
    model
        As in :func:`integrated_gradients`.
    batches
        Minibatch dicts: ``"x"`` ``(cells, features)`` in the data space, ``"index"`` the cells' rows
        among ``n_obs``, optionally ``"batch"`` codes (passed to the model as context). Wrap it in a
        progress bar as needed.
    n_obs
        Rows the ``"index"`` of the batches refers to.
    baseline
        In the data space: one baseline ``(1, features)`` for all cells, one per row ``(n_obs, features)``,
        or :class:`SampledBaselines` (several reference cells per row, the attributions averaged over
        them: expected gradients along the full path of each).
    targets
        Output columns to attribute.
    to_path_space
        Maps data to the space the path runs in (e.g. ``log1p``); default the identity.
    group_codes
        Group of every row, ``(n_obs,)`` integers on the baseline's device, ``-1`` for none.
    n_groups
        Number of groups.
    n_steps
        Points of the quadrature rule.
    method
        One of :data:`METHODS`, see :func:`path_rule`.
    store_per_cell
        Keep every cell's attributions.

    Returns
    -------
    :class:`AccumulatedAttributions`.
    """
    to_path_space = to_path_space or (lambda x: x)
    sampled = baseline if isinstance(baseline, SampledBaselines) else None
    device = sampled.index.device if sampled is not None else baseline.device
    n_targets = len(targets)
    n_features = sampled.n_features if sampled is not None else baseline.shape[1]
    total = torch.zeros(n_targets, n_features, dtype=torch.float64, device=device)
    total_abs = torch.zeros_like(total)
    change = torch.zeros(n_targets, dtype=torch.float64, device=device)
    grouped = group_codes is not None
    group_sum = torch.zeros(n_groups, n_targets, n_features, dtype=torch.float64, device=device) if grouped else None
    group_count = torch.zeros(n_groups, dtype=torch.float64, device=device) if grouped else None
    delta = np.full(n_obs, np.nan, dtype=np.float32)
    per_cell = np.full((n_targets, n_obs, n_features), np.nan, dtype=np.float32) if store_per_cell else None
    shared_baseline = to_path_space(baseline) if sampled is None and baseline.shape[0] == 1 else None
    n_cells = 0
    for batch in batches:
        index = batch["index"]
        context = {"batch": batch["batch"]} if "batch" in batch else {}
        inputs = to_path_space(batch["x"])
        options = {"targets": targets, "n_steps": n_steps, "method": method}
        if sampled is not None:
            rows = sampled.index.index_select(0, index).reshape(-1)
            base = to_path_space(sampled.fetch(rows))
            result = _against_sampled(model, inputs, base, context, sampled.n_baselines, **options)
        else:
            base = shared_baseline if shared_baseline is not None else to_path_space(baseline.index_select(0, index))
            result = integrated_gradients(model, inputs, base, context=context, **options)
        attributions = result.attributions  # (cells, targets, features)
        total += attributions.sum(0, dtype=torch.float64)
        total_abs += attributions.abs().sum(0, dtype=torch.float64)
        change += (result.output - result.baseline_output).sum(0, dtype=torch.float64)
        if grouped:
            codes = group_codes.index_select(0, index)
            known = codes >= 0
            group_sum.index_add_(0, codes[known], attributions[known].double())
            group_count.index_add_(0, codes[known], torch.ones_like(codes[known], dtype=torch.float64))
        host_index = index.cpu().numpy()
        delta[host_index] = result.delta.cpu().numpy()
        if per_cell is not None:
            per_cell[:, host_index] = attributions.transpose(0, 1).cpu().numpy()
        n_cells += len(host_index)

    # an empty selection divides by one, leaving zeros rather than NaN
    denominator = max(n_cells, 1)
    out = AccumulatedAttributions(
        n_cells=n_cells,
        mean=(total / denominator).cpu().numpy().astype(np.float32),
        mean_abs=(total_abs / denominator).cpu().numpy().astype(np.float32),
        output_change=(change / denominator).cpu().numpy(),
        delta=delta,
        per_cell=per_cell,
    )
    if grouped:
        means = group_sum / group_count.clamp_min(1).view(-1, 1, 1)
        out.group_means = means.cpu().numpy().astype(np.float32)
        out.group_sizes = group_count.cpu().numpy().astype(np.int64)
    return out


# ---------------------------------------------------------------------------------------------- adaptors


def vae_encoder(module: Any, *, input_space: str = "encoder", output: str = "mean") -> LinearFirst | AttributionModel:
    """The latent mean of a :class:`~scdgm.modules.VAEModule` as an attribution model.

    Parameters
    ----------
    module
        A ``VAEModule`` in eval mode.
    input_space
        ``"encoder"``: the model reads what the encoder's first layer reads
        (:meth:`~scdgm.modules.VAEModule.encoder_input`: ``log1p`` of the counts for count
        likelihoods, the data itself otherwise) and is a :class:`LinearFirst` for the fast path.
        ``"data"``: the model reads the data as stored (raw counts), the ``log1p`` is part of it,
        and it goes the generic path.
    output
        Only ``"mean"``: the posterior mean (the code for the autoencoders).

    Returns
    -------
    ``model(u, context) -> (N, n_latent)``; the context holds ``"batch"`` codes for a
    batch-conditional module.
    """
    if output != "mean":
        msg = f"output={output!r} is not supported for a VAE encoder; only the latent mean."
        raise ValueError(msg)
    if input_space == "data":
        return lambda u, context: module.encode(u, context.get("batch"))[0]
    if input_space != "encoder":
        msg = f"input_space={input_space!r} is not supported. Choose 'encoder' or 'data'."
        raise ValueError(msg)
    return LinearFirst(
        module.encoder_first_weight(),
        lambda context: module.encoder_first_offset(context.get("batch")),
        lambda z, context: module.encoder_rest(z, context.get("batch")),
    )


def scvi_encoder(module: Any, *, input_space: str = "encoder") -> LinearFirst | AttributionModel:
    """The latent mean ``qz.loc`` of a trained scvi-tools ``VAE`` module (``SCVI.module``) as an attribution model.

    Follows scvi-tools' own inference: ``log1p`` of the counts when ``log_variational``, then the
    ``z_encoder``. Batch codes (``context["batch"]``, shape ``(N, 1)``) are passed on as scvi-tools
    does; continuous or extra categorical covariates are not supported.

    Parameters
    ----------
    module
        ``scvi_model.module``, in eval mode.
    input_space
        ``"encoder"``: attribute ``log1p(counts)`` (what the encoder reads, when ``log_variational``);
        the fast path applies when the encoder's first layer sees the genes only (the scvi-tools
        default, ``encode_covariates=False``). ``"data"``: attribute the counts, generic path.

    Returns
    -------
    ``model(u, context) -> (N, n_latent)``.
    """
    encoder = module.z_encoder
    if getattr(module, "batch_representation", "one-hot") != "one-hot" and getattr(module, "encode_covariates", False):
        msg = "scvi-tools models with batch_representation='embedding' and encode_covariates=True are not supported."
        raise ValueError(msg)
    log_variational = bool(getattr(module, "log_variational", True))

    def batch_of(context: Context, n: int, device: torch.device) -> torch.Tensor:
        batch = context.get("batch")
        if batch is None:
            return torch.zeros(n, 1, dtype=torch.long, device=device)
        return batch.reshape(-1, 1).long()

    def generic(u: torch.Tensor, context: Context) -> torch.Tensor:
        h = torch.log1p(u) if (input_space == "data" and log_variational) else u
        qz, _ = _scvi_z(encoder, h, batch_of(context, u.shape[0], u.device))
        return qz

    if input_space not in {"encoder", "data"}:
        msg = f"input_space={input_space!r} is not supported. Choose 'encoder' or 'data'."
        raise ValueError(msg)
    fc = encoder.encoder
    if input_space == "data" or fc.n_cov > 0:
        return generic
    layer0 = list(fc.fc_layers)[0]
    linear = layer0[0]

    def offset(context: Context) -> torch.Tensor:
        return linear.bias if linear.bias is not None else torch.zeros(linear.out_features, device=linear.weight.device)

    def rest(z: torch.Tensor, context: Context) -> torch.Tensor:
        h = z
        for sub in list(layer0)[1:]:
            if sub is not None:
                h = sub(h)
        for i, layers in enumerate(list(fc.fc_layers)[1:], start=1):
            for sub in layers:
                if sub is None:
                    continue
                if isinstance(sub, nn.Linear) and fc.inject_into_layer(i) and fc.n_cov > 0:  # pragma: no cover
                    msg = "covariates injected into deeper layers are not supported by the fast path."
                    raise ValueError(msg)
                h = sub(h)
        return encoder.mean_encoder(h)

    return LinearFirst(linear.weight, offset, rest)


def _scvi_z(encoder: nn.Module, h: torch.Tensor, batch: torch.Tensor) -> tuple[torch.Tensor, Any]:
    out = encoder(h, batch)
    if isinstance(out[0], torch.Tensor):  # (q_m, q_v, z) when return_dist is False
        return out[0], out
    return out[0].loc, out


def classifier_head(
    module: Any, weights: dict[str, torch.Tensor], *, output: str = "probability"
) -> Callable[[torch.Tensor, Context], torch.Tensor]:
    """Posterior predictive of a :class:`~scdgm.modules.BayesianClassifierModule` for fixed weight draws.

    The weight draws are fixed once, so the function is deterministic along the path and the
    integral is that of one function (attributions of an average over draws are the average of
    the attributions per draw).

    Parameters
    ----------
    module
        The classifier, in eval mode.
    weights
        ``module.draw_weights(n)``: ``"weight_<i>"`` ``(draws, out, in)``, ``"bias_<i>"`` ``(draws, out)``.
    output
        ``"probability"``: class probabilities averaged over draws (the posterior predictive).
        ``"logit"``: class logits averaged over draws.

    Returns
    -------
    ``head(features, context) -> (N, classes)``.
    """
    from ._bayes import mlp_logits

    if output not in {"probability", "logit"}:
        msg = f"output={output!r} is not supported. Choose 'probability' or 'logit'."
        raise ValueError(msg)

    def head(h: torch.Tensor, context: Context) -> torch.Tensor:
        logits = mlp_logits(module.standardize(h), weights, module.n_layers)
        return (torch.softmax(logits, dim=-1) if output == "probability" else logits).mean(0)

    return head


def classifier_on_inputs(module: Any, weights: dict[str, torch.Tensor], *, output: str = "probability") -> LinearFirst:
    """:func:`classifier_head` as a :class:`LinearFirst` model of the classifier's own inputs (fast path).

    The standardisation (and projection) and the first layer of every draw are one linear map: the
    draws' first-layer weights are stacked into one ``(draws * hidden, features)`` matrix with the
    standardisation folded in.

    Parameters
    ----------
    module
        The classifier, in eval mode.
    weights
        As in :func:`classifier_head`.
    output
        As in :func:`classifier_head`.

    Returns
    -------
    The model of the inputs the classifier reads (before its standardisation).
    """
    from ._bayes import mlp_logits

    if output not in {"probability", "logit"}:
        msg = f"output={output!r} is not supported. Choose 'probability' or 'logit'."
        raise ValueError(msg)
    w0, b0 = weights["weight_0"], weights["bias_0"]  # (draws, out, in), (draws, out)
    n_draws, n_out, _ = w0.shape
    scaled = module.feature_weights(w0) / module.feature_sd  # W (x - m) / s = (W / s) x - (W / s) m
    stacked = scaled.reshape(n_draws * n_out, -1)
    bias = (b0 - scaled @ module.feature_mean).reshape(-1)
    later = {k: v for k, v in weights.items() if not k.endswith("_0")}

    def rest(z: torch.Tensor, context: Context) -> torch.Tensor:
        h = z.view(-1, n_draws, n_out).transpose(0, 1)  # (draws, N, out)
        if module.n_layers == 0:
            logits = h
        else:
            h = F.relu(h)
            shifted = {f"{k.rsplit('_', 1)[0]}_{int(k.rsplit('_', 1)[1]) - 1}": v for k, v in later.items()}
            logits = mlp_logits(h, shifted, module.n_layers - 1)
        return (torch.softmax(logits, dim=-1) if output == "probability" else logits).mean(0)

    return LinearFirst(stacked, lambda context: bias, rest)
