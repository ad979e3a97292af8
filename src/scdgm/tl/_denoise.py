"""``tl.denoise``: expression as the trained model sees it, without the sampling noise of the counts."""

from __future__ import annotations

import numpy as np
from anndata import AnnData

from .._checks import check_int, check_positive
from .._docs import doc_params
from .._keys import ModelKeys, check_key
from .._results import record_params, write_results
from ._common import apply_stored_model, check_copy, check_uns_free, resolve_device_seed


@doc_params
def denoise(
    adata: AnnData,
    *,
    vae_key: str = "vae",
    layer: str | None = None,
    batch_key: str | None = None,
    library_size: float | None = 1e4,
    decode_batch: str | None = None,
    n_samples: int = 1,
    batch_size: int = 1024,
    device: str | None = None,
    seed: int | None = None,
    key_added: str | None = None,
    copy: bool = False,
) -> AnnData | None:
    """Posterior mean expression of every cell under a trained model (denoising / imputation).

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
        Dense cells x genes float32 matrix of denoised expression, in the gene order of ``adata``;
        genes the model was not trained on are NaN.
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
    denoised = applied.to_adata_columns(denoised.astype(np.float32), adata.n_vars)
    params = record_params(
        "denoise",
        vae_key=vae_key,
        layer=layer,
        batch_key=batch_key,
        library_size=library_size,
        decode_batch=decode_batch,
        n_samples=n_samples,
        seed=seed,
    )
    adata = adata.copy() if copy else adata
    write_results(adata, layers={layer_key: denoised}, uns={layer_key: {"params": params}})
    return adata if copy else None
