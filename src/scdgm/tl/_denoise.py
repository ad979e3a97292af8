"""``tl.denoise``: expression as the trained model sees it, without the sampling noise of the counts."""

from __future__ import annotations

import numpy as np
from anndata import AnnData

from .._keys import ModelKeys
from .._results import record_params, write_results
from .._settings import settings
from ._common import check_positive_int, model_for, prepare_for_model


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
    device: str = "auto",
    seed: int = 0,
    key_added: str | None = None,
    copy: bool = False,
) -> AnnData | None:
    """Posterior mean expression of every cell under a trained model (denoising / imputation).

    Parameters
    ----------
    adata
        Cells with the genes of the model in ``.uns[vae_key]`` (the training AnnData, or another one
        with the same genes).
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
        Where the model runs.
    seed
        Seeds the latent draws when ``n_samples > 1``.
    key_added
        Layer name; default ``"<vae_key>_denoised"``.
    copy
        Return a new AnnData instead of writing into ``adata``.

    Returns
    -------
    ``None``, or a new AnnData when ``copy=True``, with these fields written:

    ``.layers["<vae_key>_denoised"]``
        Dense cells x genes float32 matrix of denoised expression.
    ``.uns["<vae_key>_denoised"]["params"]``
        The arguments of this call.

    Examples
    --------
    >>> import scdgm as dgm
    >>> adata = dgm.datasets.pbmc68k()
    >>> dgm.tl.vae(adata, max_epochs=50)  # doctest: +SKIP
    >>> dgm.tl.denoise(adata, library_size=1e4)  # doctest: +SKIP
    """
    from ..data import BatchStore, MiniBatches
    from ..train import predict, seeded
    from ._common import encodings_of

    check_positive_int("n_samples", n_samples)
    check_positive_int("batch_size", batch_size)
    if library_size is not None and not library_size > 0:
        msg = f"library_size must be positive or None, not {library_size!r}."
        raise ValueError(msg)
    seed = settings.resolve_seed(seed)
    device = settings.resolve_device(device)
    module, record = model_for(adata, vae_key, device)
    decode_code = None
    if decode_batch is not None:
        encodings = encodings_of(record)
        if "batch" not in encodings:
            msg = f"decode_batch={decode_batch!r} was given, but the model in .uns[{vae_key!r}] has no batch covariate."
            raise ValueError(msg)
        decode_code = int(encodings["batch"].encode(np.asarray([decode_batch]))[0])
    data = prepare_for_model(adata, record, key=vae_key, layer=layer, batch_key=batch_key)

    store = BatchStore.from_prepared(data, device)
    batches = MiniBatches(store, np.arange(data.n_obs), batch_size=batch_size, shuffle=False)
    with seeded(seed, device):
        denoised = predict(
            module,
            batches,
            lambda m, b: m.expected_expression(
                b, library_size=library_size, decode_batch=decode_code, n_samples=n_samples
            ),
        )
    keys = ModelKeys(vae_key)
    layer_key = key_added or keys.denoised_layer
    params = record_params(
        vae_key=vae_key,
        layer=layer,
        batch_key=batch_key,
        library_size=library_size,
        decode_batch=decode_batch,
        n_samples=n_samples,
        seed=seed,
    )
    adata = adata.copy() if copy else adata
    write_results(adata, layers={layer_key: denoised.astype(np.float32)}, uns={layer_key: {"params": params}})
    return adata if copy else None
