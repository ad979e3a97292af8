"""``tl.denoise``: expression as the trained model sees it, without the sampling noise of the counts."""

from __future__ import annotations

import numpy as np
from anndata import AnnData

from .._checks import check_bool, check_int, check_positive
from .._docs import doc_params
from .._keys import ModelKeys, check_key
from .._models import read_record
from .._results import record_params, write_results
from .._settings import logger
from ._common import apply_stored_model, check_copy, check_uns_free, resolve_device_seed


@doc_params
def denoise(
    adata: AnnData,
    *,
    vae_key: str = "vae",
    layer: str | None = None,
    batch_key: str | None = None,
    library_size: float | None = 1e4,
    log1p: bool = False,
    decode_batch: str | None = None,
    n_samples: int = 1,
    batch_size: int = 1024,
    device: str | None = None,
    seed: int | None = None,
    key_added: str | None = None,
    copy: bool = False,
) -> AnnData | None:
    """Posterior mean expression of every cell under a trained model (denoising / imputation).

    Denoised values are the model's estimates, not data: each borrows from the cells the model has
    learnt from, so the values of different cells are not independent and a small group is pulled
    towards its neighbours. Do not test them as data (``sc.tl.rank_genes_groups`` on this layer called
    5,845 of 7,650 gene x group tests on pbmc68k, against 1,640 on log-normalised counts, and ranked
    second a gene without a count in any of the group's 8 cells). Compare groups through the model
    with :func:`scdgm.tl.differential_expression`, which accounts for the uncertainty; use denoised
    values to look at (plots, trajectories), with ``log1p=True`` on the scale of ``sc.pp.log1p``.

    Parameters
    ----------
    adata
        Cells with the genes of the model in ``.uns[vae_key]`` (the training AnnData, or another one
        holding every gene of the model; genes are matched by name, in any order).
    vae_key
        ``key_added`` of the :func:`scdgm.tl.vae` call whose model to use.
    layer, batch_key
        Where the model reads its input and batches; default: what it was trained with.
    library_size
        For count likelihoods, the total counts each denoised cell is scaled to (``1e4``: counts per
        10,000); ``None`` keeps each cell's observed library size. Ignored for ``normal`` (decoded
        mean) and ``bernoulli`` (probabilities).
    log1p
        Write ``log(1 + value)``, as ``sc.pp.normalize_total`` then ``sc.pp.log1p`` would; count
        likelihoods only.
    decode_batch
        For a batch-conditional model: the batch category every cell is decoded into, so that all
        cells are shown as if measured in that batch. Default: each cell's own batch.
    n_samples
        Latent draws averaged per cell; 1 decodes the posterior mean.
    batch_size
        Cells per inference batch.
    device
        Where the model runs; ``None`` follows ``dgm.settings.device``.
    seed
        Seeds the latent draws when ``n_samples > 1``; ``None`` follows ``dgm.settings.seed``.
    key_added
        Layer name; default ``"<vae_key>_denoised"``.
    {copy_doc}

    Returns
    -------
    {returns_doc}

    ``.layers["<vae_key>_denoised"]``
        Dense cells x genes float32 matrix of denoised expression (its ``log1p`` with ``log1p=True``),
        in the gene order of ``adata``; genes the model was not trained on are NaN.
    ``.uns["<vae_key>_denoised"]["params"]``
        The arguments of this call.

    Examples
    --------
    >>> import scdgm as dgm
    >>> adata = dgm.datasets.pbmc68k()
    >>> dgm.tl.vae(adata, max_epochs=50)  # doctest: +SKIP
    >>> dgm.tl.denoise(adata, library_size=1e4)  # doctest: +SKIP
    """
    check_int("n_samples", n_samples)
    check_int("batch_size", batch_size)
    if library_size is not None:
        check_positive("library_size", library_size)
    if check_bool("log1p", log1p) and not read_record(adata, vae_key).counts:
        msg = f"log1p=True applies to count likelihoods; the model in .uns[{vae_key!r}] does not model counts."
        raise ValueError(msg)
    layer_key = check_key("key_added", key_added) if key_added is not None else ModelKeys(vae_key).denoised_layer
    check_uns_free(adata, layer_key, tool="denoise")
    check_copy(adata, copy)
    device, seed = resolve_device_seed(device, seed)
    applied = apply_stored_model(adata, vae_key, device=device, layer=layer, batch_key=batch_key)
    decode_code = None
    if decode_batch is not None:
        encodings = applied.record.category_encodings()
        if "batch" not in encodings:
            msg = f"decode_batch={decode_batch!r} was given, but the model in .uns[{vae_key!r}] has no batch covariate."
            raise ValueError(msg)
        decode_code = int(encodings["batch"].encode(np.asarray([decode_batch]))[0])

    from ..train import seeded

    with seeded(seed, device):
        denoised = applied.predict(
            lambda m, b: m.expected_expression(
                b, library_size=library_size, decode_batch=decode_code, n_samples=n_samples
            ),
            batch_size=batch_size,
        )
    if log1p:
        denoised = np.log1p(denoised)
    denoised = applied.to_adata_columns(denoised.astype(np.float32), adata.n_vars)
    params = record_params(
        "denoise",
        vae_key=vae_key,
        layer=layer,
        batch_key=batch_key,
        library_size=library_size,
        log1p=log1p,
        decode_batch=decode_batch,
        n_samples=n_samples,
        seed=seed,
    )
    adata = adata.copy() if copy else adata
    write_results(adata, layers={layer_key: denoised}, uns={layer_key: {"params": params}})
    logger.info(
        f"    .layers[{layer_key!r}] holds model estimates, not data: do not test them (e.g. with "
        "sc.tl.rank_genes_groups); compare groups with dgm.tl.differential_expression"
    )
    return adata if copy else None
