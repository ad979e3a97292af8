"""``tl.pattern_extractor``: the gene patterns a Boltzmann machine (or a Bernoulli VAE) has learned, by log-linear models."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np
from anndata import AnnData

from .._checks import check_int
from .._docs import doc_params
from .._keys import check_key
from .._loglinear import MAX_PATTERN_GENES
from .._models import ModelRecord, read_record
from .._results import record_params, write_results
from ._common import AppliedModel, apply_stored_model, check_copy, check_uns_free, resolve_device_seed

if TYPE_CHECKING:
    import torch

PATTERN_CHAINS = 500
"""Most Gibbs chains that draw a Boltzmann machine's synthetic observations (each yields several, thinned)."""


@doc_params
def pattern_extractor(
    adata: AnnData,
    *,
    model_key: str = "dbm",
    n_genes: int = 6,
    n_samples: int = 5000,
    n_patterns: int = 10,
    hidden_layer: int | None = None,
    burn_in: int | None = None,
    thinning: int | None = None,
    device: str | None = None,
    seed: int | None = None,
    key_added: str = "patterns",
    copy: bool = False,
) -> AnnData | None:
    """Find the joint gene patterns a generative model has learned, with log-linear models (the PatternExtractor).

    Following Hess, Hackenberg & Binder (Bioinformatics 2020):

    1. ``n_samples`` synthetic observations and their hidden states are drawn from the model. A
       Boltzmann machine (:func:`scdgm.tl.dbm`) is sampled by block Gibbs chains (up to 500 chains
       after ``burn_in`` sweeps, each yielding observations ``thinning`` sweeps apart); its hidden
       units are binary already. A Bernoulli VAE draws latent codes from its prior ``N(0, I)`` and
       cells from the decoder; the codes are dichotomised at 0, the prior's median.
    2. Genes are selected greedily: at each step, for every candidate gene and hidden unit, the table
       [hidden unit, genes selected so far, candidate] is fitted by iterative proportional fitting with
       the log-linear model in which the candidate is independent of the hidden unit and the selected
       genes jointly (``[H S][C]``); the candidate whose deviance ``G^2`` against the saturated model is
       largest, over all hidden units, joins. The genes chosen are those most tied to the hidden
       states and to each other.
    3. The ``n_patterns`` most frequent joint states of the selected genes among the synthetic
       observations are the patterns.
    4. Each pattern's observations have a distribution of the hidden layer's joint states; the
       square roots of the Jensen-Shannon divergences between these distributions are the distances
       between patterns, and classical multidimensional scaling places them in two dimensions:
       patterns the model produces from similar hidden states lie close together. A wide hidden layer
       spreads the observations over many joint states, which pushes all distances towards their
       maximum ``sqrt(log 2)``: read a small layer (the default, the top one).

    Parameters
    ----------
    adata
        The AnnData holding the model in ``.uns[model_key]``; its cells (in the model's input layer)
        give the patterns' observed frequencies.
    model_key
        ``key_added`` of :func:`scdgm.tl.dbm`, or of :func:`scdgm.tl.vae` with ``likelihood="bernoulli"``
        (without ``batch_key``).
    n_genes
        Genes to select (at most 12 and the model's number of genes).
    n_samples
        Synthetic observations to draw.
    n_patterns
        Most frequent patterns to keep (fewer when fewer occur).
    hidden_layer
        Boltzmann machines: the hidden layer whose states are read, 1 for the one next to the genes;
        default the top layer. Must be ``None`` for a VAE.
    burn_in, thinning
        Boltzmann machines: Gibbs sweeps before a chain's first observation (default 500) and between
        two of its observations (default 10). Must be ``None`` for a VAE.
    device
        Where the model runs; ``None`` follows ``dgm.settings.device``.
    seed
        Seeds the draws; ``None`` follows ``dgm.settings.seed``. The selection, patterns and
        coordinates are deterministic given the draws.
    key_added
        ``.uns`` key of the result.
    {copy_doc}

    Returns
    -------
    {returns_doc}

    ``.uns["<key_added>"]["genes"]``
        The selected genes, in the order they joined.
    ``.uns["<key_added>"]["deviance"]``
        ``G^2`` of each gene at the step it joined.
    ``.uns["<key_added>"]["hidden_units"]``
        The hidden unit (0-based, in ``hidden_layer``) whose table gave that deviance.
    ``.uns["<key_added>"]["patterns"]``
        Patterns x selected genes, 0/1 (``int8``), most frequent first.
    ``.uns["<key_added>"]["labels"]``
        Each pattern as a string of its genes' states, e.g. ``"0110"``, in the order of ``genes``.
    ``.uns["<key_added>"]["frequency"]``
        Share of the synthetic observations that show each pattern.
    ``.uns["<key_added>"]["frequency_observed"]``
        Share of the cells of ``adata`` that show it (the model's input, read as ``value > 0.5``).
    ``.uns["<key_added>"]["hidden_activity"]``
        Patterns x hidden units: the share of each pattern's observations in which the unit is on.
    ``.uns["<key_added>"]["distances"]``
        Patterns x patterns square-root Jensen-Shannon distances between the hidden-state distributions.
    ``.uns["<key_added>"]["coordinates"]``
        Patterns x 2 classical MDS coordinates of those distances (drawn by :func:`scdgm.pl.patterns`).
    ``.uns["<key_added>"]["params"]``
        The arguments of this call, the resolved hidden layer, ``burn_in`` and ``thinning``, and the
        package version.

    Examples
    --------
    >>> import scdgm as dgm
    >>> adata = dgm.datasets.pbmc68k()
    >>> dgm.pp.binarize(adata, layer="counts")
    >>> dgm.tl.dbm(adata[:, :100].copy(), n_hidden=(50, 5))  # doctest: +SKIP
    >>> dgm.tl.pattern_extractor(adata, n_genes=5)  # doctest: +SKIP
    >>> dgm.get.patterns(adata)  # doctest: +SKIP
    """
    from .._loglinear import pattern_coordinates, pattern_frequencies, select_genes, top_patterns

    check_key("model_key", model_key)
    check_key("key_added", key_added)
    record = read_record(adata, model_key)
    kind = _model_kind(record, model_key)
    n_model_genes = len(record.var_names)
    n_genes = check_int("n_genes", n_genes)
    if n_genes > min(MAX_PATTERN_GENES, n_model_genes):
        msg = (
            f"n_genes={n_genes} is more than the {n_model_genes} genes of the model in .uns[{model_key!r}]"
            if n_genes > n_model_genes
            else f"n_genes={n_genes} is more than {MAX_PATTERN_GENES}: patterns of that many genes spread the "
            f"observations over {2**n_genes} states, too many to count"
        )
        raise ValueError(msg + ". Pass a smaller n_genes.")
    n_samples = check_int("n_samples", n_samples, minimum=10)
    n_patterns = check_int("n_patterns", n_patterns)
    layer = _check_sampler(record, kind, hidden_layer, burn_in, thinning, model_key)
    check_uns_free(adata, key_added, tool="pattern_extractor")
    check_copy(adata, copy)
    device, seed = resolve_device_seed(device, seed)

    applied = apply_stored_model(adata, model_key, device=device)
    visible, hidden, sampler = _draw(applied, kind, layer, n_samples, burn_in, thinning, seed)
    selection = select_genes(visible, hidden, n_genes)
    chosen = visible[:, selection.genes]
    patterns, counts = top_patterns(chosen, n_patterns)
    observed = _observed(applied, selection.genes)
    distances, coordinates = pattern_coordinates(chosen, hidden, patterns)
    activity = np.stack([hidden[np.all(chosen == p, axis=1)].mean(0) for p in patterns])
    params = record_params(
        "pattern_extractor",
        model_key=model_key,
        n_genes=n_genes,
        n_samples=n_samples,
        n_patterns=n_patterns,
        hidden_layer=layer,
        **sampler,
        seed=seed,
    )
    entry = {
        "genes": np.asarray(applied.record.var_names[selection.genes], dtype=object),
        "deviance": np.asarray(selection.deviance),
        "hidden_units": np.asarray(selection.hidden_units, dtype=np.int64),
        "patterns": patterns,
        "labels": np.asarray(["".join(map(str, p)) for p in patterns], dtype=object),
        "frequency": counts / n_samples,
        "frequency_observed": pattern_frequencies(observed, patterns),
        "hidden_activity": activity.astype(np.float64),
        "distances": distances,
        "coordinates": coordinates,
        "params": params,
    }
    adata = adata.copy() if copy else adata
    write_results(adata, uns={key_added: entry})
    return adata if copy else None


def _model_kind(record: ModelRecord, key: str) -> str:
    """``"dbm"`` or ``"vae"``, or a ValueError when the model does not draw binary observations with hidden states."""
    if record.class_name == "DBMModule":
        return "dbm"
    if (
        record.class_name == "VAEModule"
        and record.init_kwargs.get("likelihood") == "bernoulli"
        and not record.init_kwargs.get("n_batch")
        and record.init_kwargs.get("kind", "vae") == "vae"
    ):
        return "vae"
    what = record.class_name
    if record.class_name == "VAEModule":
        what += f" (kind={record.init_kwargs.get('kind', 'vae')!r}, likelihood={record.init_kwargs.get('likelihood')!r}"
        what += ", with batches)" if record.init_kwargs.get("n_batch") else ")"
    msg = (
        f"model_key={key!r} holds a {what}; the PatternExtractor needs binary synthetic observations and "
        "hidden states: a Boltzmann machine (`dgm.tl.dbm`) or a Bernoulli VAE without batches "
        "(`dgm.tl.vae(adata, layer='binary', likelihood='bernoulli')`)."
    )
    raise ValueError(msg)


def _check_sampler(
    record: ModelRecord, kind: str, hidden_layer: Any, burn_in: Any, thinning: Any, key: str
) -> int | None:
    """The hidden layer to read (``None`` for a VAE), after checking the sampler's arguments."""
    if kind == "vae":
        given = [
            name
            for name, value in (("hidden_layer", hidden_layer), ("burn_in", burn_in), ("thinning", thinning))
            if value is not None
        ]
        if given:
            msg = f"{given[0]} applies to Boltzmann machines; the model in .uns[{key!r}] is a VAE. Leave it None."
            raise ValueError(msg)
        return None
    n_layers = len(np.atleast_1d(record.init_kwargs["n_hidden"]))
    if burn_in is not None:
        check_int("burn_in", burn_in, minimum=0)
    if thinning is not None:
        check_int("thinning", thinning)
    if hidden_layer is None:
        return n_layers
    layer = check_int("hidden_layer", hidden_layer)
    if layer > n_layers:
        msg = f"hidden_layer={layer}, but the model in .uns[{key!r}] has {n_layers} hidden layer(s) (1 to {n_layers})."
        raise ValueError(msg)
    return layer


def _draw(
    applied: AppliedModel,
    kind: str,
    layer: int | None,
    n_samples: int,
    burn_in: int | None,
    thinning: int | None,
    seed: int,
) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Synthetic observations and their binary hidden states, and the sampler's settings."""
    import torch

    from ..modules._dbm import DEFAULT_BURN_IN, DEFAULT_THINNING

    module = applied.module
    generator = torch.Generator(device=applied.device).manual_seed(seed)
    if kind == "vae":
        z = torch.randn((n_samples, module.n_latent), generator=generator, device=applied.device)
        library = torch.ones((n_samples, 1), device=applied.device)
        x = module.sample_counts(z, library, None, generator=generator)
        return _numpy(x) > 0.5, _numpy(z) > 0, {}
    burn_in = DEFAULT_BURN_IN if burn_in is None else burn_in
    thinning = DEFAULT_THINNING if thinning is None else thinning
    n_chains = min(n_samples, PATTERN_CHAINS)
    states = module.initial_states(n_chains, generator=generator)
    samples = module.sample(
        states, burn_in=burn_in, n_per_chain=math.ceil(n_samples / n_chains), thinning=thinning, generator=generator
    )
    visible = samples[0].reshape(-1, samples[0].shape[-1])[:n_samples]
    hidden = samples[layer].reshape(-1, samples[layer].shape[-1])[:n_samples]
    return _numpy(visible) > 0.5, _numpy(hidden) > 0.5, {"burn_in": burn_in, "thinning": thinning}


def _numpy(tensor: torch.Tensor) -> np.ndarray:
    return tensor.detach().cpu().numpy()


def _observed(applied: AppliedModel, genes: list[int]) -> np.ndarray:
    """The cells' states of the selected genes (``value > 0.5``), read chunk by chunk."""
    import scipy.sparse as sp

    parts = []
    data = applied.data.select_features(np.asarray(genes))
    for _, _, block in data.iter_chunks():
        parts.append(np.asarray(block.toarray() if sp.issparse(block) else block) > 0.5)
    return np.concatenate(parts) if parts else np.zeros((0, len(genes)), dtype=bool)
