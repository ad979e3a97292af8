"""The stored-model contract: one record type that every trained model of scdgm is kept in.

A record lives in ``adata.uns[key]["model"]`` and holds only h5ad- and zarr-safe values (numbers,
strings, numpy arrays, nested dicts with fixed key names), so that ``write_h5ad`` / ``read_h5ad``
round-trip a trained model. Names that users choose (classes, genes) are arrays, never keys.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
from anndata import AnnData

if TYPE_CHECKING:
    import torch

    from .data import CategoryEncoding

SCHEMA_VERSION = 1
"""Version of the record layout. Records without one were written by scdgm 0.1 (version 0)."""

_INPUT_FIELDS = ("layer", "use_rep", "batch_key", "counts")


class ModelRecordError(ValueError):
    """A stored model record cannot be read: damaged, incomplete or written by a newer scdgm."""


def _module_classes() -> dict[str, type]:
    from .modules import MODULE_CLASSES

    return MODULE_CLASSES


def _strings(values: Any) -> np.ndarray:
    """Any array of names (object, ``<U``, numpy's ``StringDType`` after zarr) as a ``str`` object array."""
    return np.asarray([str(v) for v in np.asarray(values).reshape(-1).tolist()], dtype=object)


def _plain(value: Any) -> Any:
    """Numpy scalars as Python scalars, so that module constructors see ``int`` and ``str``."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray) and value.ndim == 0:
        return value.item()
    return value


@contextlib.contextmanager
def _untouched_rng() -> Iterator[None]:
    """Construct modules without advancing the caller's torch random state.

    Building a module initialises its weights randomly before the stored ones are loaded; forking
    the generator keeps that draw from changing what the user's own code gets next.
    """
    import torch

    with torch.random.fork_rng(devices=[]):
        yield


@dataclass
class ModelRecord:
    """A trained module with everything needed to apply it to new data.

    Attributes
    ----------
    class_name
        Name of the module class in :data:`scdgm.modules.MODULE_CLASSES`.
    init_kwargs
        Arguments that rebuild the architecture.
    state_dict
        Weights and buffers as numpy arrays.
    var_names
        Names of the input features, in the order the module reads them (``"<use_rep>_<i>"`` for an
        ``.obsm`` input).
    input
        Where the input was read: ``layer``, ``use_rep``, ``batch_key`` and ``counts`` (whether a
        count likelihood needs raw counts).
    encodings
        Category encodings of covariates (``"batch"``, ``"labels"``), as
        :meth:`scdgm.data.CategoryEncoding.to_dict` dicts.
    classes
        Class names of a classifier, in output order; ``None`` for other models.
    encoder_key
        ``.uns`` key of the encoder whose latent space a classifier reads (``use_rep``), or ``None``.
    schema_version
        Version of this layout.
    """

    class_name: str
    init_kwargs: dict[str, Any]
    state_dict: dict[str, np.ndarray]
    var_names: np.ndarray
    input: dict[str, Any] = field(default_factory=dict)
    encodings: dict[str, dict[str, Any]] = field(default_factory=dict)
    classes: np.ndarray | None = None
    encoder_key: str | None = None
    schema_version: int = SCHEMA_VERSION

    @classmethod
    def from_module(
        cls,
        module: torch.nn.Module,
        *,
        var_names: Any,
        layer: str | None = None,
        use_rep: str | None = None,
        batch_key: str | None = None,
        counts: bool = False,
        encodings: Mapping[str, CategoryEncoding] | None = None,
        classes: Any = None,
        encoder_key: str | None = None,
    ) -> ModelRecord:
        """The record of a trained ``module`` (which must carry ``init_kwargs``)."""
        return cls(
            class_name=type(module).__name__,
            init_kwargs=dict(module.init_kwargs),
            state_dict={name: t.detach().cpu().numpy() for name, t in module.state_dict().items()},
            var_names=_strings(var_names),
            input={"layer": layer, "use_rep": use_rep, "batch_key": batch_key, "counts": bool(counts)},
            encodings={name: enc.to_dict() for name, enc in dict(encodings or {}).items()},
            classes=None if classes is None else _strings(classes),
            encoder_key=encoder_key,
        )

    def to_uns(self) -> dict[str, Any]:
        """The record as the dict stored in ``.uns[key]["model"]`` (``None`` fields left out)."""
        out: dict[str, Any] = {
            "schema_version": self.schema_version,
            "class_name": self.class_name,
            "init_kwargs": dict(self.init_kwargs),
            "state_dict": dict(self.state_dict),
            "var_names": self.var_names,
            "input": {k: v for k, v in self.input.items() if v is not None},
            "encodings": dict(self.encodings),
        }
        if self.classes is not None:
            out["classes"] = self.classes
        if self.encoder_key is not None:
            out["encoder_key"] = self.encoder_key
        return out

    @classmethod
    def from_uns(cls, value: Any, *, key: str) -> ModelRecord:
        """Read a stored record, refusing a damaged one or one written by a newer scdgm."""
        where = f".uns[{key!r}]['model']"
        if not isinstance(value, Mapping):
            msg = f"{where} is not a model record (found {type(value).__name__}). Train the model again."
            raise ModelRecordError(msg)
        version = int(_plain(value.get("schema_version", 0)))
        if version > SCHEMA_VERSION:
            msg = (
                f"{where} was written by a newer scdgm (record version {version}; this scdgm reads up to "
                f"{SCHEMA_VERSION}). Upgrade scdgm: `pip install -U scdgm`."
            )
            raise ModelRecordError(msg)
        missing = [name for name in ("class_name", "init_kwargs", "state_dict", "var_names") if name not in value]
        if missing:
            msg = f"{where} is damaged: it lacks {missing}. Train the model again."
            raise ModelRecordError(msg)
        # version 0 (scdgm 0.1) kept the input spec under "data" and classes outside the record
        spec = dict(value.get("input", value.get("data", {})))
        classes = value.get("classes")
        if classes is None and "labels" in dict(value.get("encodings", {})):
            classes = dict(value["encodings"]["labels"]).get("categories")
        encoder_key = value.get("encoder_key")
        if encoder_key is None and version == 0 and spec.get("use_rep") is not None:
            use_rep = str(spec["use_rep"])
            encoder_key = use_rep[2:] if use_rep.startswith("X_") else None
        state = value["state_dict"]
        if not isinstance(state, Mapping) or not state:
            msg = f"{where} is damaged: its state_dict holds no weights. Train the model again."
            raise ModelRecordError(msg)
        return cls(
            class_name=str(value["class_name"]),
            init_kwargs={k: _plain(v) for k, v in dict(value["init_kwargs"]).items()},
            state_dict={k: np.asarray(v) for k, v in state.items()},
            var_names=_strings(value["var_names"]),
            input={name: _plain(spec[name]) for name in _INPUT_FIELDS if name in spec},
            encodings={name: dict(enc) for name, enc in dict(value.get("encodings", {})).items()},
            classes=None if classes is None else _strings(classes),
            encoder_key=None if encoder_key is None else str(encoder_key),
            schema_version=SCHEMA_VERSION,
        )

    @property
    def counts(self) -> bool:
        """Whether the model reads raw counts."""
        return bool(self.input.get("counts", False))

    def category_encodings(self) -> dict[str, CategoryEncoding]:
        """The covariate encodings as :class:`~scdgm.data.CategoryEncoding` objects."""
        from .data import CategoryEncoding

        return {name: CategoryEncoding.from_dict(d) for name, d in self.encodings.items()}

    def rebuild(self, device: str = "cpu", *, key: str = "model") -> torch.nn.Module:
        """The torch module with the stored weights, in eval mode, on ``device``.

        The caller's torch random state is left as it was.
        """
        import torch

        classes = _module_classes()
        if self.class_name not in classes:
            msg = (
                f".uns[{key!r}]['model'] holds a {self.class_name!r}, which this scdgm version does not know "
                f"(known: {sorted(classes)}). Upgrade scdgm."
            )
            raise ModelRecordError(msg)
        with _untouched_rng():
            try:
                module = classes[self.class_name](**self.init_kwargs)
                module.load_state_dict({k: torch.as_tensor(np.asarray(v)) for k, v in self.state_dict.items()})
            except (TypeError, RuntimeError, ValueError) as error:
                msg = f".uns[{key!r}]['model'] is damaged and cannot be rebuilt ({error}). Train the model again."
                raise ModelRecordError(msg) from error
        return module.to(device).eval()


def read_record(adata: AnnData, key: str) -> ModelRecord:
    """The model record of ``adata.uns[key]``, with an error that says what to run when it is missing."""
    from ._keys import check_key

    check_key("key", key)
    if key not in adata.uns:
        msg = f"Did not find .uns[{key!r}]. Train a model first, e.g. `dgm.tl.vae(adata, key_added={key!r})`."
        raise KeyError(msg)
    entry = adata.uns[key]
    if not isinstance(entry, Mapping) or "model" not in entry:
        msg = f".uns[{key!r}] holds no trained model. Train one first, e.g. `dgm.tl.vae(adata, key_added={key!r})`."
        raise KeyError(msg)
    return ModelRecord.from_uns(entry["model"], key=key)


def holds_model(adata: AnnData, key: str) -> bool:
    """Whether ``adata.uns[key]`` holds a stored model."""
    entry = adata.uns.get(key)
    return isinstance(entry, Mapping) and "model" in entry


def get_model(adata: AnnData, key: str = "vae", *, device: str = "cpu") -> torch.nn.Module:
    """Rebuild the trained torch module stored in ``adata.uns[key]``.

    Rebuilding does not change the caller's torch random state.

    Parameters
    ----------
    adata
        An AnnData that a ``dgm.tl`` model was trained on (also after ``write_h5ad`` / ``read_h5ad``).
    key
        The ``key_added`` of the training call.
    device
        Torch device to place the module on.

    Returns
    -------
    The module, in eval mode, with the trained weights.

    Examples
    --------
    >>> import scdgm as dgm
    >>> adata = dgm.datasets.simulate(200, 50, seed=0)
    >>> dgm.tl.vae(adata, max_epochs=2)  # doctest: +SKIP
    >>> module = dgm.get_model(adata, "vae")  # doctest: +SKIP
    """
    from ._settings import settings

    return read_record(adata, key).rebuild(settings.resolve_device(device), key=key)
