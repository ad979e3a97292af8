"""``tl.ldvae_loadings``: gene loadings of a linearly decoded VAE, read like PCA loadings."""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
from anndata import AnnData

from .._checks import check_choice, check_fraction, check_int
from .._docs import doc_params
from .._keys import LoadingsKeys
from .._results import record_params, write_results
from ._common import apply_stored_model, check_copy, check_uns_free, resolve_device_seed, top_genes_entry
from ._rotation import orient_and_order, varimax

ROTATIONS = ("varimax", "none")
# L1 weight on the loadings when a model is trained here. On simulated gene programs it raised the mean
# matched |r| to the true programs at no cost in held-out ELBO (benchmarks/ldvae_programs.py); 0.003 to
# 0.03 gave about the same.
DEFAULT_LOADINGS_L1 = 0.01
# A linear decoder converges more slowly than an MLP's: on the log-linear simulator the best epoch sat at
# the end of tl.vae's default run (400 epochs for 4,000 cells) and early stopping ended runs allowed twice
# as long at 450-470 epochs, with factors closer to the truth (benchmarks/README.md). Early stopping still
# ends a run when it stops improving.
EPOCHS_FACTOR = 2


def _from_scvi(adata: AnnData, scvi_model: Any) -> tuple[np.ndarray, np.ndarray]:
    loadings = scvi_model.get_loadings()
    missing = [g for g in adata.var_names if g not in loadings.index]
    if missing:
        msg = f"{len(missing)} genes of adata are not in the scvi-tools model (first: {missing[:5]}); subset adata to the model's genes."
        raise ValueError(msg)
    return loadings.loc[adata.var_names].to_numpy(), np.asarray(scvi_model.get_latent_representation(adata))


@doc_params
def ldvae_loadings(
    adata: AnnData,
    *,
    vae_key: str | None = None,
    scvi_model: Any = None,
    rotation: Literal["varimax", "none"] = "varimax",
    n_top: int = 20,
    device: str | None = None,
    seed: int | None = None,
    key_added: str = "ldvae",
    copy: bool = False,
    **vae_kwargs: Any,
) -> AnnData | None:
    """Gene loadings per latent factor of a linearly decoded VAE (LDVAE, Svensson et al. 2020).

    The encoder stays non-linear, the decoder is one linear map from the latent factors to each gene's
    log expression scale, so each factor has one loading per gene. The loading of gene ``g`` on factor
    ``k`` is the change in ``g``'s log expression (before the softmax over genes that turns it into a
    fraction of the library) for one unit of factor ``k`` — one standard deviation of the N(0, 1) prior;
    a batch-normalisation layer of the decoder is folded in, batch columns are dropped.

    Identifiability: with an isotropic prior the latent space is defined only up to a rotation, so raw
    loadings mix programs. Two things pin it down. A model trained here has an L1 penalty on its
    loadings (``loadings_l1``, default 0.01 here, 0 in :func:`scdgm.tl.vae`), which prefers factors
    that load on few genes. ``rotation="varimax"`` then rotates loadings and latent values together (the
    decoded expression is unchanged) so that each gene loads on few factors; the unrotated loadings and
    latent values are kept too. Factors are then oriented so that their largest loadings are positive
    and ordered by decreasing sum of squared loadings.

    Factors are not guaranteed to be one gene program each. Giving the model more factors than the
    programs you expect lets cell-type markers and other signals take their own factors; on simulated
    data this helped more than anything else (``benchmarks/README.md``).

    Parameters
    ----------
    adata
        Cells x genes (raw counts for count likelihoods).
    vae_key
        Use the model trained by ``dgm.tl.vae(adata, decoder="linear", key_added=vae_key)`` instead of
        training one.
    scvi_model
        Use a trained scvi-tools ``LinearSCVI`` instead: its ``get_loadings()`` and latent space are
        written to the same keys.
    rotation
        ``"varimax"`` or ``"none"``.
    n_top
        Genes listed per factor and direction in ``.uns``.
    device
        Where the model runs; ``None`` follows ``dgm.settings.device``.
    seed
        Seed of the training when a model is trained here; ``None`` follows ``dgm.settings.seed``.
    key_added
        Stem of the output keys.
    {copy_doc}
    **vae_kwargs
        Arguments of :func:`scdgm.tl.vae` when a model is trained here (``n_latent``, ``likelihood``,
        ``max_epochs``, ``loadings_l1``, ...); ``decoder`` is always ``"linear"``, ``loadings_l1``
        defaults to 0.01 and ``max_epochs`` to twice :func:`scdgm.tl.vae`'s default (a linear decoder
        converges more slowly; early stopping still ends the run when the held-out ELBO stops improving).

    Returns
    -------
    {returns_doc}

    ``.varm["<key_added>_loadings"]``
        Genes x factors, rotated (when asked), oriented and ordered.
    ``.varm["<key_added>_loadings_unrotated"]``
        Genes x factors as the decoder holds them.
    ``.obsm["X_<key_added>"]``
        Factor values per cell (posterior means), transformed like the loadings.
    ``.obsm["X_<key_added>_unrotated"]``
        Posterior means as the encoder gives them.
    ``.uns["<key_added>"]``
        ``params`` (with a model trained here, also every argument of that training as resolved:
        ``max_epochs``, ``kl_warmup_epochs``, ``loadings_l1``, ``n_restarts``, ``seed``, ...); ``rotation``
        (the factors x factors matrix taking unrotated to reported factors);
        ``top_genes`` (``targets``: the factor names; ``positive`` / ``negative``: factors x ``n_top``
        genes with the most positive and most negative loadings, read them with
        :func:`scdgm.get.top_genes`); and, when a model is trained here, everything :func:`scdgm.tl.vae` records
        (``history``, ``metrics``, ``model``, ``split``).

    Examples
    --------
    >>> import scdgm as dgm
    >>> adata = dgm.datasets.pbmc68k()
    >>> dgm.tl.ldvae_loadings(adata, n_latent=10, max_epochs=100)  # doctest: +SKIP
    >>> dgm.pl.loadings(adata, n_top=8)  # doctest: +SKIP
    """
    from ..data._split import n_validation_cells
    from ..train import default_max_epochs
    from ._vae import VAEOptions, train_vae

    check_choice("rotation", rotation, ROTATIONS)
    check_int("n_top", n_top)
    keys = LoadingsKeys(key_added)
    check_copy(adata, copy)
    if sum(x is not None for x in (vae_key, scvi_model)) > 1:
        msg = "Pass at most one of vae_key= and scvi_model=."
        raise ValueError(msg)
    if (vae_key is not None or scvi_model is not None) and vae_kwargs:
        msg = f"Training arguments {sorted(vae_kwargs)} only apply when a model is trained here (no vae_key / scvi_model)."
        raise ValueError(msg)
    known_options = set(VAEOptions.__dataclass_fields__)
    unknown = sorted(set(vae_kwargs) - known_options)
    if unknown:
        msg = f"Unknown arguments {unknown}; ldvae_loadings passes on arguments of dgm.tl.vae: {sorted(known_options)}."
        raise TypeError(msg)
    if "decoder" in vae_kwargs and vae_kwargs["decoder"] != "linear":
        msg = "ldvae_loadings trains a linear decoder; leave out decoder= (or use dgm.tl.vae for an MLP decoder)."
        raise ValueError(msg)
    vae_kwargs.pop("decoder", None)

    uns_entry: dict[str, Any] = {}
    if scvi_model is not None:
        loadings, latent = _from_scvi(adata, scvi_model)
        source = {"source": f"scvi-tools {type(scvi_model).__name__}"}
    elif vae_key is not None:
        check_uns_free(adata, keys.uns, tool="ldvae_loadings")
        device, _ = resolve_device_seed(device, seed)
        applied = apply_stored_model(adata, vae_key, device=device)
        decoder = str(applied.record.init_kwargs.get("decoder", "mlp"))
        if decoder != "linear":
            msg = (
                f"The model in .uns[{vae_key!r}] has decoder={decoder!r}, which has no gene loadings. Train a linear "
                f"one with `dgm.tl.vae(adata, decoder='linear', key_added={vae_key!r})`, or call ldvae_loadings "
                "without vae_key to train one here."
            )
            raise ValueError(msg)
        latent = applied.predict(lambda m, b: m.latent_mean(b))
        loadings = applied.to_adata_columns(applied.module.linear_loadings().detach().cpu().numpy().T, adata.n_vars).T
        source = {"source": f"dgm.tl.vae model in .uns[{vae_key!r}]", "vae_key": vae_key}
    else:
        defaults: dict[str, Any] = {"loadings_l1": DEFAULT_LOADINGS_L1}
        if vae_kwargs.get("max_epochs") is None:
            fraction = vae_kwargs.get("validation_fraction", VAEOptions.validation_fraction)
            # the training cells tl.vae's split will leave, by the data layer's own rule
            n_held_out = n_validation_cells(adata.n_obs, check_fraction("validation_fraction", fraction))
            n_train = max(1, adata.n_obs - n_held_out)
            defaults["max_epochs"] = EPOCHS_FACTOR * default_max_epochs(n_train)
        options = VAEOptions.from_arguments({**defaults, **vae_kwargs, "decoder": "linear"})
        run = train_vae(adata, options, device=device, seed=seed)
        latent, loadings = run.latent, run.module.linear_loadings().detach().cpu().numpy()
        uns_entry = run.uns_entry("ldvae_loadings")
        # the training's resolved arguments (max_epochs, kl_warmup_epochs, seed, ...) sit beside the tool's own
        source = {"source": "trained by dgm.tl.ldvae_loadings", **run.params}

    known = np.nan_to_num(loadings)  # genes the model never saw (NaN rows) take no part in the rotation
    rot = varimax(known) if rotation == "varimax" else np.eye(loadings.shape[1])
    order, signs = orient_and_order(known @ rot)
    transform = rot[:, order] * signs
    rotated_loadings, rotated_latent = loadings @ transform, latent @ transform
    factors = [f"factor_{k}" for k in range(transform.shape[1])]

    uns_entry.update(
        {
            "params": record_params("ldvae_loadings", rotation=rotation, n_top=n_top, **source),
            "rotation": transform,
            "top_genes": top_genes_entry(known @ transform, adata.var_names, factors, n_top),
        }
    )
    adata = adata.copy() if copy else adata
    write_results(
        adata,
        varm={keys.varm: rotated_loadings.astype(np.float32), keys.varm_unrotated: loadings.astype(np.float32)},
        obsm={keys.obsm: rotated_latent.astype(np.float32), keys.obsm_unrotated: latent.astype(np.float32)},
        uns={keys.uns: uns_entry},
    )
    return adata if copy else None
