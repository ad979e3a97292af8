"""``tl.integrated_gradients``: which genes drive a latent factor or a predicted class, per cell and per group."""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd
from anndata import AnnData

from .._keys import AttributionKeys
from .._models import ModelRecord, read_record
from .._results import record_params, write_results
from .._settings import logger, settings
from .._warnings import ScdgmWarning
from ._common import (
    apply_stored_model,
    check_choice,
    check_copy,
    check_int,
    check_same_features,
    check_uns_free,
    resolve_device_seed,
    top_genes_entry,
)

if TYPE_CHECKING:
    import torch

    from ..data import PreparedData

METHODS = ("gausslegendre", "riemann_left", "riemann_right", "riemann_middle", "riemann_trapezoid")
INPUT_SPACES = ("encoder", "data")
OUTPUTS = ("probability", "logit")
DELTA_WARN = 0.05
"""Completeness error above which a warning advises more steps (checked on the 90th percentile of cells)."""


@dataclass
class AttributionTarget:
    """What :func:`integrated_gradients` needs of a stored model, built per model class by a registry entry.

    Attributes
    ----------
    model
        ``model(u, context) -> (N, outputs)`` on inputs in the path space, or a
        :class:`~scdgm.modules._attribution.LinearFirst` for the fast path.
    names
        One name per output (``"latent_0"``, ``"factor_0"``, class names).
    data
        The cells as the model's input layer expects them (genes, raw counts for count models).
    to_path_space
        Maps a ``(cells, genes)`` tensor of ``data`` to the space the path runs in (``log1p`` when the
        attributions refer to the encoder's input, else the identity).
    n_hidden
        Widest activation per step, to size chunks.
    description
        Human-readable source, recorded in ``.uns``.
    """

    model: Any
    names: list[str]
    data: PreparedData
    to_path_space: Callable[[torch.Tensor], torch.Tensor]
    n_hidden: int
    description: str
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class TargetRequest:
    """Everything a target builder may read."""

    adata: AnnData
    key: str
    record: ModelRecord | None
    device: str
    input_space: str
    output: str
    n_samples: int
    seed: int
    layer: str | None
    batch_key: str | None


TargetBuilder = Callable[[TargetRequest], AttributionTarget]
TARGET_BUILDERS: dict[str, TargetBuilder] = {}
"""Builders of attribution targets, keyed by the ``class_name`` of the stored model."""


def register_target(class_name: str) -> Callable[[TargetBuilder], TargetBuilder]:
    """Register how the stored models of ``class_name`` become an :class:`AttributionTarget`."""

    def decorate(builder: TargetBuilder) -> TargetBuilder:
        TARGET_BUILDERS[class_name] = builder
        return builder

    return decorate


def _identity(x: torch.Tensor) -> torch.Tensor:
    return x


def _log1p(x: torch.Tensor) -> torch.Tensor:
    import torch

    return torch.log1p(x)


def _vae_encoder_target(request: TargetRequest, key: str) -> AttributionTarget:
    """The VAE of ``.uns[key]``: latent means, rotated like the loadings when ``.uns[key]`` holds a rotation."""
    import torch

    from ..modules._attribution import vae_encoder

    applied = apply_stored_model(
        request.adata, key, device=request.device, layer=request.layer, batch_key=request.batch_key
    )
    module = applied.module
    model = vae_encoder(module, input_space=request.input_space)
    n_latent = int(module.n_latent)
    names = [f"latent_{k}" for k in range(n_latent)]
    entry = request.adata.uns[key]
    rotation = entry.get("rotation") if isinstance(entry, dict) else None
    if rotation is not None:
        # tl.ldvae_loadings reports rotated factors; attribute those, so columns match its loadings.
        matrix = torch.as_tensor(np.asarray(rotation), dtype=torch.float32, device=request.device)
        head = lambda h, context: h @ matrix  # noqa: E731
        model = model.then(head) if hasattr(model, "then") else _compose(model, head)
        names = [f"factor_{k}" for k in range(matrix.shape[1])]
    counts = module.likelihood in ("nb", "zinb", "poisson")
    to_path = _log1p if counts and request.input_space == "encoder" else _identity
    n_hidden = int(module.init_kwargs["n_hidden"])
    return AttributionTarget(model, names, applied.data, to_path, n_hidden, f"VAEModule in .uns[{key!r}]")


def _compose(model: Callable, head: Callable) -> Callable:
    return lambda u, context: head(model(u, context), context)


@register_target("VAEModule")
def _vae_target(request: TargetRequest) -> AttributionTarget:
    return _vae_encoder_target(request, request.key)


@register_target("BayesianClassifierModule")
def _bayes_target(request: TargetRequest) -> AttributionTarget:
    """A Bayesian classifier: its posterior predictive, through the encoder when it reads a latent space."""
    from ..modules._attribution import classifier_head, classifier_on_inputs
    from ..train import seeded

    record, adata = request.record, request.adata
    use_rep = record.input.get("use_rep")
    if use_rep is not None and record.encoder_key is None:
        msg = (
            f"The classifier in .uns[{request.key!r}] reads .obsm[{use_rep!r}], but no stored encoder wrote it; "
            "attributions to genes need that encoder (train the classifier on the latent space of `dgm.tl.vae`)."
        )
        raise ValueError(msg)
    applied = apply_stored_model(
        adata,
        request.key,
        device=request.device,
        layer=request.layer,
        batch_key=request.batch_key,
        prepare=use_rep is None,
    )
    module = applied.module
    with seeded(request.seed, request.device):
        weights = {k: v.detach() for k, v in module.draw_weights(request.n_samples).items()}
    n_draws = int(weights["weight_0"].shape[0])
    names = (
        [str(c) for c in record.classes]
        if record.classes is not None
        else [f"class_{k}" for k in range(int(record.init_kwargs["n_classes"]))]
    )
    hidden = int(module.init_kwargs["n_hidden"]) if module.n_layers > 0 else len(names)
    if use_rep is not None:
        owner = record.encoder_key
        encoder = _vae_encoder_target(request, owner)
        if encoder.names[0].startswith("factor_"):
            msg = f".obsm[{use_rep!r}] is a rotated representation; attributing through a rotation is not supported."
            raise ValueError(msg)
        head = classifier_head(module, weights, output=request.output)
        model = encoder.model.then(head) if hasattr(encoder.model, "then") else _compose(encoder.model, head)
        return AttributionTarget(
            model,
            names,
            encoder.data,
            encoder.to_path_space,
            max(encoder.n_hidden, n_draws * hidden),
            f"BayesianClassifierModule in .uns[{request.key!r}] on .obsm[{use_rep!r}] of the encoder in .uns[{owner!r}]",
            extra={"encoder_key": owner, "n_samples": n_draws},
        )
    model = classifier_on_inputs(module, weights, output=request.output)
    return AttributionTarget(
        model,
        names,
        applied.data,
        _identity,
        n_draws * hidden,
        f"BayesianClassifierModule in .uns[{request.key!r}]",
        extra={"n_samples": n_draws},
    )


def _scvi_target(adata: AnnData, scvi_model: Any, request: TargetRequest) -> AttributionTarget:
    """The encoder of a trained scvi-tools model (``SCVI`` and relatives with a ``z_encoder``)."""
    import scipy.sparse as sp

    from ..data import PreparedData
    from ..modules._attribution import scvi_encoder

    module = getattr(scvi_model, "module", None)
    if module is None or not hasattr(module, "z_encoder") or not getattr(scvi_model, "is_trained", True):
        msg = f"scvi_model={type(scvi_model).__name__} is not a trained scvi-tools model with an encoder (e.g. SCVI)."
        raise ValueError(msg)
    if getattr(module, "encode_covariates", False) and (
        getattr(module, "n_continuous_cov", 0) or getattr(module, "n_cats_per_cov", None)
    ):
        msg = "scvi-tools models whose encoder reads extra covariates (encode_covariates=True) are not supported."
        raise ValueError(msg)
    module = module.to(request.device).eval()
    manager = scvi_model.get_anndata_manager(scvi_model._validate_anndata(adata), required=True)
    x = manager.get_from_registry("X")
    x = sp.csr_matrix(x, dtype=np.float32) if sp.issparse(x) else np.asarray(x, dtype=np.float32)
    covariates = {}
    if "batch" in manager.data_registry:
        covariates["batch"] = np.asarray(manager.get_from_registry("batch")).reshape(-1).astype(np.int64)
    data = PreparedData(
        X=x,
        source=f"the scvi-tools registry of {type(scvi_model).__name__}",
        var_names=np.asarray(adata.var_names).astype(str),
        obs_names=np.asarray(adata.obs_names).astype(str),
        library=np.asarray(x.sum(1)).reshape(-1).astype(np.float32),
        covariates=covariates,
    )
    log_variational = bool(getattr(module, "log_variational", True))
    model = scvi_encoder(module, input_space=request.input_space)
    to_path = _log1p if log_variational and request.input_space == "encoder" else _identity
    return AttributionTarget(
        model,
        [f"latent_{k}" for k in range(int(module.n_latent))],
        data,
        to_path,
        int(getattr(module, "n_hidden", 128)),
        f"scvi-tools {type(scvi_model).__name__}",
    )


def _build_target(request: TargetRequest) -> AttributionTarget:
    name = request.record.class_name
    if name not in TARGET_BUILDERS:
        msg = (
            f"Integrated gradients does not know models of class {name!r} (in .uns[{request.key!r}]); "
            f"known: {sorted(TARGET_BUILDERS)}."
        )
        raise ValueError(msg)
    return TARGET_BUILDERS[name](request)


def _select_targets(target: Any, names: list[str], key: str) -> list[int]:
    if target is None:
        return list(range(len(names)))
    items = [target] if isinstance(target, str | int | np.integer) else list(target)
    if not items:
        msg = "target is empty; pass None for all targets, an index, a name or a list of them."
        raise ValueError(msg)
    out = []
    for item in items:
        if isinstance(item, bool):
            msg = f"target {item!r} is neither an index nor a name."
            raise ValueError(msg)
        if isinstance(item, int | np.integer):
            if not 0 <= item < len(names):
                msg = f"target index {int(item)} is out of range: the model in .uns[{key!r}] has {len(names)} targets (0 to {len(names) - 1})."
                raise IndexError(msg)
            out.append(int(item))
        elif str(item) in names:
            out.append(names.index(str(item)))
        else:
            msg = f"target {item!r} is not one of the targets of .uns[{key!r}]: {names}."
            raise KeyError(msg)
    if len(set(out)) != len(out):
        msg = f"target lists a target twice: {items}."
        raise ValueError(msg)
    return out


def _feature_order(adata: AnnData, data: PreparedData) -> np.ndarray | None:
    """Columns of ``adata`` in the model's feature order (``None``: the same order)."""
    return check_same_features(adata.var_names, data.var_names, source="adata.var_names", key="model")


def _resolve_baseline(baseline: Any, adata: AnnData, data: PreparedData, store: Any, chunk: int) -> tuple[Any, str]:
    """The baseline in the data space and model feature order: ``(1, genes)`` or ``(cells, genes)`` float32."""
    if isinstance(baseline, str):
        check_choice("baseline", baseline, ("zeros", "mean"))
        if baseline == "zeros":
            return np.zeros((1, data.n_vars), dtype=np.float32), "zeros"
        from ..data import MiniBatches

        total = np.zeros(data.n_vars, dtype=np.float64)
        for batch in MiniBatches(store, np.arange(data.n_obs), batch_size=chunk, shuffle=False):
            total += batch["x"].double().sum(0).cpu().numpy()
        return (total / max(data.n_obs, 1)).astype(np.float32)[None, :], "mean"
    array = np.asarray(baseline.toarray() if hasattr(baseline, "toarray") else baseline, dtype=np.float32)
    if array.shape not in {(adata.n_vars,), (1, adata.n_vars), (adata.n_obs, adata.n_vars)}:
        msg = (
            f"baseline has shape {array.shape}; expected one cell ({adata.n_vars},) or one per cell "
            f"({adata.n_obs}, {adata.n_vars}), in the genes of adata."
        )
        raise ValueError(msg)
    if not np.all(np.isfinite(array)):
        msg = "baseline holds NaN or infinite values."
        raise ValueError(msg)
    array = array.reshape(-1, adata.n_vars)
    order = _feature_order(adata, data)
    if order is not None:
        array = array[:, order]
    return np.ascontiguousarray(array), "array"


def _rows_for_adata(values: np.ndarray, order: np.ndarray | None, n_vars: int) -> np.ndarray:
    """``(..., model genes)`` values placed in the gene order of adata; genes the model lacks get NaN."""
    if order is None:
        return values
    out = np.full((*values.shape[:-1], n_vars), np.nan, dtype=values.dtype)
    out[..., order] = values
    return out


def _safe_name(name: str) -> str:
    return str(name).replace("/", "_")


def integrated_gradients(
    adata: AnnData,
    *,
    model_key: str = "vae",
    target: int | str | Sequence[int | str] | None = None,
    output: Literal["probability", "logit"] = "probability",
    baseline: Literal["zeros", "mean"] | np.ndarray = "zeros",
    n_steps: int = 50,
    method: Literal[
        "gausslegendre", "riemann_left", "riemann_right", "riemann_middle", "riemann_trapezoid"
    ] = "gausslegendre",
    input_space: Literal["encoder", "data"] = "encoder",
    groupby: str | None = None,
    store_per_cell: bool = False,
    n_top: int = 20,
    layer: str | None = None,
    batch_key: str | None = None,
    scvi_model: Any = None,
    n_samples: int = 50,
    max_cells: int | None = None,
    memory_budget_bytes: int = 2**30,
    device: str | None = None,
    seed: int | None = None,
    key_added: str | None = None,
    copy: bool = False,
) -> AnnData | None:
    r"""Integrated gradients: each gene's contribution to a latent factor or a class prediction, per cell.

    For a cell :math:`x`, a baseline :math:`b` and a model output :math:`F_t`, the attribution of gene
    :math:`g` (Sundararajan et al. 2017) is

    .. math::

        A_{gt}(x) = (x_g - b_g) \int_0^1 \frac{\partial F_t(b + \alpha (x - b))}{\partial x_g} \, d\alpha ,

    computed with a quadrature rule of ``n_steps`` points. Attributions are complete:
    :math:`\sum_g A_{gt}(x) = F_t(x) - F_t(b)`; the gap left by the quadrature is reported per cell.

    Targets are the latent means of a VAE (:func:`scdgm.tl.vae`; the rotated factors of
    :func:`scdgm.tl.ldvae_loadings`), the latent means of a trained scvi-tools model, or the class
    probabilities (or logits) of a classifier (:func:`scdgm.tl.bayes_classify`): for a Bayesian
    classifier, the posterior predictive averaged over ``n_samples`` weight draws; for a classifier
    trained on a latent representation (``use_rep="X_vae"``), attributions go through the encoder
    back to the genes.

    Which input is attributed (``input_space``): count models read ``log1p(counts)``. With
    ``"encoder"`` (default) the path runs in that space, from ``log1p(b)`` to ``log1p(x)``, and
    attributions are of the log-expression the encoder reads; the first layer is linear there, so
    a fast path computes the genes x hidden product once per cell instead of once per step. With
    ``"data"`` the path runs in counts from ``b`` to ``x`` through the ``log1p``. Both integrate the
    same change ``F(x) - F(b)``; they share out that change differently. For Gaussian/Bernoulli
    models and classifiers on genes the two are the same space.

    Parameters
    ----------
    adata
        Cells x genes, with the stored model (the training AnnData, or one with the same genes).
    model_key
        ``.uns`` key of the stored model: ``key_added`` of :func:`scdgm.tl.vae`,
        :func:`scdgm.tl.ldvae_loadings` or :func:`scdgm.tl.bayes_classify`.
    target
        Index, name (``"latent_3"``, ``"factor_0"``, a class) or list of them; default all.
    output
        Classifiers: attribute the class ``"probability"`` or the ``"logit"`` (each averaged over
        weight draws). Ignored by encoders.
    baseline
        ``"zeros"``: the all-zero cell. ``"mean"``: the mean cell of ``adata`` (in the data as stored,
        e.g. mean counts). An array: one cell ``(n_vars,)`` or one per cell ``(n_obs, n_vars)``, in
        the data space and gene order of ``adata``.
    n_steps
        Points of the quadrature rule along the path.
    method
        ``"gausslegendre"`` (most accurate per step), or a Riemann rule: ``"riemann_left"``,
        ``"riemann_right"``, ``"riemann_middle"``, ``"riemann_trapezoid"`` (textbook trapezoid, weights
        summing to one).
    input_space
        ``"encoder"`` or ``"data"``, see above.
    groupby
        ``.obs`` column of groups; the mean attribution per group is stored too.
    store_per_cell
        Also store each cell's attributions, one cells x genes layer per target.
    n_top
        Genes listed per target and direction in ``.uns``.
    layer, batch_key
        Where the model reads its input and batches; default: what it was trained with.
    scvi_model
        Attribute the latent means of this trained scvi-tools model (``SCVI``) instead of a stored
        model; ``model_key`` then only names the outputs (``"ig_scvi"`` by default).
    n_samples
        Weight draws of a Bayesian classifier averaged in its posterior predictive (all of them for
        NUTS, at most as many as stored).
    max_cells
        Attribute a random subset of this many cells (seeded); the others get NaN per-cell values.
    memory_budget_bytes
        Memory the steps x cells x genes work of one chunk may take on the device; chunks are sized to it.
    device
        Where the model runs.
    seed
        Seeds the weight draws of a Bayesian classifier and the ``max_cells`` subset.
    key_added
        Stem of the output keys; default ``"ig_<model_key>"``.
    copy
        Return a new AnnData instead of writing into ``adata``.

    Returns
    -------
    ``None``, or a new AnnData when ``copy=True``, with these fields written (``<key>`` is
    ``key_added``, by default ``ig_<model_key>``):

    ``.varm["<key>"]``
        Genes x targets: mean attribution over the attributed cells (NaN for genes the model lacks).
    ``.varm["<key>_abs"]``
        Genes x targets: mean absolute attribution.
    ``.obs["<key>_delta"]``
        Completeness error per cell: :math:`\max_t |\sum_g A_{gt} - (F_t(x) - F_t(b))|` divided by
        :math:`\max_t |F_t(x) - F_t(b)|` (floored at 1e-6). A warning advises more steps when the
        90th percentile exceeds 5 %.
    ``.layers["<key>_<target>"]``
        Only with ``store_per_cell``: cells x genes attributions of each target.
    ``.uns["<key>"]``
        ``params``; ``targets`` (names, the columns of the ``.varm`` entries); ``top_genes``
        (``targets``; ``positive`` / ``negative``: targets x ``n_top`` genes with the most positive
        and most negative mean attribution; read them with :func:`scdgm.get.top_genes`);
        ``output_change`` (mean of :math:`F_t(x) - F_t(b)` per target); ``delta_summary`` (median,
        90th percentile and maximum of the completeness error); ``source``; with ``groupby``:
        ``group_means`` (``groups``: the group names; ``sizes``: cells per group; ``values``: groups x
        genes x targets mean attributions; read them with :func:`scdgm.get.attributions`) and ``groupby``.

    Examples
    --------
    >>> import scdgm as dgm
    >>> adata = dgm.datasets.simulate(500, 100, seed=0)
    >>> dgm.tl.vae(adata, n_latent=5, max_epochs=20)  # doctest: +SKIP
    >>> dgm.tl.integrated_gradients(adata, model_key="vae", groupby="cell_type")  # doctest: +SKIP
    >>> dgm.get.top_genes(adata, "ig_vae", target="latent_0")  # doctest: +SKIP
    >>> dgm.pl.attributions(adata, key="ig_vae")  # doctest: +SKIP
    """
    import torch

    from ..data import BatchStore, MiniBatches
    from ..modules._attribution import LinearFirst, bytes_per_cell, path_rule
    from ..modules._attribution import integrated_gradients as attribute_chunk

    # ---- validate everything that needs no model
    check_int("n_steps", n_steps)
    check_choice("method", method, METHODS)
    path_rule(method, n_steps)  # riemann_trapezoid needs two points
    check_choice("input_space", input_space, INPUT_SPACES)
    check_choice("output", output, OUTPUTS)
    check_int("n_top", n_top)
    check_int("n_samples", n_samples)
    check_int("memory_budget_bytes", memory_budget_bytes)
    if max_cells is not None:
        check_int("max_cells", max_cells)
    if groupby is not None and groupby not in adata.obs:
        msg = f"groupby={groupby!r} is not a column of .obs (columns: {list(adata.obs.columns)})."
        raise KeyError(msg)
    device, seed = resolve_device_seed(device, seed)

    # ---- model -> target
    request = TargetRequest(
        adata=adata,
        key=model_key,
        record=None,
        device=device,
        input_space=input_space,
        output=output,
        n_samples=n_samples,
        seed=seed,
        layer=layer,
        batch_key=batch_key,
    )
    stem = key_added or (
        ("ig_scvi" if model_key == "vae" else f"ig_{model_key}") if scvi_model is not None else f"ig_{model_key}"
    )
    keys = AttributionKeys(stem)
    check_uns_free(adata, keys.uns, tool="integrated_gradients")
    check_copy(adata, copy)
    if scvi_model is not None:
        spec = _scvi_target(adata, scvi_model, request)
    else:
        request.record = read_record(adata, model_key)
        spec = _build_target(request)
    chosen = _select_targets(target, spec.names, model_key if scvi_model is None else "scvi_model")
    names = [spec.names[t] for t in chosen]
    data = spec.data
    order = _feature_order(adata, data)
    store = BatchStore.from_prepared(data, device)

    fast = isinstance(spec.model, LinearFirst)
    per_cell = bytes_per_cell(data.n_vars, n_steps, len(chosen), n_hidden=spec.n_hidden, fast=fast)
    chunk = int(max(1, min(memory_budget_bytes // per_cell, data.n_obs)))
    baseline_values, baseline_kind = _resolve_baseline(baseline, adata, data, store, chunk)
    if baseline_values.shape[0] not in (1, data.n_obs):  # pragma: no cover - guarded above
        msg = "baseline rows do not match the cells."
        raise ValueError(msg)

    rng = np.random.default_rng(seed)
    if max_cells is not None and max_cells < data.n_obs:
        cells = np.sort(rng.choice(data.n_obs, size=max_cells, replace=False))
    else:
        cells = np.arange(data.n_obs)

    group_codes = None
    group_names: list[str] = []
    if groupby is not None:
        groups = pd.Categorical(adata.obs[groupby])
        group_names = [str(c) for c in groups.categories]
        group_codes = torch.as_tensor(np.asarray(groups.codes, dtype=np.int64), device=device)

    # ---- attribute chunk by chunk
    n_targets, n_genes = len(chosen), data.n_vars
    total = torch.zeros(n_targets, n_genes, dtype=torch.float64, device=device)
    total_abs = torch.zeros_like(total)
    change = torch.zeros(n_targets, dtype=torch.float64, device=device)
    group_sum = (
        torch.zeros(len(group_names), n_targets, n_genes, dtype=torch.float64, device=device)
        if group_codes is not None
        else None
    )
    group_count = torch.zeros(len(group_names), dtype=torch.float64, device=device) if group_codes is not None else None
    delta = np.full(data.n_obs, np.nan, dtype=np.float32)
    layers = np.full((n_targets, data.n_obs, n_genes), np.nan, dtype=np.float32) if store_per_cell else None
    baseline_tensor = torch.as_tensor(baseline_values, device=device)
    shared_baseline = baseline_tensor.shape[0] == 1
    if shared_baseline:
        baseline_path = spec.to_path_space(baseline_tensor)

    from tqdm.auto import tqdm

    batches = MiniBatches(store, cells, batch_size=chunk, shuffle=False)
    n_chunks = math.ceil(len(cells) / chunk)
    logger.info(
        f"integrated gradients of {n_targets} targets for {len(cells)} cells x {n_genes} genes: "
        f"{n_steps} steps ({method}), {n_chunks} chunk(s) of up to {chunk} cells on {device}"
    )
    bar = tqdm(
        batches,
        total=n_chunks,
        desc="integrated gradients",
        disable=not settings.progress_bar or n_chunks < 2,
        leave=False,
    )
    for batch in bar:
        index = batch["index"]
        inputs = spec.to_path_space(batch["x"])
        base = baseline_path if shared_baseline else spec.to_path_space(baseline_tensor.index_select(0, index))
        context = {"batch": batch["batch"]} if "batch" in batch else {}
        result = attribute_chunk(
            spec.model, inputs, base, targets=chosen, context=context, n_steps=n_steps, method=method
        )
        attributions = result.attributions  # (cells, targets, genes)
        total += attributions.sum(0, dtype=torch.float64)
        total_abs += attributions.abs().sum(0, dtype=torch.float64)
        change += (result.output - result.baseline_output).sum(0, dtype=torch.float64)
        if group_sum is not None:
            codes = group_codes.index_select(0, index)
            known = codes >= 0
            group_sum.index_add_(0, codes[known], attributions[known].double())
            group_count.index_add_(0, codes[known], torch.ones_like(codes[known], dtype=torch.float64))
        host_index = index.cpu().numpy()
        delta[host_index] = result.delta.cpu().numpy()
        if layers is not None:
            layers[:, host_index] = attributions.transpose(0, 1).cpu().numpy()
    bar.close()

    n_cells = max(len(cells), 1)
    mean = (total / n_cells).cpu().numpy().T.astype(np.float32)  # genes x targets
    mean_abs = (total_abs / n_cells).cpu().numpy().T.astype(np.float32)
    attributed = delta[cells]
    delta_summary = {
        "median": float(np.median(attributed)),
        "p90": float(np.quantile(attributed, 0.9)),
        "max": float(np.max(attributed)),
    }
    if delta_summary["p90"] > DELTA_WARN:
        share = float(np.mean(attributed > DELTA_WARN))
        advice = "raise n_steps" + ("" if method == "gausslegendre" else " or use method='gausslegendre'")
        warnings.warn(
            f"Integrated gradients are incomplete by more than {DELTA_WARN:.0%} of the output change for "
            f"{share:.0%} of cells (90th percentile {delta_summary['p90']:.1%}, see .obs[{AttributionKeys(stem).delta!r}]): "
            f"{advice} (now {n_steps}).",
            ScdgmWarning,
            stacklevel=2,
        )

    mean_adata = _rows_for_adata(mean.T, order, adata.n_vars).T
    abs_adata = _rows_for_adata(mean_abs.T, order, adata.n_vars).T
    uns_entry: dict[str, Any] = {
        "params": record_params(
            "integrated_gradients",
            model_key=None if scvi_model is not None else model_key,
            scvi_model=type(scvi_model).__name__ if scvi_model is not None else None,
            target=names,
            output=output,
            baseline=baseline_kind,
            n_steps=n_steps,
            method=method,
            input_space=input_space,
            groupby=groupby,
            store_per_cell=store_per_cell,
            n_top=n_top,
            layer=layer,
            batch_key=batch_key,
            n_samples=spec.extra.get("n_samples"),
            max_cells=max_cells,
            n_cells=len(cells),
            memory_budget_bytes=memory_budget_bytes,
            chunk_size=chunk,
            device=device,
            seed=seed,
        ),
        "targets": np.asarray(names, dtype=object),
        "top_genes": top_genes_entry(mean_adata, adata.var_names, names, n_top),
        "output_change": (change / n_cells).cpu().numpy(),
        "delta_summary": delta_summary,
        "source": spec.description,
    }
    if group_sum is not None:
        counts = group_count.cpu().numpy()
        means = (group_sum / group_count.clamp_min(1).view(-1, 1, 1)).cpu().numpy().astype(np.float32)
        kept = np.flatnonzero(counts > 0)
        uns_entry["group_means"] = {
            "groups": np.asarray([group_names[i] for i in kept], dtype=object),
            "sizes": counts[kept].astype(np.int64),
            "values": np.stack([_rows_for_adata(means[i], order, adata.n_vars).T for i in kept]).astype(np.float32),
        }
        uns_entry["groupby"] = groupby
    layer_entries = {}
    if layers is not None:
        for k, name in enumerate(names):
            layer_entries[keys.layer(_safe_name(name))] = _rows_for_adata(layers[k], order, adata.n_vars)

    adata = adata.copy() if copy else adata
    write_results(
        adata,
        obs={keys.delta: delta},
        varm={keys.varm: mean_adata, keys.varm_abs: abs_adata},
        layers=layer_entries or None,
        uns={keys.uns: uns_entry},
    )
    return adata if copy else None
