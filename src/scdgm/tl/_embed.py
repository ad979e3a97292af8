"""``tl.embed``: place new cells in the latent space of a model trained on a reference."""

from __future__ import annotations

from anndata import AnnData

from .._docs import doc_params
from .._keys import ModelKeys
from .._results import record_params, write_results
from ._common import apply_stored_model, check_copy, check_uns_free, output_stem, resolve_device_seed


@doc_params
def embed(
    adata: AnnData,
    *,
    reference: AnnData,
    vae_key: str = "vae",
    layer: str | None = None,
    batch_key: str | None = None,
    device: str | None = None,
    key_added: str | None = None,
    copy: bool = False,
) -> AnnData | None:
    """Embed the cells of ``adata`` with the model trained on ``reference`` (reference mapping).

    The model is applied as trained (no fine-tuning): genes are matched by name and reordered,
    batches must be among the reference's batch categories. The model is copied into ``adata`` so that
    :func:`scdgm.tl.denoise` and :func:`scdgm.get_model` work on the query too. A trained model
    already in ``adata`` is never replaced: where ``.uns[key_added]`` holds one (as when ``adata`` is
    the reference itself), the default ``key_added`` becomes ``"<vae_key>_embed"``.

    Parameters
    ----------
    adata
        Query cells; must hold every gene the model was trained on (extra genes are ignored).
    reference
        The AnnData whose ``.uns[vae_key]`` holds the trained model.
    vae_key
        ``key_added`` of the :func:`scdgm.tl.vae` call on the reference.
    layer, batch_key
        Input layer and batch column of the query; default: those the model was trained with (the
        query's ``.X`` when it lacks the training layer).
    device
        Where the model runs; ``None`` follows ``dgm.settings.device``.
    key_added
        Stem of the output keys in the query; default ``vae_key``, so that the query's latent space
        sits under the same name as the reference's (``"<vae_key>_embed"`` where that would replace a
        trained model).
    {copy_doc}

    Returns
    -------
    {returns_doc}

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
    keys = ModelKeys(output_stem(adata, key_added, vae_key, tool="embed", suffix="embed"))
    check_uns_free(adata, keys.uns, tool="embed")
    check_copy(adata, copy)
    device, _ = resolve_device_seed(device, None)
    applied = apply_stored_model(adata, vae_key, device=device, source=reference, layer=layer, batch_key=batch_key)
    latent = applied.predict(lambda m, b: m.latent_mean(b))

    params = record_params(
        "embed",
        vae_key=vae_key,
        layer=layer,
        batch_key=batch_key,
        device=device,
        reference_params=dict(reference.uns[vae_key].get("params", {})),
    )
    adata = adata.copy() if copy else adata
    write_results(adata, obsm={keys.obsm: latent}, uns={keys.uns: {"params": params, "model": applied.record.to_uns()}})
    return adata if copy else None
