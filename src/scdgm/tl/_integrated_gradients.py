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

from .._docs import doc_params
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
    check_uns_free,
    resolve_device_seed,
    top_genes_entry,
)

if TYPE_CHECKING:
    import torch

    from ..data import BatchStore, PreparedData
    from ..modules._attribution import AccumulatedAttributions, SampledBaselines

METHODS = ("gausslegendre", "riemann_left", "riemann_right", "riemann_middle", "riemann_trapezoid")
INPUT_SPACES = ("encoder", "data")
OUTPUTS = ("logit", "probability")
BASELINES = ("zeros", "other_groups", "mean")
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
    feature_order
        Positions in ``adata.var_names`` of the model's features (the columns of ``data``), ``None``
        when they are the same.
    extra
        Facts about the model: ``n_samples``, the weight draws of a classifier (recorded in
        ``.uns[key]["params"]``); ``encoder_key``, the encoder a classifier reads through.
    is_classifier
        Whether the outputs are classes (so ``output`` chooses probability or logit).
    """

    model: Any
    names: list[str]
    data: PreparedData
    to_path_space: Callable[[torch.Tensor], torch.Tensor]
    n_hidden: int
    description: str
    feature_order: np.ndarray | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    is_classifier: bool = False

    def to_adata_columns(self, values: np.ndarray, n_vars: int) -> np.ndarray:
        """``(..., model features)`` values in the gene order of adata; genes the model lacks get NaN."""
        if self.feature_order is None:
            return values
        out = np.full((*values.shape[:-1], n_vars), np.nan, dtype=values.dtype)
        out[..., self.feature_order] = values
        return out


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


def _then(model: Any, head: Callable) -> Any:
    """``model`` followed by ``head``, keeping the fast path of a ``LinearFirst``."""
    if hasattr(model, "then"):
        return model.then(head)
    return lambda u, context: head(model(u, context), context)


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
        model = _then(model, lambda h, context: h @ matrix)
        names = [f"factor_{k}" for k in range(matrix.shape[1])]
    return AttributionTarget(
        model,
        names,
        applied.data,
        module.encoder_input if request.input_space == "encoder" else _identity,
        int(module.init_kwargs["n_hidden"]),
        f"VAEModule in .uns[{key!r}]",
        feature_order=applied.feature_order,
    )


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
        return AttributionTarget(
            _then(encoder.model, classifier_head(module, weights, output=request.output)),
            names,
            encoder.data,
            encoder.to_path_space,
            max(encoder.n_hidden, n_draws * hidden),
            f"BayesianClassifierModule in .uns[{request.key!r}] on .obsm[{use_rep!r}] of the encoder in .uns[{owner!r}]",
            feature_order=encoder.feature_order,
            extra={"encoder_key": owner, "n_samples": n_draws},
            is_classifier=True,
        )
    model = classifier_on_inputs(module, weights, output=request.output)
    return AttributionTarget(
        model,
        names,
        applied.data,
        _identity,
        n_draws * hidden,
        f"BayesianClassifierModule in .uns[{request.key!r}]",
        feature_order=applied.feature_order,
        extra={"n_samples": n_draws},
        is_classifier=True,
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


def _build_target(adata: AnnData, request: TargetRequest, scvi_model: Any) -> AttributionTarget:
    """The target of a trained scvi-tools model, or of the stored model of ``.uns[request.key]``."""
    if scvi_model is not None:
        return _scvi_target(adata, scvi_model, request)
    request.record = read_record(adata, request.key)
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


def _sample_references(codes: np.ndarray, n_baselines: int, seed: int) -> np.ndarray:
    """``(cells, n_baselines)`` rows of reference cells: for a cell of group ``g``, cells of other groups.

    Drawn with replacement, uniformly among the cells of every other group together (so larger groups
    give more references); cells without a group (code ``-1``) draw from all cells with a group and
    are never drawn themselves.
    """
    rng = np.random.default_rng([seed, 1])  # its own stream: the max_cells subset stays the same
    out = np.empty((len(codes), n_baselines), dtype=np.int64)
    labelled = np.flatnonzero(codes >= 0)
    for code in np.unique(codes):
        rows = np.flatnonzero(codes == code)
        pool = labelled if code < 0 else labelled[codes[labelled] != code]
        out[rows] = pool[rng.integers(0, len(pool), size=(len(rows), n_baselines))]
    return out


def _resolve_baseline(
    baseline: Any,
    adata: AnnData,
    spec: AttributionTarget,
    store: BatchStore,
    chunk: int,
    *,
    codes: torch.Tensor | None,
    n_baselines: int,
    seed: int,
) -> np.ndarray | SampledBaselines:
    """The baseline in the data space and model feature order.

    ``(1, genes)`` or ``(cells, genes)`` float32, or, for ``"other_groups"``, reference cells of the
    other groups (``codes``: each cell's group) that the engine reads from ``store``.
    """
    data = spec.data
    if isinstance(baseline, str):
        if baseline == "other_groups":
            import torch

            from ..modules._attribution import SampledBaselines

            references = _sample_references(codes.cpu().numpy(), n_baselines, seed)
            return SampledBaselines(
                index=torch.as_tensor(references, device=store.device),
                fetch=lambda rows: store.gather(rows)["x"],
                n_features=data.n_vars,
            )
        if baseline == "zeros":
            return np.zeros((1, data.n_vars), dtype=np.float32)
        from ..data import MiniBatches

        total = np.zeros(data.n_vars, dtype=np.float64)
        for batch in MiniBatches(store, np.arange(data.n_obs), batch_size=chunk, shuffle=False):
            total += batch["x"].double().sum(0).cpu().numpy()
        return (total / max(data.n_obs, 1)).astype(np.float32)[None, :]
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
    if spec.feature_order is not None:
        array = array[:, spec.feature_order]
    return np.ascontiguousarray(array)


def _safe_name(name: str) -> str:
    return str(name).replace("/", "_")


def _check_arguments(
    adata: AnnData,
    *,
    n_steps: Any,
    method: str,
    input_space: str,
    output: str,
    n_top: Any,
    n_samples: Any,
    memory_budget_bytes: Any,
    max_cells: Any,
    groupby: str | None,
    baseline: Any,
    n_baselines: Any,
) -> None:
    """Refuse bad arguments before any model is read."""
    from ..modules._attribution import path_rule

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
    check_int("n_baselines", n_baselines)
    if isinstance(baseline, str):
        check_choice("baseline", baseline, BASELINES)
    if not (isinstance(baseline, str) and baseline == "other_groups"):
        return
    if groupby is None:
        msg = (
            "baseline='other_groups' draws each cell's baselines from the cells of the other groups: "
            "pass groupby= (an .obs column of groups, e.g. the cell types), or baseline='zeros'."
        )
        raise ValueError(msg)
    n_groups = pd.Series(adata.obs[groupby]).dropna().nunique()
    if n_groups < 2:
        msg = (
            f"groupby={groupby!r} has {n_groups} group(s); baseline='other_groups' draws baselines from the "
            "other groups and needs at least two."
        )
        raise ValueError(msg)


def _default_stem(model_key: str, scvi_model: Any, key_added: str | None) -> str:
    if key_added is not None:
        return key_added
    if scvi_model is not None and model_key == "vae":
        return "ig_scvi"
    return f"ig_{model_key}"


def _chunk_size(
    spec: AttributionTarget, n_steps: int, n_targets: int, memory_budget_bytes: int, paths_per_cell: int = 1
) -> int:
    """Cells per chunk, so that one chunk's steps x cells x baselines x genes work fits the memory budget."""
    from ..modules._attribution import LinearFirst, bytes_per_cell

    fast = isinstance(spec.model, LinearFirst)
    per_cell = paths_per_cell * bytes_per_cell(spec.data.n_vars, n_steps, n_targets, n_hidden=spec.n_hidden, fast=fast)
    return int(max(1, min(memory_budget_bytes // per_cell, spec.data.n_obs)))


def _cells_to_attribute(n_obs: int, max_cells: int | None, seed: int) -> np.ndarray:
    if max_cells is not None and max_cells < n_obs:
        return np.sort(np.random.default_rng(seed).choice(n_obs, size=max_cells, replace=False))
    return np.arange(n_obs)


def _group_codes(adata: AnnData, groupby: str | None, device: str) -> tuple[list[str], torch.Tensor | None]:
    """Group names and each cell's code (``-1``: no group) on ``device``; none without ``groupby``."""
    if groupby is None:
        return [], None
    import torch

    groups = pd.Categorical(adata.obs[groupby])
    codes = torch.as_tensor(np.asarray(groups.codes, dtype=np.int64), device=device)
    return [str(c) for c in groups.categories], codes


def _attribute(
    spec: AttributionTarget,
    store: BatchStore,
    cells: np.ndarray,
    *,
    chunk: int,
    baseline: np.ndarray | SampledBaselines,
    targets: list[int],
    groups: tuple[list[str], torch.Tensor | None],
    n_steps: int,
    method: str,
    store_per_cell: bool,
    device: str,
) -> AccumulatedAttributions:
    """Run the attribution engine over ``cells`` in chunks of ``chunk``, with a progress bar."""
    import torch
    from tqdm.auto import tqdm

    from ..data import MiniBatches
    from ..modules._attribution import SampledBaselines, accumulate

    n_chunks = math.ceil(len(cells) / chunk)
    paths = f" x {baseline.n_baselines} baselines" if isinstance(baseline, SampledBaselines) else ""
    logger.info(
        f"integrated gradients of {len(targets)} targets for {len(cells)} cells x {spec.data.n_vars} genes: "
        f"{n_steps} steps ({method}){paths}, {n_chunks} chunk(s) of up to {chunk} cells on {device}"
    )
    batches = MiniBatches(store, cells, batch_size=chunk, shuffle=False)
    disable = not settings.progress_bar or n_chunks < 2
    with tqdm(batches, total=n_chunks, desc="integrated gradients", disable=disable, leave=False) as bar:
        return accumulate(
            spec.model,
            bar,
            n_obs=spec.data.n_obs,
            baseline=baseline if isinstance(baseline, SampledBaselines) else torch.as_tensor(baseline, device=device),
            targets=targets,
            to_path_space=spec.to_path_space,
            group_codes=groups[1],
            n_groups=len(groups[0]),
            n_steps=n_steps,
            method=method,
            store_per_cell=store_per_cell,
        )


def _summarise_delta(attributed: np.ndarray, *, method: str, n_steps: int, delta_key: str) -> dict[str, float]:
    """Median, 90th percentile and maximum of the completeness errors; warns when the 90th is too large."""
    summary = {
        "median": float(np.median(attributed)),
        "p90": float(np.quantile(attributed, 0.9)),
        "max": float(np.max(attributed)),
    }
    if summary["p90"] > DELTA_WARN:
        share = float(np.mean(attributed > DELTA_WARN))
        advice = "raise n_steps" + ("" if method == "gausslegendre" else " or use method='gausslegendre'")
        warnings.warn(
            f"Integrated gradients are incomplete by more than {DELTA_WARN:.0%} of the output change for "
            f"{share:.0%} of cells (90th percentile {summary['p90']:.1%}, see .obs[{delta_key!r}]): "
            f"{advice} (now {n_steps}).",
            ScdgmWarning,
            stacklevel=3,  # the caller of integrated_gradients
        )
    return summary


def _group_means_entry(
    spec: AttributionTarget, result: AccumulatedAttributions, group_names: list[str], n_vars: int
) -> dict[str, np.ndarray]:
    """Groups with attributed cells, their sizes and their groups x genes x targets mean attributions."""
    kept = np.flatnonzero(result.group_sizes > 0)
    values = spec.to_adata_columns(result.group_means[kept], n_vars).transpose(0, 2, 1)
    return {
        "groups": np.asarray([group_names[i] for i in kept], dtype=object),
        "sizes": result.group_sizes[kept],
        "values": values.astype(np.float32),
    }


@doc_params
def integrated_gradients(
    adata: AnnData,
    *,
    model_key: str = "vae",
    target: int | str | Sequence[int | str] | None = None,
    output: Literal["logit", "probability"] = "logit",
    baseline: Literal["zeros", "other_groups", "mean"] | np.ndarray = "zeros",
    n_baselines: int = 5,
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

    The baseline sets the question answered. The zero baseline (default) asks what the genes a cell
    expresses contribute to the output, against an empty cell. ``baseline="other_groups"`` (expected
    gradients, Erion et al. 2021) asks why the cell's output differs from that of cells of the other
    groups: for a cell of group :math:`g`, ``n_baselines`` reference cells :math:`b_1, \dots, b_K` are
    drawn from the cells not in :math:`g`, the integral above is taken along the full path from each,
    and the attributions are averaged, so they sum to :math:`F_t(x) - \frac{1}{K} \sum_k F_t(b_k)`.
    That answer also credits the genes the cell lacks: for a class, the absence of the other groups'
    markers counts in its favour as much as the presence of its own (on pbmc68k it put monocyte genes
    at the top of T-cell classes). To find a class's own markers (genes it expresses), the zero
    baseline and ``output="logit"`` ranked them best: on ``datasets.simulate(2000, 500)`` (2 seeds), the
    marker AUROC of each type's mean attribution to its own class was 0.968 for a Bayesian classifier
    on log-normalised genes (``"other_groups"``: 0.960) and 0.928 for one on ``X_vae``, through the
    encoder (``"other_groups"``: 0.898), against 0.963 for the difference in mean log-normalised
    expression that :func:`scanpy.tl.rank_genes_groups` ranks by (``benchmarks/ig_markers.py``).
    ``baseline="mean"`` is a pitfall with counts: the mean of heavy-tailed counts lies above the counts
    of most cells, so :math:`x_g - b_g` is negative for a marker in most cells of its own type, and its
    attribution comes out negative (AUROC 0.750 through the encoder, which reads counts, on the data
    above).

    Targets are the latent means of a VAE (:func:`scdgm.tl.vae`; the rotated factors of
    :func:`scdgm.tl.ldvae_loadings`), the latent means of a trained scvi-tools model, or the class
    logits (or probabilities) of a classifier (:func:`scdgm.tl.bayes_classify`): for a Bayesian
    classifier, the posterior predictive averaged over ``n_samples`` weight draws; for a classifier
    trained on a latent representation (``use_rep="X_vae"``), attributions go through the encoder
    back to the genes. For a class, the mean over all cells (``.varm``) mixes its own cells with the
    other cells' reasons against it; with ``groupby``, read each class over its own cells
    (``dgm.get.attributions(adata, key, groupby=...)``).

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
        Classifiers: attribute the class ``"logit"`` or the class ``"probability"`` (each averaged over
        weight draws). Probabilities saturate: once the path has passed the point where a class wins,
        their gradient vanishes, so the change is credited to the genes that carry the path there and
        evidence beyond it counts little; logits keep growing with the evidence, and recovered markers
        as well or better (see above). Ignored by encoders (and not recorded for them).
    baseline
        ``"zeros"``: the all-zero cell. ``"other_groups"``: ``n_baselines`` cells drawn, for each cell,
        from the cells of the other groups of ``groupby`` (needed); see above. The baseline cells are
        read with the attributed cell's batch. Cells without a group (NaN) draw from all cells with a
        group, and are never drawn. ``"mean"``: the mean cell of ``adata`` (in the data as stored, e.g.
        mean counts; see the pitfall above). An array: one cell ``(n_vars,)`` or one per cell
        ``(n_obs, n_vars)``, in the data space and gene order of ``adata``.
    n_baselines
        With ``baseline="other_groups"``: reference cells per attributed cell, drawn with replacement
        (seeded). Each costs a full path of ``n_steps`` points, so the run takes ``n_baselines`` times
        as long as with one baseline. Group means average over the group's cells as well, so a few
        suffice for them; per-cell attributions need more. Ignored by the other baselines.
    n_steps
        Points of the quadrature rule along the path.
    method
        ``"gausslegendre"`` (most accurate per step), or a Riemann rule: ``"riemann_left"``,
        ``"riemann_right"``, ``"riemann_middle"``, ``"riemann_trapezoid"`` (textbook trapezoid, weights
        summing to one).
    input_space
        ``"encoder"`` or ``"data"``, see above.
    groupby
        ``.obs`` column of groups; the mean attribution per group is stored too (read each class
        averaged over its own cells with :func:`scdgm.get.attributions` or :func:`scdgm.pl.attributions`
        and ``groupby=``), and ``baseline="other_groups"`` draws its reference cells from the other groups.
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
        Seeds the weight draws of a Bayesian classifier, the ``max_cells`` subset and the reference
        cells of ``baseline="other_groups"``.
    key_added
        Stem of the output keys; default ``"ig_<model_key>"``.
    {copy_doc}

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
        :math:`\max_t |F_t(x) - F_t(b)|` (floored at 1e-6). For ``"other_groups"``, :math:`F_t(b)` is
        the mean over the cell's baselines and the divisor :math:`\max_t \frac{1}{K} \sum_k
        |F_t(x) - F_t(b_k)|`, the size of the change along the paths (their changes may cancel in the
        mean, their quadrature errors do not). A warning advises more steps when the 90th percentile
        exceeds 5 %.
    ``.layers["<key>_<target>"]``
        Only with ``store_per_cell``: cells x genes attributions of each target.
    ``.uns["<key>"]``
        ``params`` (the values used: ``baseline`` as a name or ``"array"``, ``n_baselines`` (only with
        ``"other_groups"``), ``output`` (only for classifiers), ``n_samples``, ``n_cells``,
        ``chunk_size``, ``device``, ``seed``, ...); ``targets`` (names, the columns of the ``.varm``
        entries); ``top_genes``
        (``targets``; ``positive`` / ``negative``: targets x ``n_top`` genes with the most positive
        and most negative mean attribution; read them with :func:`scdgm.get.top_genes`);
        ``output_change`` (mean of :math:`F_t(x) - F_t(b)` per target, the mean over baselines for
        ``"other_groups"``); ``delta_summary`` (median,
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
    from ..data import BatchStore

    _check_arguments(
        adata,
        n_steps=n_steps,
        method=method,
        input_space=input_space,
        output=output,
        n_top=n_top,
        n_samples=n_samples,
        memory_budget_bytes=memory_budget_bytes,
        max_cells=max_cells,
        groupby=groupby,
        baseline=baseline,
        n_baselines=n_baselines,
    )
    sampled = isinstance(baseline, str) and baseline == "other_groups"
    device, seed = resolve_device_seed(device, seed)
    keys = AttributionKeys(_default_stem(model_key, scvi_model, key_added))
    check_uns_free(adata, keys.uns, tool="integrated_gradients")
    check_copy(adata, copy)

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
    spec = _build_target(adata, request, scvi_model)
    chosen = _select_targets(target, spec.names, model_key if scvi_model is None else "scvi_model")
    names = [spec.names[t] for t in chosen]
    store = BatchStore.from_prepared(spec.data, device)
    chunk = _chunk_size(spec, n_steps, len(chosen), memory_budget_bytes, n_baselines if sampled else 1)
    cells = _cells_to_attribute(spec.data.n_obs, max_cells, seed)
    groups = _group_codes(adata, groupby, device)
    baseline_values = _resolve_baseline(
        baseline, adata, spec, store, chunk, codes=groups[1], n_baselines=n_baselines, seed=seed
    )

    # ---- engine
    result = _attribute(
        spec,
        store,
        cells,
        chunk=chunk,
        baseline=baseline_values,
        targets=chosen,
        groups=groups,
        n_steps=n_steps,
        method=method,
        store_per_cell=store_per_cell,
        device=device,
    )
    delta_summary = _summarise_delta(result.delta[cells], method=method, n_steps=n_steps, delta_key=keys.delta)

    # ---- one write, every gene column in the order of adata
    mean = spec.to_adata_columns(result.mean, adata.n_vars).T  # genes x targets
    uns_entry: dict[str, Any] = {
        "params": record_params(
            "integrated_gradients",
            model_key=None if scvi_model is not None else model_key,
            scvi_model=type(scvi_model).__name__ if scvi_model is not None else None,
            target=names,
            output=output if spec.is_classifier else None,
            baseline=baseline if isinstance(baseline, str) else "array",
            n_baselines=n_baselines if sampled else None,
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
        "top_genes": top_genes_entry(mean, adata.var_names, names, n_top),
        "output_change": result.output_change,
        "delta_summary": delta_summary,
        "source": spec.description,
    }
    if groupby is not None:
        uns_entry["group_means"] = _group_means_entry(spec, result, groups[0], adata.n_vars)
        uns_entry["groupby"] = groupby
    layers = {}
    if result.per_cell is not None:
        for k, name in enumerate(names):
            layers[keys.layer(_safe_name(name))] = spec.to_adata_columns(result.per_cell[k], adata.n_vars)

    adata = adata.copy() if copy else adata
    write_results(
        adata,
        obs={keys.delta: result.delta},
        varm={keys.varm: mean, keys.varm_abs: spec.to_adata_columns(result.mean_abs, adata.n_vars).T},
        layers=layers or None,
        uns={keys.uns: uns_entry},
    )
    return adata if copy else None
