"""``tl.embed``: place new cells in the latent space of a model trained on a reference."""

from __future__ import annotations

from anndata import AnnData

from .._keys import ModelKeys
from .._models import stored_model
from .._results import record_params, write_results
from .._settings import settings
from ._common import prepare_for_model


def embed(
    adata: AnnData,
    *,
    reference: AnnData,
    vae_key: str = "vae",
    layer: str | None = None,
    batch_key: str | None = None,
    device: str = "auto",
    key_added: str | None = None,
    copy: bool = False,
) -> AnnData | None:
    """Embed the cells of ``adata`` with the model trained on ``reference`` (reference mapping).

    The model is applied as trained (no fine-tuning): genes are matched by name and reordered,
    batches must be among the reference's batch categories. The model is copied into ``adata`` so that
    :func:`scdgm.tl.denoise` and :func:`scdgm.get_model` work on the query too.

    Parameters
    ----------
    adata
        Query cells; must hold every gene the model was trained on (extra genes are ignored).
    reference
        The AnnData whose ``.uns[vae_key]`` holds the trained model.
    vae_key
        ``key_added`` of the :func:`scdgm.tl.vae` call on the reference.
    layer, batch_key
        Input layer and batch column of the query; default: those the model was trained with.
    device
        Where the model runs.
    key_added
        Stem of the output keys in the query; default ``vae_key``, so that the query's latent space
        sits under the same name as the reference's.
    copy
        Return a new AnnData instead of writing into ``adata``.

    Returns
    -------
    ``None``, or a new AnnData when ``copy=True``, with these fields written:

    ``.obsm["X_<key_added>"]``
        Posterior means of the query cells in the reference's latent space.
    ``.uns["<key_added>"]["params"]``
        The arguments of this call and the reference model's training params.
    ``.uns["<key_added>"]["model"]``
        A copy of the reference's stored model.

    Examples
    --------
    >>> import scdgm as dgm
    >>> ref = dgm.datasets.simulate(500, 100, seed=0)
    >>> query = dgm.datasets.simulate(200, 100, seed=1)
    >>> dgm.tl.vae(ref, max_epochs=20)  # doctest: +SKIP
    >>> dgm.tl.embed(query, reference=ref)  # doctest: +SKIP
    """
    from ..data import BatchStore
    from ._common import model_for
    from ._vae import latent_means

    device = settings.resolve_device(device)
    record = stored_model(reference, vae_key)
    module, _ = model_for(reference, vae_key, device)
    data = prepare_for_model(adata, record, key=vae_key, layer=layer, batch_key=batch_key)
    latent = latent_means(module, BatchStore.from_prepared(data, device))

    keys = ModelKeys(key_added or vae_key)
    params = record_params(
        vae_key=vae_key,
        layer=layer,
        batch_key=batch_key,
        device=device,
        reference_params=dict(reference.uns[vae_key].get("params", {})),
    )
    adata = adata.copy() if copy else adata
    write_results(adata, obsm={keys.obsm: latent}, uns={keys.uns: {"params": params, "model": record}})
    return adata if copy else None
