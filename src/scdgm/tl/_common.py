"""Shared steps of the ``tl`` functions: the start of every call, and applying a stored model to an AnnData.

A tool that uses a trained model reads its record once, rebuilds the module once and aligns the
AnnData's features to the model's by name once, all through :func:`apply_stored_model`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from anndata import AnnData

from .._checks import check_choice, check_fraction, check_int, check_number, check_positive
from .._models import ModelRecord, read_record
from .._results import record_params, write_results
from .._settings import logger, settings

if TYPE_CHECKING:
    import torch

    from .._keys import ModelKeys
    from ..data import PreparedData

__all__ = [
    "AppliedModel",
    "ToolOptions",
    "TrainingRun",
    "apply_stored_model",
    "check_choice",
    "check_copy",
    "check_fraction",
    "check_int",
    "check_number",
    "check_positive",
    "check_same_features",
    "check_uns_free",
    "obs_groups",
    "output_stem",
    "resolve_device_seed",
    "top_genes_entry",
]


class ToolOptions:
    """Base of a tool's options dataclass: built from the tool's own arguments, so they are listed once."""

    @classmethod
    def from_arguments(cls, arguments: Mapping[str, Any]) -> Any:
        """The options among ``arguments`` (a tool's ``locals()``); other names are ignored."""
        import dataclasses

        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in arguments.items() if k in names})


@dataclass
class TrainingRun:
    """Everything one training of a model tool produced, before anything is written.

    The tools that train a model (:func:`scdgm.tl.vae`, :func:`scdgm.tl.dbm`) return one and write
    it with :meth:`write`; a tool that trains on their behalf (:func:`scdgm.tl.ldvae_loadings`)
    takes its :meth:`uns_entry`.

    Attributes
    ----------
    latent
        The cells' representation for ``.obsm``.
    params
        The resolved arguments of the training (without the tool's name and the package version).
    history
        Per-epoch training history.
    metrics
        Summary metrics of the kept model.
    record
        The trained model's record.
    validation_idx
        Rows of the held-out cells.
    module
        The trained module.
    """

    latent: np.ndarray
    params: dict[str, Any]
    history: dict[str, np.ndarray]
    metrics: dict[str, Any]
    record: ModelRecord
    validation_idx: np.ndarray
    module: Any

    def uns_entry(self, tool: str) -> dict[str, Any]:
        """The ``.uns[key]`` entry of the run, its params marked as written by ``tool``."""
        return {
            "params": record_params(tool, **self.params),
            "history": self.history,
            "metrics": self.metrics,
            "model": self.record.to_uns(),
            "split": {"validation_indices": self.validation_idx.astype(np.int64)},
        }

    def write(self, adata: AnnData, keys: ModelKeys, *, tool: str, copy: bool) -> AnnData | None:
        """Write the latent space and the ``.uns`` entry into ``adata`` (a copy with ``copy=True``, returned)."""
        adata = adata.copy() if copy else adata
        write_results(adata, obsm={keys.obsm: self.latent}, uns={keys.uns: self.uns_entry(tool)})
        return adata if copy else None


def resolve_device_seed(device: str | None, seed: int | None) -> tuple[str, int]:
    """``device`` and ``seed`` of a tool call, ``None`` meaning ``dgm.settings``'s."""
    return settings.resolve_device(device), settings.resolve_seed(seed)


def check_copy(adata: AnnData, copy: Any) -> None:
    """Refuse ``copy=True`` on a backed AnnData before any work (anndata cannot copy it in memory)."""
    from .._checks import check_bool

    if check_bool("copy", copy) and adata.isbacked:
        msg = (
            "copy=True cannot copy a backed AnnData in memory. Load it first (`adata = adata.to_memory()`), "
            "or pass copy=False to write the results into the backed object."
        )
        raise ValueError(msg)


def _other_tools_model(adata: AnnData, key: str, tool: str) -> str | None:
    """``""`` or the name of the tool whose trained model ``.uns[key]`` holds, when not ``tool``; else ``None``."""
    entry = adata.uns.get(key)
    if not isinstance(entry, Mapping) or "model" not in entry:
        return None
    owner = dict(entry.get("params", {})).get("tool")
    return None if owner == tool else str(owner or "")


def check_uns_free(adata: AnnData, key: str, *, tool: str, argument: str = "key_added") -> None:
    """Refuse to replace an ``.uns[key]`` that holds a model another tool trained.

    Tools that apply a model write their own entries; letting them overwrite the record they read
    (``denoise(key_added="vae")``) would delete the model and its history.
    """
    owner = _other_tools_model(adata, key, tool)
    if owner is None:
        return
    msg = (
        f"{argument}={key!r} would replace .uns[{key!r}], which holds a trained model"
        + (f" (from dgm.tl.{owner})" if owner else "")
        + f". Pass another {argument}."
    )
    raise ValueError(msg)


def output_stem(adata: AnnData, key_added: str | None, model_key: str, *, tool: str, suffix: str) -> str:
    """``key_added``, or by default ``model_key``, or ``"<model_key>_<suffix>"`` where that would replace a trained model.

    An apply tool writing under the model's own key is what a user expects for a query, but on the
    AnnData that holds the model (``embed(a, reference=a)``) it would replace the model.
    """
    if key_added is not None:
        return key_added
    if _other_tools_model(adata, model_key, tool) is None:
        return model_key
    stem = f"{model_key}_{suffix}"
    logger.info(f"    .uns[{model_key!r}] holds a trained model: writing the results of {tool} under {stem!r}")
    return stem


def obs_groups(adata: AnnData, key: Any, *, argument: str) -> tuple[tuple[str, ...], np.ndarray]:
    """The groups of ``adata.obs[key]`` as strings (category order, else sorted) and each cell's code (``-1``: missing).

    A ``KeyError`` naming ``argument`` when ``key`` is not a column, a ``ValueError`` when it holds no group.
    """
    from ..data import CategoryEncoding

    if not isinstance(key, str) or key not in adata.obs:
        msg = f"{argument}={key!r} is not a column of adata.obs (columns: {list(adata.obs.columns)})."
        raise KeyError(msg)
    encoding = CategoryEncoding.fit(adata.obs[key], key)
    if encoding.n_categories == 0:
        msg = f"adata.obs[{key!r}] ({argument}) holds no group: every value is missing."
        raise ValueError(msg)
    return encoding.categories, encoding.encode(adata.obs[key], allow_missing=True)


def top_genes_entry(values: np.ndarray, var_names: Any, targets: Any, n_top: int) -> dict[str, np.ndarray]:
    """The ``n_top`` genes of largest and smallest value per target, in the h5ad-safe layout of ``top_genes``.

    ``values`` is genes x targets (NaN for genes a model lacks: never ranked). Target names are an
    array, not keys, so any name (``"CD4+/CD25 T Reg"``) survives ``write_h5ad``.
    """
    var_names = np.asarray(var_names).astype(str)
    known = np.nan_to_num(np.asarray(values, dtype=np.float64), nan=0.0)
    positive, negative = [], []
    for k in range(known.shape[1]):
        ranked = np.argsort(known[:, k], kind="stable")
        positive.append(var_names[ranked[::-1][:n_top]])
        negative.append(var_names[ranked[:n_top]])
    return {
        "targets": np.asarray([str(t) for t in targets], dtype=object),
        "positive": np.asarray(positive, dtype=object),
        "negative": np.asarray(negative, dtype=object),
    }


def check_same_features(adata_names: Any, model_names: Any, *, source: str, key: str) -> np.ndarray | None:
    """Positions in ``adata_names`` of each of the model's features, or ``None`` when already identical.

    Raises when the data's names repeat (matching by name would be ambiguous) or when features of
    the model are missing from the data.
    """
    adata_names = np.asarray(adata_names).astype(str)
    model_names = np.asarray(model_names).astype(str)
    if adata_names.shape == model_names.shape and np.array_equal(adata_names, model_names):
        return None
    position: dict[str, int] = {}
    for i, name in enumerate(adata_names):
        if name in position:
            msg = (
                f"{source} repeats feature names (e.g. {name!r}), so they cannot be matched to the model in "
                f".uns[{key!r}] by name. Run `adata.var_names_make_unique()` first."
            )
            raise ValueError(msg)
        position[name] = i
    missing = [name for name in model_names if name not in position]
    if missing:
        msg = (
            f"The model in .uns[{key!r}] was trained on {len(model_names)} features; {len(missing)} of them "
            f"are missing from {source} (first: {missing[:5]}). The model needs every one of its features "
            f"(with zeros where a gene was not measured); its feature names are in "
            f".uns[{key!r}]['model']['var_names']."
        )
        raise ValueError(msg)
    return np.array([position[name] for name in model_names])


@dataclass
class AppliedModel:
    """A stored model brought back to an AnnData: the module, its record and the aligned input.

    Attributes
    ----------
    key
        ``.uns`` key of the record.
    record
        The stored model record.
    module
        The rebuilt module, in eval mode, on ``device``.
    data
        The AnnData's input in the model's feature order (``None`` when not prepared).
    feature_order
        Positions in ``adata.var_names`` of the model's features, ``None`` when they are the same.
    device
        Where the module runs.
    """

    key: str
    record: ModelRecord
    module: torch.nn.Module
    data: PreparedData | None
    feature_order: np.ndarray | None
    device: str

    def to_adata_columns(self, values: np.ndarray, n_vars: int) -> np.ndarray:
        """``(..., model features)`` values in the AnnData's feature order; features the model lacks get NaN."""
        if self.feature_order is None:
            return values
        out = np.full((*values.shape[:-1], n_vars), np.nan, dtype=np.result_type(values.dtype, np.float32))
        out[..., self.feature_order] = values
        return out

    def predict(self, fn: Any, *, rows: np.ndarray | None = None, batch_size: int | None = None) -> np.ndarray:
        """``fn(module, batch)`` for every cell of the aligned data (see :func:`scdgm.train.predict_cells`)."""
        from ..train import INFERENCE_BATCH_SIZE, predict_cells

        return predict_cells(
            self.module, self.data, fn, device=self.device, rows=rows, batch_size=batch_size or INFERENCE_BATCH_SIZE
        )

    def evaluate(self) -> dict[str, float]:
        """Per-cell means of the model's loss terms on these cells at full KL weight (``elbo``: negative ELBO)."""
        from ..data import BatchStore, MiniBatches
        from ..train import INFERENCE_BATCH_SIZE, evaluate

        store = BatchStore.from_prepared(self.data, self.device)
        batches = MiniBatches(store, np.arange(self.data.n_obs), batch_size=INFERENCE_BATCH_SIZE, shuffle=False)
        return evaluate(self.module, batches)


def _input_layer(adata: AnnData, record: ModelRecord, layer: str | None) -> str | None:
    """The layer to read: the one given, else the training layer where ``adata`` has it, else ``.X``."""
    if layer is not None:
        return layer
    trained_on = record.input.get("layer")
    if trained_on is None or trained_on in adata.layers:
        return trained_on
    logger.info(f"    .layers[{trained_on!r}], which the model was trained on, is not in adata: reading .X instead")
    return None


def apply_stored_model(
    adata: AnnData,
    key: str,
    *,
    device: str,
    source: AnnData | None = None,
    layer: str | None = None,
    batch_key: str | None = None,
    prepare: bool = True,
) -> AppliedModel:
    """Read the model of ``(source or adata).uns[key]``, rebuild it and read ``adata`` the way it expects.

    Parameters
    ----------
    adata
        The cells to apply the model to.
    key
        ``.uns`` key of the stored model.
    device
        Resolved device.
    source
        The AnnData holding the model, when it is not ``adata`` (reference mapping).
    layer
        Input layer of ``adata``; default the training layer where ``adata`` has it, else ``.X``.
        Ignored by models that read an ``.obsm`` representation.
    batch_key
        ``.obs`` column of batches; default the training one. Required by batch-conditional models.
    prepare
        Read and align the input (``False`` when the caller needs only the module and record).

    Returns
    -------
    :class:`AppliedModel`.
    """
    from ..data import prepare_data

    record = read_record(adata if source is None else source, key)
    encodings = record.category_encodings()
    use_rep = record.input.get("use_rep")
    if use_rep is not None and layer is not None:
        msg = f"The model in .uns[{key!r}] reads .obsm[{use_rep!r}], not genes: layer={layer!r} does not apply."
        raise ValueError(msg)
    data, order = None, None
    if prepare:
        batch_key = batch_key if batch_key is not None else record.input.get("batch_key")
        if "batch" in encodings and batch_key is None:
            msg = (
                f"The model in .uns[{key!r}] was trained with batch covariates ({encodings['batch'].key!r}); "
                "pass batch_key= naming the .obs column that holds the batches of these cells."
            )
            raise ValueError(msg)
        if use_rep is not None:
            _check_representation(adata, record, key)
        data = prepare_data(
            adata,
            layer=None if use_rep is not None else _input_layer(adata, record, layer),
            use_rep=use_rep,
            counts=record.counts,
            batch_key=batch_key if "batch" in encodings else None,
            encodings={"batch": encodings["batch"]} if "batch" in encodings else None,
            feature_filter_advice=False,
        )
        order = check_same_features(data.var_names, record.var_names, source=data.source, key=key)
        if order is not None:
            data = data.select_features(order)
    module = record.rebuild(device, key=key)
    return AppliedModel(key=key, record=record, module=module, data=data, feature_order=order, device=device)


def _check_representation(adata: AnnData, record: ModelRecord, key: str) -> None:
    """An ``.obsm`` input must exist and have the model's width: its columns are matched by position."""
    use_rep = str(record.input["use_rep"])
    if use_rep not in adata.obsm:
        hint = (
            f" Compute it with the encoder the model was trained on, e.g. `dgm.tl.embed(adata, reference=reference, "
            f"vae_key={record.encoder_key!r})`."
            if record.encoder_key
            else ""
        )
        msg = f"The model in .uns[{key!r}] reads .obsm[{use_rep!r}], which adata lacks.{hint}"
        raise KeyError(msg)
    width = np.shape(adata.obsm[use_rep])[1]
    if width != len(record.var_names):
        msg = (
            f"The model in .uns[{key!r}] was trained on {len(record.var_names)} columns of .obsm[{use_rep!r}], but "
            f"this AnnData's .obsm[{use_rep!r}] has {width}: it is another space. Compute it with the model's "
            "encoder (`dgm.tl.embed`)."
        )
        raise ValueError(msg)
