"""``tl.generate``: synthetic cells drawn from a trained generative model, as a new AnnData.

The tool decides which cells to make (how many per group, which training cell each one is drawn
around, its library size and batch); a per-class entry of :data:`GENERATORS` turns that plan into
data. A new generative module (a deep Boltzmann machine) plugs in with :func:`register_generator`.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import scipy.sparse as sp
from anndata import AnnData

from .._keys import SyntheticKeys, check_key
from .._models import ModelRecord, read_record
from .._results import record_params, write_results
from ._common import AppliedModel, apply_stored_model, check_choice, check_int, check_positive, resolve_device_seed

if TYPE_CHECKING:
    import torch

LATENTS = ("posterior", "prior")
"""Latent densities synthetic cells are drawn from."""

_CHUNK_ENTRIES = 2**22
"""Cells x genes sampled at once: bounds the memory of the likelihood's parameters, whatever ``n_cells``."""


@dataclass
class GenerationPlan:
    """Which synthetic cells to make, decided before the model runs; read by a generator.

    Attributes
    ----------
    donors
        Per synthetic cell, the row of the prepared training cells (``applied.data``) it is drawn
        around (``latent="posterior"``) or takes its library size and batch from (``"prior"``).
    pools
        The training rows each synthetic cell's donor was drawn from: one array per group (one for
        all cells without ``groupby``); the latent density of a pool is built from its cells only.
    pool_of_cell
        Per synthetic cell, its position in ``pools``.
    latent
        ``"posterior"`` or ``"prior"``.
    library
        Per synthetic cell, the library size to decode with; ``None`` for models without one.
    batch
        Per synthetic cell, the batch code to decode into; ``None`` for models without batches.
    seed
        Seeds every draw of the generator.
    codes
        Latent codes to decode as they are, one row per synthetic cell (:func:`scdgm.tl.decode`);
        ``donors`` and ``pools`` are then not read. ``None``: codes drawn as ``latent`` says.
    shift
        A latent vector added to every code drawn (:func:`scdgm.tl.predict_perturbation`'s delta).
    mean
        Decode to the likelihood's mean instead of drawing from it.
    burn_in, thinning
        For models sampled by Markov chains (Boltzmann machines): sweeps before a chain yields its
        first cell, and between two cells of the same chain; ``None``: the generator's defaults.
    """

    donors: np.ndarray
    pools: list[np.ndarray]
    pool_of_cell: np.ndarray
    latent: str
    library: np.ndarray | None
    batch: np.ndarray | None
    seed: int
    codes: np.ndarray | None = None
    shift: np.ndarray | None = None
    mean: bool = False
    burn_in: int | None = None
    thinning: int | None = None

    @property
    def n_cells(self) -> int:
        """Number of synthetic cells."""
        return len(self.donors)


@dataclass(frozen=True)
class Generator:
    """How the stored models of one module class make synthetic cells.

    Attributes
    ----------
    sample
        ``sample(applied, plan)`` -> cells x model features (CSR or dense ``float32``), in plan order.
    check
        ``check(record, latent, key)`` raises, before any work, when the model cannot draw from ``latent``.
    mcmc
        Whether the model is sampled by Markov chains, so that ``burn_in`` and ``thinning`` apply.
    """

    sample: Callable[[AppliedModel, GenerationPlan], Any]
    check: Callable[[ModelRecord, str, str], None]
    mcmc: bool = False


GENERATORS: dict[str, Generator] = {}
"""Generators of synthetic cells, keyed by the ``class_name`` of the stored model."""


def register_generator(
    class_name: str, *, check: Callable[[ModelRecord, str, str], None], mcmc: bool = False
) -> Callable[[Callable], Callable]:
    """Register how the stored models of ``class_name`` draw synthetic cells (see :class:`Generator`)."""

    def decorate(sample: Callable[[AppliedModel, GenerationPlan], Any]) -> Callable:
        GENERATORS[class_name] = Generator(sample=sample, check=check, mcmc=mcmc)
        return sample

    return decorate


def generate(
    adata: AnnData,
    *,
    model_key: str = "vae",
    n_cells: int | None = None,
    groupby: str | None = None,
    n_per_group: Mapping[Any, int] | None = None,
    latent: str = "posterior",
    batch: str | None = None,
    library_size: float | None = None,
    burn_in: int | None = None,
    thinning: int | None = None,
    device: str | None = None,
    seed: int | None = None,
    key_added: str = "synthetic",
) -> AnnData:
    """Synthetic cells drawn from a trained generative model.

    Every synthetic cell is a draw from the model's likelihood ``p(x | z)`` at a latent code ``z``.
    By default (``latent="posterior"``) the codes come from the aggregate posterior of the cells in
    ``adata``: a training cell is picked at random (with replacement) and ``z`` is drawn from its
    posterior ``q(z | x)``; the synthetic cell also takes that cell's library size and batch, so the
    dependencies between latent state, sequencing depth and batch are kept, as in a posterior
    predictive check. The prior ``N(0, I)`` is the other choice; a trained VAE's aggregate posterior
    does not fill it evenly, so prior draws land partly in holes where no cell lies. On simulated data
    (2,000 cells, 200 genes, 10 latent dimensions, 100 epochs) prior draws lay on average 9% farther
    from the nearest cell's posterior mean than posterior draws (1.96 against 1.80), and the gene-gene
    correlations of the synthetic cells agreed less with the data's (0.65 against 0.73).

    Plain and denoising autoencoders have no posterior variance: around each picked cell's
    code they draw from a Gaussian kernel whose bandwidth per latent dimension follows Scott's rule
    (standard deviation of the codes times ``n ** (-1 / (n_latent + 4))``, over the cells of the
    group), which makes the density a kernel density estimate of the codes.

    The cells are only as good as the model's likelihood. Judge them with
    :func:`scdgm.tl.synthetic_quality` against held-out cells: on pbmc68k a negative binomial VAE's
    cells held too many zeros per cell (a real-vs-synthetic classifier AUROC of 0.73–0.76), a Poisson
    VAE's did not (0.49–0.55, the real-vs-real control 0.54–0.56; ``benchmarks/README.md``).

    Parameters
    ----------
    adata
        The AnnData holding the trained model in ``.uns[model_key]`` and the cells that define the
        latent density and the group, batch and library-size proportions: the training cells, or
        other cells holding every gene of the model (matched by name). It is not modified.
    model_key
        ``key_added`` of the training call (:func:`scdgm.tl.vae` and its variants).
    n_cells
        Number of synthetic cells; default as many as ``adata`` holds. With ``groupby``, split over the
        groups in their shares of ``adata`` (rounded so that the total is ``n_cells``).
    groupby
        ``.obs`` column of ``adata`` (cell types, clusters): generate per group, each group's cells drawn
        from the aggregate posterior of that group's cells only, so the variation within a group (gene
        programs that vary inside a type) is kept, not only the group's mean. Cells with a missing value
        are not used. Needs ``latent="posterior"``: the prior knows no groups.
    n_per_group
        ``{group: number of cells}`` instead of the shares of ``adata``; groups left out get none. Needs
        ``groupby``; do not pass ``n_cells`` with it.
    latent
        ``"posterior"``: the aggregate posterior of the cells (see above). ``"prior"``: ``z ~ N(0, I)``,
        library sizes and batches taken from training cells picked at random; VAEs only (an
        autoencoder's codes have no prior).
    batch
        For a batch-conditional model: decode every cell into this batch category (one the model was
        trained on). Default: each cell's inherited batch.
    library_size
        For count likelihoods: the library size (total counts) of every synthetic cell. Default: each
        cell's inherited (``"posterior"``) or resampled (``"prior"``) one.
    burn_in, thinning
        Boltzmann machines (:func:`scdgm.tl.dbm`) only, which are sampled by block Gibbs chains: one
        chain per distinct training cell picked, started at that cell (``"posterior"``) or at random
        (``"prior"``); it runs ``burn_in`` sweeps (default 500) and then yields a cell every ``thinning``
        sweeps (default 10) for as many times as its cell was picked. After a long burn-in the chains
        forget where they started: their cells are draws from the model, and groups are only as
        distinct as the chains' slow mixing keeps them.
    device
        Where the model runs; ``None`` follows ``dgm.settings.device``.
    seed
        Seeds the choice of cells and every draw; ``None`` follows ``dgm.settings.seed``. The same seed
        gives the same cells (on the same device); the caller's random state is left as it was.
    key_added
        ``.uns`` key of the provenance in the returned AnnData.

    Returns
    -------
    A new AnnData of ``n_cells`` synthetic cells x the model's features (in the model's order; the
    ``.var`` columns of ``adata`` for those genes are kept), with ``.obs_names`` ``synthetic_0``,
    ``synthetic_1``, ... and these fields:

    ``.X``
        Draws of the model's likelihood: integer-valued counts (``nb``, ``zinb``, ``poisson``) or 0/1
        (``bernoulli``) as a ``float32`` CSR matrix; ``float32`` values (``normal``) as a dense array.
    ``.obs["<groupby>"]``
        With ``groupby``: the group of each cell (categorical, the group names as strings).
    ``.obs["<batch_key>"]``
        For a batch-conditional model: the batch each cell was decoded into (categorical over the
        model's batches; named as the model's batch column). When ``groupby`` names that same column
        and ``batch`` is given, the column holds the group and the batch is in the params.
    ``.uns["<key_added>"]``
        Provenance: ``model_key``, ``model_class``, ``latent``, ``seed``, ``params`` (the arguments of
        this call; ``n_per_group`` as the arrays ``groups`` and ``n_per_group``) and ``model_params``
        (the training arguments of the model, copied from ``adata.uns[model_key]["params"]``). The model
        itself is not copied: the synthetic AnnData stays small, and the model stays with ``adata``.

    Examples
    --------
    >>> import scdgm as dgm
    >>> adata = dgm.datasets.simulate(500, 100, n_cell_types=3, seed=0)
    >>> dgm.tl.vae(adata, max_epochs=50)  # doctest: +SKIP
    >>> synthetic = dgm.tl.generate(adata, n_cells=1000, groupby="cell_type")  # doctest: +SKIP
    >>> synthetic.obs["cell_type"].value_counts()  # doctest: +SKIP
    """
    check_key("model_key", model_key)
    uns_key = SyntheticKeys(key_added).uns
    record = read_record(adata, model_key)
    generator = _generator_of(record, model_key)
    latent = check_choice("latent", latent, LATENTS)
    if n_cells is not None:
        n_cells = check_int("n_cells", n_cells)
    groups = _check_groups(adata, groupby, n_per_group, n_cells, latent)
    batch_code = _check_batch(record, batch, model_key)
    library_size = _check_library_size(record, library_size, model_key)
    generator.check(record, latent, model_key)
    _check_chains(generator, record, burn_in, thinning, model_key)
    device, seed = resolve_device_seed(device, seed)

    applied = apply_stored_model(adata, model_key, device=device)
    plan = _plan(
        applied, groups, n_cells if n_cells is not None else adata.n_obs, latent, batch_code, library_size, seed
    )
    plan.burn_in, plan.thinning = burn_in, thinning
    synthetic = draw_cells(adata, applied, plan, generator, [f"synthetic_{i}" for i in range(plan.n_cells)])
    obs = _synthetic_obs(plan, groups, groupby, applied)
    asked = groups is not None and groups.n_per_group is not None
    params = record_params(
        "generate",
        model_key=model_key,
        n_cells=n_cells,
        groupby=groupby,
        groups=np.asarray(groups.names, dtype=object) if asked else None,
        n_per_group=groups.n_per_group if asked else None,
        latent=latent,
        batch=batch,
        library_size=library_size,
        burn_in=burn_in,
        thinning=thinning,
        seed=seed,
    )
    provenance = synthetic_provenance(adata, record, model_key, params, latent=latent, seed=seed)
    write_results(synthetic, obs=obs, uns={uns_key: provenance})
    return synthetic


# ---------------------------------------------------------------------- validation


def _check_chains(generator: Generator, record: ModelRecord, burn_in: Any, thinning: Any, key: str) -> None:
    for name, value, minimum in (("burn_in", burn_in, 0), ("thinning", thinning, 1)):
        if value is None:
            continue
        if not generator.mcmc:
            msg = (
                f"{name}={value!r} applies to models sampled by Markov chains (Boltzmann machines, `dgm.tl.dbm`); "
                f"the model in .uns[{key!r}] is a {record.class_name!r}, drawn directly. Leave {name}=None."
            )
            raise ValueError(msg)
        check_int(name, value, minimum=minimum)


def _generator_of(record: ModelRecord, key: str) -> Generator:
    if record.class_name not in GENERATORS:
        msg = (
            f"The model in .uns[{key!r}] is a {record.class_name!r}, which does not generate cells; "
            f"generative models: {sorted(GENERATORS)}. Pass the model_key of one, e.g. of `dgm.tl.vae`."
        )
        raise ValueError(msg)
    return GENERATORS[record.class_name]


@dataclass
class _Groups:
    """The groups of ``adata``: codes per cell (``-1`` missing) and the cells to make of each group."""

    names: tuple[str, ...]
    codes: np.ndarray
    n_per_group: np.ndarray | None


def _check_groups(
    adata: AnnData, groupby: str | None, n_per_group: Mapping[Any, int] | None, n_cells: int | None, latent: str
) -> _Groups | None:
    from ..data import CategoryEncoding

    if groupby is None:
        if n_per_group is not None:
            msg = "n_per_group needs groupby= naming the .obs column whose groups it counts."
            raise ValueError(msg)
        return None
    if not isinstance(groupby, str) or groupby not in adata.obs:
        msg = f"groupby={groupby!r} is not a column of adata.obs (columns: {list(adata.obs.columns)})."
        raise KeyError(msg)
    if latent == "prior":
        msg = (
            'groupby needs latent="posterior": the prior N(0, I) knows no groups, so cells drawn from it '
            "cannot be assigned to one."
        )
        raise ValueError(msg)
    encoding = CategoryEncoding.fit(adata.obs[groupby], groupby)
    if encoding.n_categories == 0:
        msg = f"adata.obs[{groupby!r}] holds no group: every value is missing."
        raise ValueError(msg)
    codes = encoding.encode(adata.obs[groupby], allow_missing=True)
    counts = None
    if n_per_group is not None:
        if n_cells is not None:
            msg = "Pass n_cells or n_per_group, not both: n_per_group sets the number of cells of each group."
            raise ValueError(msg)
        if not isinstance(n_per_group, Mapping) or not n_per_group:
            msg = f"n_per_group must be a non-empty dict {{group: number of cells}}, not {n_per_group!r}."
            raise ValueError(msg)
        position = {name: i for i, name in enumerate(encoding.categories)}
        counts = np.zeros(encoding.n_categories, dtype=np.int64)
        for group, n in n_per_group.items():
            if str(group) not in position:
                msg = (
                    f"n_per_group names the group {group!r}, which adata.obs[{groupby!r}] does not hold "
                    f"(groups: {list(encoding.categories)})."
                )
                raise ValueError(msg)
            counts[position[str(group)]] = check_int(f"n_per_group[{group!r}]", n, minimum=0)
        if counts.sum() < 1:
            msg = "n_per_group asks for no cells: give at least one group a positive number."
            raise ValueError(msg)
    return _Groups(names=encoding.categories, codes=codes, n_per_group=counts)


def _check_library_size(record: ModelRecord, library_size: Any, key: str) -> float | None:
    """``library_size`` checked positive, and refused for a model that reads no counts; ``None`` stays ``None``."""
    if library_size is None:
        return None
    library_size = check_positive("library_size", library_size)
    if not record.counts:
        msg = (
            f"library_size={library_size!r} applies to count likelihoods; the model in .uns[{key!r}] "
            "does not read counts. Leave library_size=None."
        )
        raise ValueError(msg)
    return library_size


def _check_batch(record: ModelRecord, batch: str | None, key: str) -> int | None:
    if batch is None:
        return None
    encodings = record.category_encodings()
    if "batch" not in encodings:
        msg = f"batch={batch!r} was given, but the model in .uns[{key!r}] has no batch covariate."
        raise ValueError(msg)
    categories = encodings["batch"].categories
    if str(batch) not in categories:
        msg = f"batch={batch!r} is not a batch the model in .uns[{key!r}] knows ({list(categories)})."
        raise ValueError(msg)
    return categories.index(str(batch))


# ---------------------------------------------------------------------- plan and output


def _shares(n_cells: int, sizes: np.ndarray) -> np.ndarray:
    """``n_cells`` split in proportion to ``sizes``, rounded by largest remainder so the total is exact."""
    exact = n_cells * sizes / sizes.sum()
    counts = np.floor(exact).astype(np.int64)
    order = np.argsort(-(exact - counts), kind="stable")
    counts[order[: n_cells - counts.sum()]] += 1
    return counts


def _plan(
    applied: AppliedModel,
    groups: _Groups | None,
    n_cells: int,
    latent: str,
    batch_code: int | None,
    library_size: float | None,
    seed: int,
) -> GenerationPlan:
    data = applied.data
    rng = np.random.default_rng(seed)
    if groups is None:
        pools = [np.arange(data.n_obs)]
        per_pool = np.array([n_cells])
    else:
        pools = [np.flatnonzero(groups.codes == g) for g in range(len(groups.names))]
        sizes = np.array([len(pool) for pool in pools], dtype=np.float64)
        per_pool = groups.n_per_group if groups.n_per_group is not None else _shares(n_cells, sizes)
    donors = np.concatenate([rng.choice(pool, size=n, replace=True) for pool, n in zip(pools, per_pool, strict=True)])
    pool_of_cell = np.repeat(np.arange(len(pools)), per_pool)
    library = None
    if applied.record.counts:
        library = np.full(len(donors), library_size, np.float32) if library_size else data.library[donors]
    codes = data.covariates.get("batch")
    batch = None
    if codes is not None:
        batch = np.full(len(donors), batch_code, np.int64) if batch_code is not None else codes[donors]
    return GenerationPlan(donors, pools, pool_of_cell, latent, library, batch, seed)


def draw_cells(
    adata: AnnData, applied: AppliedModel, plan: GenerationPlan, generator: Generator, names: Any
) -> AnnData:
    """The cells ``generator`` draws for ``plan`` under the plan's seed, as a new AnnData named ``names``.

    Its ``.var`` is the model's features with the columns ``adata`` has for them; nothing else is written yet.
    """
    from ..train import seeded

    with seeded(plan.seed, applied.device):
        X = generator.sample(applied, plan)
    return AnnData(X=X, obs=pd.DataFrame(index=pd.Index(names)), var=_synthetic_var(adata, applied))


def synthetic_provenance(
    adata: AnnData, record: ModelRecord, model_key: str, params: dict[str, Any], **fields: Any
) -> dict[str, Any]:
    """The ``.uns`` provenance of cells drawn from ``record``, the model in ``adata.uns[model_key]``.

    ``model_key`` and ``model_class`` first, then ``fields`` in order, then the call's ``params`` and
    ``model_params`` (a copy of the model's training arguments).
    """
    return {
        "model_key": model_key,
        "model_class": record.class_name,
        **fields,
        "params": params,
        "model_params": copy.deepcopy(dict(adata.uns[model_key].get("params", {}))),
    }


def _synthetic_obs(
    plan: GenerationPlan, groups: _Groups | None, groupby: str | None, applied: AppliedModel
) -> dict[str, pd.Categorical]:
    obs: dict[str, pd.Categorical] = {}
    encodings = applied.record.category_encodings()
    if plan.batch is not None and "batch" in encodings:
        encoding = encodings["batch"]
        obs[encoding.key] = pd.Categorical.from_codes(plan.batch, categories=list(encoding.categories))
    if groups is not None and groupby is not None:
        # after the batch: when groupby names the batch column, the group is kept (the batch is in the params)
        obs[groupby] = pd.Categorical.from_codes(plan.pool_of_cell, categories=list(groups.names))
    return obs


def _synthetic_var(adata: AnnData, applied: AppliedModel) -> pd.DataFrame:
    names = pd.Index(applied.record.var_names.astype(str))
    if applied.record.input.get("use_rep") is not None:
        return pd.DataFrame(index=names)
    order = applied.feature_order
    var = adata.var.copy() if order is None else adata.var.iloc[order].copy()
    var.index = names
    return var


# ---------------------------------------------------------------------- the VAE family


def _check_vae(record: ModelRecord, latent: str, key: str) -> None:
    kind = record.init_kwargs.get("kind", "vae")
    if latent == "prior" and kind != "vae":
        msg = (
            f'latent="prior" needs a VAE; the model in .uns[{key!r}] is a kind={kind!r} autoencoder, whose codes '
            'follow no prior. Use latent="posterior" (a kernel density of the codes).'
        )
        raise ValueError(msg)


def scott_bandwidth(codes: np.ndarray) -> np.ndarray:
    """Gaussian kernel bandwidth per dimension by Scott's rule: ``std * n ** (-1 / (dimensions + 4))``.

    Parameters
    ----------
    codes
        Cells x dimensions.

    Returns
    -------
    One bandwidth per dimension; zeros for fewer than two cells.
    """
    n, dimensions = codes.shape
    if n < 2:
        return np.zeros(dimensions, dtype=codes.dtype)
    return codes.std(0, ddof=1) * n ** (-1.0 / (dimensions + 4))


def _posterior(module: Any, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    import torch

    return torch.cat(module.encode(batch["x"], batch.get("batch")), dim=1)


def vae_latents(
    applied: AppliedModel, plan: GenerationPlan, generator: torch.Generator
) -> Iterator[tuple[slice, torch.Tensor]]:
    """Latent codes of the synthetic cells of a VAEModule, in chunks: ``(cells, z)`` pairs in plan order.

    ``"posterior"``: a VAE draws from each donor's ``q(z | x)``; an autoencoder draws from a Gaussian
    kernel of Scott's bandwidth (over the donor's pool) around the donor's code. ``"prior"``: ``N(0, I)``.
    Only the posterior parameters of the training cells are held, never every synthetic cell's ``z``.
    Given ``plan.codes`` are yielded as they are; ``plan.shift`` is added to every drawn code.
    """
    import torch

    module = applied.module
    device = applied.device
    n_latent = int(module.n_latent)
    chunk = max(1, _CHUNK_ENTRIES // module.n_input)
    if plan.codes is not None:
        for start in range(0, len(plan.codes), chunk):
            cells = slice(start, min(start + chunk, len(plan.codes)))
            yield cells, torch.as_tensor(plan.codes[cells], dtype=torch.float32, device=device)
        return
    shift = 0.0 if plan.shift is None else torch.as_tensor(plan.shift, dtype=torch.float32, device=device)
    variational = module.kind == "vae"
    center = scale = where = None
    if plan.latent == "posterior":
        rows = np.unique(plan.donors) if variational else np.unique(np.concatenate(plan.pools))
        encoded = applied.predict(_posterior, rows=rows).astype(np.float32)
        center = encoded[:, :n_latent]
        where = np.searchsorted(rows, plan.donors)
        if variational:
            scale = np.sqrt(encoded[:, n_latent:])
        else:
            scale = np.stack([scott_bandwidth(center[np.searchsorted(rows, pool)]) for pool in plan.pools])
    for start in range(0, plan.n_cells, chunk):
        cells = slice(start, min(start + chunk, plan.n_cells))
        noise = torch.randn((cells.stop - cells.start, n_latent), generator=generator, device=device)
        if center is None:
            yield cells, noise + shift
            continue
        donor_rows = where[cells]
        spread = scale[donor_rows] if variational else scale[plan.pool_of_cell[cells]]
        z = torch.as_tensor(center[donor_rows], device=device) + torch.as_tensor(spread, device=device) * noise
        yield cells, z + shift


@register_generator("VAEModule", check=_check_vae)
def _sample_vae(applied: AppliedModel, plan: GenerationPlan) -> np.ndarray | sp.csr_matrix:
    """Draws of ``p(x | z)`` (its means with ``plan.mean``) from a VAEModule at the codes of :func:`vae_latents`."""
    import torch

    module = applied.module
    device = applied.device
    generator = torch.Generator(device=device)
    generator.manual_seed(plan.seed)
    parts = []
    for cells, z in vae_latents(applied, plan, generator):
        if plan.library is None:
            library = torch.ones((z.shape[0], 1), device=device)
        else:
            library = torch.as_tensor(plan.library[cells], dtype=torch.float32, device=device).reshape(-1, 1)
        batch_index = None if plan.batch is None else torch.as_tensor(plan.batch[cells], device=device)
        if plan.mean:
            with torch.no_grad():
                x = module.decoded_mean(z, library, batch_index).cpu().numpy().astype(np.float32)
        else:
            x = module.sample_counts(z, library, batch_index, generator=generator).cpu().numpy().astype(np.float32)
        parts.append(x if module.likelihood == "normal" or plan.mean else sp.csr_matrix(x))
    if module.likelihood == "normal" or plan.mean:
        return np.concatenate(parts)
    return sp.vstack(parts, format="csr", dtype=np.float32)
