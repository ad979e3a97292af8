"""``tl.decode``: cells decoded from given latent codes by a trained VAE, as a new AnnData."""

from __future__ import annotations

import numpy as np
from anndata import AnnData

from .._checks import check_bool
from .._keys import SyntheticKeys, check_key
from .._models import read_record
from .._results import record_params, write_results
from ._common import apply_stored_model, resolve_device_seed
from ._generate import (
    GENERATORS,
    GenerationPlan,
    _check_batch,
    _check_library_size,
    _synthetic_obs,
    draw_cells,
    synthetic_provenance,
)
from ._perturbation import _check_latent_model


def decode(
    adata: AnnData,
    latent: np.ndarray | str,
    *,
    model_key: str = "vae",
    library_size: float | None = None,
    batch: str | None = None,
    sample: bool = True,
    device: str | None = None,
    seed: int | None = None,
    key_added: str = "decoded",
) -> AnnData:
    """Decode given latent codes with a trained VAE: the cells its decoder makes of them.

    For latent arithmetic of one's own (a shift along a direction, an interpolation between two cell
    types, the codes of :func:`scdgm.tl.predict_perturbation` done by hand): each row of ``latent`` is
    decoded into a draw of the model's likelihood ``p(x | z)`` (counts for a count VAE), or with
    ``sample=False`` into its mean.

    Parameters
    ----------
    adata
        The AnnData holding the trained model in ``.uns[model_key]`` (and every gene of the model); its
        cells give the library sizes and batches of the decoded cells (see ``library_size`` and ``batch``).
        It is not modified.
    latent
        Codes in the model's latent space, cells x ``n_latent``; or the name of an ``.obsm`` entry of
        ``adata`` holding one code per cell of ``adata`` (e.g. ``"X_vae"``, the posterior means), in which
        case each decoded cell takes its cell's library size, batch and name.
    model_key
        ``key_added`` of the :func:`scdgm.tl.vae` call whose model to use.
    library_size
        For count likelihoods: the library size (total counts) of every decoded cell. Default: each cell's
        own for an ``.obsm`` key, else the median library size of the cells of ``adata``.
    batch
        For a batch-conditional model: the batch category every cell is decoded into. Default: each
        cell's own for an ``.obsm`` key; required for an array.
    sample
        Draw from the likelihood; ``False`` returns its mean (expected counts at the library size, the
        mean of a Gaussian, or the probability of a one).
    device
        Where the model runs; ``None`` follows ``dgm.settings.device``.
    seed
        Seeds the likelihood's draws; ``None`` follows ``dgm.settings.seed``. The caller's random state
        is left as it was.
    key_added
        ``.uns`` key of the provenance in the returned AnnData.

    Returns
    -------
    A new AnnData of one decoded cell per code x the model's features (in the model's order; the
    ``.var`` columns of ``adata`` for those genes are kept), named as the cells of ``adata`` for an
    ``.obsm`` key, else ``decoded_0``, ``decoded_1``, ..., with:

    ``.X``
        Draws of the likelihood (counts or 0/1 as a ``float32`` CSR matrix, Gaussian values dense), or
        with ``sample=False`` its means as a dense ``float32`` array.
    ``.obs["<batch_key>"]``
        For a batch-conditional model: the batch each cell was decoded into.
    ``.uns["<key_added>"]``
        Provenance: ``model_key``, ``model_class``, ``seed``, ``params`` (the arguments of this call; an
        array ``latent`` as ``"array"``) and ``model_params`` (the model's training arguments).

    Examples
    --------
    >>> import scdgm as dgm
    >>> adata = dgm.datasets.simulate(500, 100, n_cell_types=3, seed=0)
    >>> dgm.tl.vae(adata, max_epochs=50)  # doctest: +SKIP
    >>> z = adata.obsm["X_vae"][:10].copy()  # doctest: +SKIP
    >>> z[:, 0] += 1.0  # a step along the first latent dimension  # doctest: +SKIP
    >>> cells = dgm.tl.decode(adata, z, sample=False)  # doctest: +SKIP
    >>> reconstructed = dgm.tl.decode(adata, "X_vae")  # doctest: +SKIP
    """
    check_key("model_key", model_key)
    uns_key = SyntheticKeys(key_added).uns
    record = read_record(adata, model_key)
    _check_latent_model(record, model_key, tool="decode")
    n_latent = int(record.init_kwargs.get("n_latent", 10))
    codes, from_obsm = _check_latent(adata, latent, n_latent)
    batch_code = _check_batch(record, batch, model_key)
    if not from_obsm and batch_code is None and "batch" in record.category_encodings():
        msg = (
            f"The model in .uns[{model_key!r}] is batch-conditional: pass batch= naming the batch to decode into "
            f"({list(record.category_encodings()['batch'].categories)})."
        )
        raise ValueError(msg)
    library_size = _check_library_size(record, library_size, model_key)
    sample = check_bool("sample", sample)
    device, seed = resolve_device_seed(device, seed)

    applied = apply_stored_model(adata, model_key, device=device)
    data = applied.data
    n = len(codes)
    library = None
    if record.counts:
        if library_size is not None:
            library = np.full(n, library_size, dtype=np.float32)
        else:
            library = data.library.copy() if from_obsm else np.full(n, np.median(data.library), dtype=np.float32)
    cell_batches = data.covariates.get("batch")
    batches = None
    if cell_batches is not None:
        batches = np.full(n, batch_code, dtype=np.int64) if batch_code is not None else cell_batches.copy()
    plan = GenerationPlan(
        donors=np.full(n, -1, dtype=np.int64),
        pools=[],
        pool_of_cell=np.zeros(n, dtype=np.int64),
        latent="given",
        library=library,
        batch=batches,
        seed=seed,
        codes=codes,
        mean=not sample,
    )
    names = adata.obs_names.copy() if from_obsm else [f"decoded_{i}" for i in range(n)]
    decoded = draw_cells(adata, applied, plan, GENERATORS[record.class_name], names)
    params = record_params(
        "decode",
        model_key=model_key,
        latent=latent if from_obsm else "array",
        n_cells=n,
        library_size=library_size,
        batch=batch,
        sample=sample,
        seed=seed,
    )
    provenance = synthetic_provenance(adata, record, model_key, params, seed=seed)
    write_results(decoded, obs=_synthetic_obs(plan, None, None, applied), uns={uns_key: provenance})
    return decoded


def _check_latent(adata: AnnData, latent: np.ndarray | str, n_latent: int) -> tuple[np.ndarray, bool]:
    """The codes as ``float32`` (cells x ``n_latent``), and whether they came from ``adata.obsm``."""
    from_obsm = isinstance(latent, str)
    if from_obsm:
        if latent not in adata.obsm:
            msg = f"latent={latent!r} is not in adata.obsm (keys: {list(adata.obsm)}); pass its key or an array."
            raise KeyError(msg)
        values = adata.obsm[latent]
        where = f"adata.obsm[{latent!r}]"
    else:
        values = latent
        where = "latent"
    try:
        codes = np.asarray(values, dtype=np.float32)
    except (TypeError, ValueError):
        msg = f"{where} must be a numeric cells x {n_latent} array, not {type(values).__name__}."
        raise ValueError(msg) from None
    if codes.ndim != 2 or codes.shape[1] != n_latent or codes.shape[0] == 0:
        msg = (
            f"{where} has shape {codes.shape}; the model decodes codes of {n_latent} dimensions, so pass "
            f"cells x {n_latent} (one row for a single cell: `z.reshape(1, -1)`)."
        )
        raise ValueError(msg)
    if not np.isfinite(codes).all():
        msg = f"{where} holds NaN or infinite values."
        raise ValueError(msg)
    return codes, from_obsm
