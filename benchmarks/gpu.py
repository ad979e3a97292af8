"""One-command GPU benchmark (issue 17): scdgm and scvi-tools training speed on 1,000,000 x 2,000 counts.

Made for a lent GPU machine (one H200, 16 cores), where it finishes in under 5 minutes; it runs unchanged
on the CPU at small sizes as a smoke test:

    python benchmarks/gpu.py [--cells 1000000] [--genes 2000] [--out DIR_OR_FILE] [--compile] [--bf16]
    python benchmarks/gpu.py --cells 5000 --genes 200 --device cpu          # smoke test, under a minute

On a bare device machine use ``benchmarks/gpu.sh``, which installs the carried wheels first.

Parts, in this order, each timed on its own (wall time, peak GPU memory), each caught when it fails:

- ``env``: GPU, driver, torch / CUDA / package versions.
- ``data``: the counts, made on the device (``--generator torch``, default): the model of
  :func:`scdgm.datasets.simulate` (8 cell types, 10 programs; its gene-level truth is read from a small
  ``simulate`` call, then the cells are drawn on the device in blocks and moved to the host as CSR), or
  ``simulate`` itself (``--generator simulate``, ``n_jobs`` = all cores; too slow for the budget at 1M
  cells: about 300 core-seconds, measured at 40,000 cells on the development machine).
- ``scdgm_b128`` and ``scdgm_large``: ``tl.vae`` (NB, 128 hidden, 10 latent, 1 layer; 10 % held out,
  no early stopping) at batch 128 (lr 1e-3) and at ``--large-batch`` (default 4096) with the learning
  rate scaled by the square root of the batch ratio (Adam's scaling rule: 1e-3 * sqrt(4096 / 128) =
  5.7e-3), the same epochs; training cells/s in the epoch loop (the engine's own figure and the last
  epoch alone, which excludes warm-up), the whole call's wall time, and the held-out negative ELBO.
- ``scvi_b128`` (and ``scvi_large`` at the end): scvi-tools' ``SCVI`` at the same architecture on the
  same training cells (scdgm's split, passed as ``external_indexing``; no copy of the data), one epoch,
  cut short by Lightning's ``max_time`` when the budget is short;
  cells/s in the epoch loop (a callback counts the cells) and of the whole call, and the held-out
  negative ELBO on the same held-out cells (comparable only after a whole epoch). Skipped, with the
  reason recorded, when scvi-tools cannot be imported.
- ``ig``: ``tl.integrated_gradients`` of latent factor 0 of the batch-128 VAE on ``--ig-cells`` cells
  (50 Gauss-Legendre steps), twice: cold and warm.
- ``bayes``: ``tl.bayes_classify`` (SVI, defaults but ``max_epochs``) on ``--bayes-cells`` cells of a
  30-dimensional ``use_rep`` (a Gaussian mixture of 8 classes: the throughput does not depend on what the
  numbers mean), then ``tl.bayes_predict`` on as many new cells.
- ``scdgm_b128_compile`` (``--compile``): the batch-128 run with ``torch.compile`` on the module; a
  failing compile is recorded, not raised. ``scdgm_large_bf16`` (``--bf16``): the large-batch run in
  ``bf16-mixed``.

Time guard: a part starts only when the time used plus its expected duration fits ``--limit``
(default 270 s); parts that do not fit are recorded as skipped with the reason. The JSON (default
``benchmarks/results/gpu.json``) is rewritten after every part, so a run stopped from outside still
leaves what it measured; a Markdown table is printed at the end.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import math
import os
import platform
import subprocess
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# JAX (imported by some scvi-tools modules) would otherwise take 75 % of the GPU memory at its first use.
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")

import numpy as np
from _common import RESULTS, peak_rss_gb

N_CELL_TYPES, N_PROGRAMS = 8, 10
N_HIDDEN, N_LATENT, N_LAYERS, LIKELIHOOD = 128, 10, 1, "nb"
BASE_BATCH, BASE_LR = 128, 1e-3
VALIDATION_FRACTION, SEED = 0.1, 0
REP_DIMS = 30


def scaled_lr(batch_size: int) -> float:
    """Adam's square-root scaling rule from the base batch and learning rate."""
    return BASE_LR * math.sqrt(batch_size / BASE_BATCH)


def synchronize(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


# --------------------------------------------------------------------------------------------------
# the counts


def simulated_counts(n_cells: int, n_genes: int, *, generator: str, device: str) -> Any:
    """The benchmark's AnnData: integer counts in ``.X`` (CSR, float32) and ``.obs["cell_type"]``."""
    import scdgm as dgm

    if generator == "simulate":
        return dgm.datasets.simulate(
            n_cells,
            n_genes,
            n_cell_types=N_CELL_TYPES,
            n_programs=N_PROGRAMS,
            seed=SEED,
            n_jobs=os.cpu_count() or 1,
            copy_counts=False,
        )
    return _counts_on_device(n_cells, n_genes, device=device)


def _counts_on_device(n_cells: int, n_genes: int, *, device: str) -> Any:
    """Cells drawn on ``device`` from the model of ``datasets.simulate`` (one batch, one condition, log1p programs).

    The gene-level truth (base expression, dispersions, programs, markers, type proportions) comes
    from ``simulate`` itself; only the per-cell draws run here, in blocks of about 2**27 entries.
    """
    import pandas as pd
    import scipy.sparse as sp
    import torch
    from anndata import AnnData

    import scdgm as dgm

    reference = dgm.datasets.simulate(
        min(n_cells, 2000), n_genes, n_cell_types=N_CELL_TYPES, n_programs=N_PROGRAMS, seed=SEED
    )
    truth = reference.uns["simulation"]

    def tensor(values: Any) -> torch.Tensor:
        return torch.as_tensor(np.asarray(values, dtype=np.float32), device=device)

    base = tensor(reference.var["base_log_expression"])
    theta = tensor(reference.var["dispersion"])
    programs = tensor(reference.varm["programs"]).T.contiguous()  # programs x genes
    profiles = tensor(truth["program_profiles"])  # types x programs
    marker_lift = tensor(reference.varm["markers"]).T * math.log(truth["marker_fold_change"])  # types x genes
    proportions = tensor(truth["cell_type_proportions"])
    sd, shape = float(truth["library_size_sd"]), 1.0 / float(truth["activity_cv"]) ** 2
    log_library = math.log(float(truth["mean_library_size"])) - sd**2 / 2
    rng = torch.Generator(device=device).manual_seed(SEED)
    block_cells = max(1, (2**27 if device.startswith("cuda") else 2**22) // n_genes)

    row_nnz, indices, data, types = [], [], [], []
    for start in range(0, n_cells, block_cells):
        n = min(block_cells, n_cells - start)
        cell_type = torch.multinomial(proportions, n, replacement=True, generator=rng)
        library = torch.empty(n, device=device).log_normal_(log_library, sd, generator=rng)
        noise = torch._standard_gamma(torch.full((n, programs.shape[0]), shape, device=device), generator=rng)
        activity = profiles[cell_type] * noise / shape
        log_rate = torch.log1p(activity @ programs).add_(base).add_(marker_lift[cell_type])
        log_rate -= log_rate.amax(dim=1, keepdim=True)
        mean = log_rate.exp_()
        mean *= (library / mean.sum(dim=1)).unsqueeze(1)
        rate = torch._standard_gamma(theta.expand(n, -1).contiguous(), generator=rng).mul_(mean).div_(theta)
        counts = torch.poisson(rate, generator=rng)
        del rate, log_rate
        empty = torch.nonzero(counts.sum(dim=1) == 0).squeeze(1)
        if empty.numel():  # simulate redraws these first; they do not occur at realistic library sizes
            counts[empty, mean[empty].argmax(dim=1)] = 1.0
        flat = counts.view(-1).nonzero().squeeze(1)
        row_nnz.append(torch.bincount(flat // n_genes, minlength=n).cpu().numpy())
        indices.append((flat % n_genes).to(torch.int32).cpu().numpy())
        data.append(counts.view(-1).index_select(0, flat).cpu().numpy())
        types.append(cell_type.cpu().numpy())
        del counts, mean, flat
    indptr = np.zeros(n_cells + 1, dtype=np.int64)
    np.cumsum(np.concatenate(row_nnz), out=indptr[1:])
    if indptr[-1] <= np.iinfo(np.int32).max:
        indptr = indptr.astype(np.int32)
    X = sp.csr_matrix((np.concatenate(data), np.concatenate(indices), indptr), shape=(n_cells, n_genes))
    categories = reference.obs["cell_type"].cat.categories
    obs = pd.DataFrame(
        {"cell_type": pd.Categorical.from_codes(np.concatenate(types), categories=categories)},
        index=pd.Index([f"cell_{i}" for i in range(n_cells)]),
    )
    return AnnData(X=X, obs=obs, var=pd.DataFrame(index=reference.var_names.copy()))


# --------------------------------------------------------------------------------------------------
# instrumentation


@contextlib.contextmanager
def timed_epochs(device: str) -> Iterator[list[dict[str, Any]]]:
    """Time every epoch pass of scdgm's engine (training and evaluation), synchronising the device around it.

    The engine reports one training speed over all epochs; the last epoch alone excludes the first
    steps' warm-up (cuBLAS handles, allocator growth, compilation).
    """
    from scdgm.train import _fit

    original = _fit._run_epoch
    records: list[dict[str, Any]] = []

    def run_epoch(module: Any, batches: Any, step_fn: Any) -> Any:
        synchronize(device)
        start = time.perf_counter()
        sums, n_cells = original(module, batches, step_fn)
        synchronize(device)
        store = type(getattr(batches, "store", None)).__name__
        records.append(
            {
                "training": bool(module.training),
                "seconds": time.perf_counter() - start,
                "cells": n_cells,
                "store": store,
            }
        )
        return sums, n_cells

    _fit._run_epoch = run_epoch
    try:
        yield records
    finally:
        _fit._run_epoch = original


@contextlib.contextmanager
def compiled_vae(options: dict[str, Any]) -> Iterator[None]:
    """``tl.vae`` builds its module with ``torch.compile`` applied (``nn.Module.compile``, in place)."""
    import scdgm.modules as modules

    original = modules.VAEModule

    class CompiledVAEModule(original):  # type: ignore[misc, valid-type]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.compile(**options)

    # the stored model record names the class; it must stay the one the package knows
    CompiledVAEModule.__name__ = CompiledVAEModule.__qualname__ = original.__name__
    modules.VAEModule = CompiledVAEModule
    try:
        yield
    finally:
        modules.VAEModule = original


# --------------------------------------------------------------------------------------------------
# the parts


@dataclass
class Context:
    args: argparse.Namespace
    device: str
    adata: Any = None
    train_idx: np.ndarray | None = None
    validation_idx: np.ndarray | None = None
    vae_keys: list[str] = field(default_factory=list)


def part_env(ctx: Context) -> dict[str, Any]:
    import lightning.fabric  # noqa: F401 - imported here, so that the first training call does not pay for it
    import torch

    import scdgm

    if ctx.device.startswith("cuda"):
        # create the CUDA context and the cuBLAS handle outside the timed parts
        x = torch.ones(256, 256, device=ctx.device)
        (x @ x).sum().item()
    info: dict[str, Any] = {
        "device": ctx.device,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda_runtime": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "scdgm": scdgm.__version__,
    }
    for name in ("anndata", "scvi-tools", "pyro-ppl", "lightning", "numpy", "scipy", "pandas"):
        with contextlib.suppress(Exception):
            from importlib.metadata import version

            info[name] = version(name)
    if ctx.device.startswith("cuda"):
        props = torch.cuda.get_device_properties(torch.device(ctx.device))
        info.update(
            gpu=props.name,
            gpu_memory_gb=props.total_memory / 2**30,
            multiprocessors=props.multi_processor_count,
            capability=f"{props.major}.{props.minor}",
            tf32_matmul=torch.backends.cuda.matmul.allow_tf32,
        )
        with contextlib.suppress(Exception):
            query = ["nvidia-smi", "--query-gpu=driver_version,clocks.sm,clocks.max.sm", "--format=csv,noheader"]
            info["nvidia_smi"] = subprocess.run(query, capture_output=True, text=True, timeout=10).stdout.strip()
    return info


def part_data(ctx: Context) -> dict[str, Any]:
    from scdgm.data import split_indices

    args = ctx.args
    start = time.perf_counter()
    adata = simulated_counts(args.cells, args.genes, generator=args.generator, device=ctx.device)
    seconds = time.perf_counter() - start
    ctx.adata = adata
    # the split tl.vae makes with the same seed and fraction: scvi-tools trains on the same cells
    ctx.train_idx, ctx.validation_idx = split_indices(adata.n_obs, validation_fraction=VALIDATION_FRACTION, seed=SEED)
    nnz = int(adata.X.nnz)
    return {
        "generator": args.generator,
        "n_cells": adata.n_obs,
        "n_genes": adata.n_vars,
        "seconds": seconds,
        "stored_counts": nnz,
        "stored_per_cell": nnz / adata.n_obs,
        "zero_fraction": 1 - nnz / (adata.n_obs * adata.n_vars),
        "mean_total_counts": float(adata.X.sum() / adata.n_obs),
        "csr_gb": (adata.X.data.nbytes + adata.X.indices.nbytes + adata.X.indptr.nbytes) / 2**30,
        "n_train": len(ctx.train_idx),
        "n_validation": len(ctx.validation_idx),
    }


def part_scdgm(
    ctx: Context, *, batch_size: int, key: str, compile_options: dict | None = None, precision: str = "32-true"
) -> dict[str, Any]:
    import scdgm as dgm

    lr = scaled_lr(batch_size)
    epochs = ctx.args.epochs
    compiling = compiled_vae(compile_options) if compile_options is not None else contextlib.nullcontext()
    with timed_epochs(ctx.device) as passes, compiling:
        start = time.perf_counter()
        dgm.tl.vae(
            ctx.adata,
            n_hidden=N_HIDDEN,
            n_latent=N_LATENT,
            n_layers=N_LAYERS,
            likelihood=LIKELIHOOD,
            batch_size=batch_size,
            lr=lr,
            max_epochs=epochs,
            early_stopping=False,
            validation_fraction=VALIDATION_FRACTION,
            precision=precision,
            device=ctx.device,
            seed=SEED,
            key_added=key,
        )
        wall = time.perf_counter() - start
    ctx.vae_keys.append(key)
    metrics = ctx.adata.uns[key]["metrics"]
    history = ctx.adata.uns[key]["history"]
    train_passes = [p for p in passes if p["training"]]
    n_train = int(metrics["n_train"])
    return {
        "batch_size": batch_size,
        "lr": lr,
        "lr_rule": f"{BASE_LR:g} * sqrt(batch_size / {BASE_BATCH})",
        "precision": precision,
        "compile": compile_options,
        "epochs": int(metrics["n_epochs"]),
        "n_train": n_train,
        "call_seconds": wall,
        "call_cells_per_second": int(metrics["n_epochs"]) * n_train / wall,
        "loop_cells_per_second": float(metrics["train_cells_per_second"]),
        "epoch_cells_per_second": [p["cells"] / p["seconds"] for p in train_passes],
        "epoch_seconds": [p["seconds"] for p in train_passes],
        "evaluation_pass_seconds": sum(p["seconds"] for p in passes if not p["training"]),
        "outside_epoch_passes_seconds": wall - sum(p["seconds"] for p in passes),
        "heldout_negative_elbo": float(metrics["validation_elbo"]),
        "validation_elbo_per_epoch": [float(v) for v in history["validation_elbo"]],
    }


def part_scvi(ctx: Context, *, batch_size: int, max_seconds: float) -> dict[str, Any]:
    import torch

    try:
        import scvi
        from lightning.pytorch.callbacks import Callback
    except Exception as error:  # any import failure means: not measured, and the reason recorded
        raise Skipped(f"scvi-tools is not importable here: {type(error).__name__}: {error}") from error

    device = ctx.device
    threads = torch.get_num_threads()
    scvi.settings.seed = SEED
    scvi.settings.dl_num_workers = 0
    adata, n_train = ctx.adata, len(ctx.train_idx)
    # scdgm's split, without copying the cells: train on these, hold out (as scvi-tools' "test" set) those
    split = [ctx.train_idx, np.array([], dtype=np.int64), ctx.validation_idx]

    class Throughput(Callback):
        """Cells and seconds of the training batches (the epoch loop only)."""

        def __init__(self) -> None:
            self.cells, self.batches, self.start, self.stop = 0, 0, None, None

        def on_train_epoch_start(self, trainer: Any, module: Any) -> None:
            synchronize(device)
            self.start = self.start or time.perf_counter()

        def on_train_batch_end(self, trainer: Any, module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
            self.cells += int(batch[scvi.REGISTRY_KEYS.X_KEY].shape[0])
            self.batches += 1
            self.stop = time.perf_counter()

        def on_train_epoch_end(self, trainer: Any, module: Any) -> None:
            synchronize(device)
            self.stop = time.perf_counter()

    start = time.perf_counter()
    scvi.model.SCVI.setup_anndata(adata)
    model = scvi.model.SCVI(adata, n_hidden=N_HIDDEN, n_latent=N_LATENT, n_layers=N_LAYERS, gene_likelihood=LIKELIHOOD)
    setup_seconds = time.perf_counter() - start
    throughput = Throughput()
    lr = scaled_lr(batch_size)
    start = time.perf_counter()
    try:
        model.train(
            max_epochs=1,
            batch_size=batch_size,
            accelerator="gpu" if device.startswith("cuda") else "cpu",
            devices=1,
            datasplitter_kwargs={"external_indexing": split},
            early_stopping=False,
            plan_kwargs={"lr": lr},
            max_time=datetime.timedelta(seconds=max(1.0, max_seconds)),
            callbacks=[throughput],
            enable_progress_bar=False,
            logger=False,
            enable_checkpointing=False,
            enable_model_summary=False,
        )
    finally:
        torch.set_num_threads(threads)  # Lightning changes it
    train_seconds = time.perf_counter() - start
    loop_seconds = (throughput.stop or time.perf_counter()) - (throughput.start or start)
    epoch_fraction = throughput.cells / n_train
    result: dict[str, Any] = {
        "batch_size": batch_size,
        "lr": lr,
        "lr_rule": f"{BASE_LR:g} * sqrt(batch_size / {BASE_BATCH})",
        "max_time_seconds": max_seconds,
        "n_train": n_train,
        "cells_trained": throughput.cells,
        "epoch_fraction": epoch_fraction,
        "setup_seconds": setup_seconds,
        "call_seconds": train_seconds,
        "call_cells_per_second": throughput.cells / train_seconds,
        "loop_cells_per_second": throughput.cells / loop_seconds if loop_seconds > 0 else None,
        "scvi_tools": scvi.__version__,
    }
    if epoch_fraction >= 0.999:
        start = time.perf_counter()
        result["heldout_negative_elbo"] = -float(model.get_elbo(indices=ctx.validation_idx, batch_size=4096))
        result["elbo_seconds"] = time.perf_counter() - start
    else:
        result["heldout_negative_elbo"] = None
        result["note"] = "stopped by max_time before the end of the epoch: no held-out ELBO"
    return result


def part_ig(ctx: Context) -> dict[str, Any]:
    import scdgm as dgm

    if not ctx.vae_keys:
        raise Skipped("no trained VAE (the scdgm parts were skipped or failed)")
    key = ctx.vae_keys[0]
    n = min(ctx.args.ig_cells, ctx.adata.n_obs)
    cells = ctx.adata[:n].copy()
    runs = []
    for run in ("cold", "warm"):
        synchronize(ctx.device)
        start = time.perf_counter()
        dgm.tl.integrated_gradients(
            cells,
            model_key=key,
            target=0,
            n_steps=50,
            memory_budget_bytes=int(ctx.args.ig_memory_gb * 2**30),
            device=ctx.device,
            seed=SEED,
            key_added=f"ig_{run}",
        )
        synchronize(ctx.device)
        seconds = time.perf_counter() - start
        runs.append({"run": run, "seconds": seconds, "cells_per_second": n / seconds})
    return {
        "model_key": key,
        "target": "latent factor 0",
        "n_cells": n,
        "n_genes": int(cells.n_vars),
        "n_steps": 50,
        "memory_budget_gb": ctx.args.ig_memory_gb,
        "runs": runs,
        "cells_per_second": runs[-1]["cells_per_second"],
        "cells_x_genes_per_second": runs[-1]["cells_per_second"] * cells.n_vars,
    }


def _mixture(n: int, seed: int) -> Any:
    """``n`` cells of 8 classes in a 30-dimensional representation (class means 3 apart, unit noise)."""
    import pandas as pd
    from anndata import AnnData

    rng = np.random.default_rng(seed)
    centres = np.random.default_rng(0).normal(0.0, 3.0, size=(N_CELL_TYPES, REP_DIMS))
    codes = rng.integers(N_CELL_TYPES, size=n)
    rep = (centres[codes] + rng.normal(size=(n, REP_DIMS))).astype(np.float32)
    labels = pd.Categorical.from_codes(codes, categories=[f"type_{t}" for t in range(N_CELL_TYPES)])
    obs = pd.DataFrame({"cell_type": labels}, index=pd.Index([f"cell_{seed}_{i}" for i in range(n)]))
    return AnnData(obs=obs, obsm={"X_rep": rep})


def part_bayes(ctx: Context) -> dict[str, Any]:
    import scdgm as dgm

    n = ctx.args.bayes_cells
    reference, query = _mixture(n, 1), _mixture(n, 2)
    with timed_epochs(ctx.device) as passes:
        start = time.perf_counter()
        dgm.tl.bayes_classify(
            reference,
            "cell_type",
            use_rep="X_rep",
            max_epochs=ctx.args.bayes_epochs,
            batch_size=ctx.args.bayes_batch_size,
            early_stopping=False,
            device=ctx.device,
            seed=SEED,
        )
        classify_seconds = time.perf_counter() - start
    start = time.perf_counter()
    dgm.tl.bayes_predict(query, reference, device=ctx.device, seed=SEED)
    predict_seconds = time.perf_counter() - start
    metrics = reference.uns["bayes"]["metrics"]
    train_passes = [p for p in passes if p["training"]]
    accuracy = float(np.mean(query.obs["bayes_pred"].astype(str).to_numpy() == query.obs["cell_type"].astype(str)))
    return {
        "n_cells": n,
        "features": REP_DIMS,
        "epochs": ctx.args.bayes_epochs,
        "batch_size": ctx.args.bayes_batch_size,
        "num_samples": int(reference.uns["bayes"]["params"]["num_samples"]),
        "classify_seconds": classify_seconds,
        "train_loop_cells_per_second": float(metrics["train_cells_per_second"]),
        "train_epoch_cells_per_second": [p["cells"] / p["seconds"] for p in train_passes],
        "classify_cells_per_second": n / classify_seconds,
        "predict_seconds": predict_seconds,
        "predict_cells_per_second": n / predict_seconds,
        "query_accuracy": accuracy,
    }


# --------------------------------------------------------------------------------------------------
# the runner


class Skipped(RuntimeError):
    """A part that cannot run here; the message says why."""


@dataclass
class Part:
    name: str
    run: Callable[[], dict[str, Any]]
    needs: float
    """Seconds the part is expected to take at most at this size (the time guard's estimate)."""
    needs_data: bool = True


class Runner:
    def __init__(self, ctx: Context, path: Path, limit: float) -> None:
        self.ctx, self.path, self.limit = ctx, path, limit
        self.start = time.perf_counter()
        self.payload: dict[str, Any] = {
            "args": vars(ctx.args),
            "limit_seconds": limit,
            "parts": {},
            "skipped": {},
            "failed": {},
        }

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def run(self, part: Part) -> dict[str, Any] | None:
        import torch

        cuda = self.ctx.device.startswith("cuda")
        used = self.elapsed()
        reason = None
        if part.needs_data and self.ctx.adata is None:
            reason = "no data (the data part failed or was skipped)"
        elif used + part.needs > self.limit:
            reason = f"time guard: {used:.0f} s used, about {part.needs:.0f} s needed, limit {self.limit:.0f} s"
        if reason:
            return self._skip(part.name, reason)
        print(f"[{used:6.1f} s] {part.name} ...", flush=True)
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        start = time.perf_counter()
        try:
            result = part.run()
        except Skipped as skip:
            return self._skip(part.name, str(skip))
        except Exception as error:  # noqa: BLE001 - one failing part must not lose the others
            self.payload["failed"][part.name] = {
                "error": f"{type(error).__name__}: {error}"[:2000],
                "traceback": traceback.format_exc()[-4000:],
                "seconds": time.perf_counter() - start,
            }
            print(f"    FAILED: {type(error).__name__}: {str(error)[:300]}", flush=True)
            self.save()
            return None
        result["part_seconds"] = time.perf_counter() - start
        if cuda:
            result["peak_gpu_memory_gb"] = torch.cuda.max_memory_allocated() / 2**30
        self.payload["parts"][part.name] = result
        print(f"    done in {result['part_seconds']:.1f} s", flush=True)
        self.save()
        return result

    def _skip(self, name: str, reason: str) -> None:
        self.payload["skipped"][name] = reason
        print(f"[{self.elapsed():6.1f} s] {name} skipped: {reason}", flush=True)
        self.save()

    def save(self) -> None:
        self.payload["total_seconds"] = self.elapsed()
        self.payload["peak_rss_gb"] = peak_rss_gb()
        peaks = [p.get("peak_gpu_memory_gb", 0.0) for p in self.payload["parts"].values()]
        self.payload["peak_gpu_memory_gb"] = max(peaks, default=None) if self.ctx.device.startswith("cuda") else None
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(self.payload, indent=2, default=_jsonable))
        tmp.replace(self.path)


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)


def _fmt(value: Any, spec: str = ",.0f") -> str:
    return "" if value is None else format(value, spec)


def table(payload: dict[str, Any]) -> str:
    env = payload["parts"].get("env", {})
    lines = [
        f"{env.get('gpu', env.get('device', '?'))}, torch {env.get('torch')}, CUDA {env.get('cuda_runtime')}; "
        f"total {payload['total_seconds']:.0f} s; peak GPU memory {_fmt(payload.get('peak_gpu_memory_gb'), '.1f') or 'n/a'} GB; "
        f"peak RSS {payload['peak_rss_gb']:.1f} GB",
        "",
        "| part | batch | epochs | loop cells/s (last epoch) | whole call cells/s | held-out -ELBO | seconds | peak GPU GB |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, r in payload["parts"].items():
        if name in ("env", "data"):
            continue
        if name == "ig":
            loop, call = f"{r['cells_per_second']:,.0f} cells/s (factor 0, {r['n_steps']} steps)", ""
        elif name == "bayes":
            loop = f"train {r['train_loop_cells_per_second']:,.0f}; predict {r['predict_cells_per_second']:,.0f}"
            call = f"classify {r['classify_cells_per_second']:,.0f}"
        else:
            last = r.get("epoch_cells_per_second", [None])[-1]
            loop = _fmt(r.get("loop_cells_per_second")) + (f" ({last:,.0f})" if last else "")
            call = _fmt(r.get("call_cells_per_second"))
        elbo = _fmt(r.get("heldout_negative_elbo"), ".1f")
        epochs = _fmt(r.get("epoch_fraction"), ".2f") if name.startswith("scvi") else r.get("epochs", "")
        lines.append(
            f"| {name} | {r.get('batch_size', '')} | {epochs} | {loop} | {call} | {elbo} | {r['part_seconds']:.1f} "
            f"| {_fmt(r.get('peak_gpu_memory_gb'), '.1f')} |"
        )
    data = payload["parts"].get("data")
    if data:
        lines.append(
            f"\ndata: {data['n_cells']:,} x {data['n_genes']:,} ({data['generator']}), {data['stored_per_cell']:.0f} "
            f"stored counts per cell, made in {data['seconds']:.1f} s"
        )
    for name, reason in payload["skipped"].items():
        lines.append(f"skipped {name}: {reason}")
    for name, failure in payload["failed"].items():
        lines.append(f"FAILED {name}: {failure['error'][:300]}")
    return "\n".join(lines)


def output_path(out: str | None) -> Path:
    if out is None:
        return RESULTS / "gpu.json"
    path = Path(out)
    return path if path.suffix == ".json" else path / "gpu.json"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", type=int, default=1_000_000)
    parser.add_argument("--genes", type=int, default=2_000)
    parser.add_argument("--device", default=None, help="default: cuda when available, else cpu")
    parser.add_argument("--out", default=None, help="a .json file or a folder (gpu.json in it)")
    parser.add_argument("--generator", choices=["torch", "simulate"], default="torch")
    parser.add_argument("--epochs", type=int, default=2, help="epochs of each scdgm run")
    parser.add_argument("--large-batch", type=int, default=4096)
    parser.add_argument("--scvi-max-seconds", type=float, default=120.0, help="cap on one scvi-tools epoch")
    parser.add_argument("--ig-cells", type=int, default=20_000)
    parser.add_argument("--ig-memory-gb", type=float, default=4.0)
    parser.add_argument("--bayes-cells", type=int, default=100_000)
    parser.add_argument("--bayes-epochs", type=int, default=5)
    parser.add_argument("--bayes-batch-size", type=int, default=128)
    parser.add_argument("--compile", action="store_true", help="also train batch 128 with torch.compile")
    parser.add_argument("--bf16", action="store_true", help="also train the large batch in bf16-mixed")
    parser.add_argument("--skip", nargs="*", default=[], help="parts not to run")
    parser.add_argument("--limit", type=float, default=270.0, help="seconds the whole run may take")
    args = parser.parse_args()
    args.ig_cells = min(args.ig_cells, args.cells)
    args.bayes_cells = min(args.bayes_cells, args.cells)

    import torch

    import scdgm as dgm

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    dgm.settings.progress_bar = False
    dgm.settings.verbosity = 1
    ctx = Context(args=args, device=device)
    runner = Runner(ctx, output_path(args.out), args.limit)
    millions = args.cells / 1e6
    large = args.large_batch

    def scvi_seconds(reserve: float) -> float:
        # an scvi-tools epoch may use what is left after the parts still to come (its set-up included)
        return min(args.scvi_max_seconds, args.limit - runner.elapsed() - reserve - 15)

    ig = Part("ig", lambda: part_ig(ctx), needs=10)
    bayes = Part("bayes", lambda: part_bayes(ctx), needs=10 + 300 * args.bayes_cells / 1e6)
    later = sum(p.needs for p in (ig, bayes) if p.name not in args.skip)
    parts = [
        Part("env", lambda: part_env(ctx), needs=5, needs_data=False),
        Part("data", lambda: part_data(ctx), needs=10 + 30 * millions, needs_data=False),
        Part("scdgm_b128", lambda: part_scdgm(ctx, batch_size=BASE_BATCH, key="vae_b128"), needs=10 + 40 * millions),
        Part("scdgm_large", lambda: part_scdgm(ctx, batch_size=large, key=f"vae_b{large}"), needs=10 + 20 * millions),
        Part("scvi_b128", lambda: part_scvi(ctx, batch_size=BASE_BATCH, max_seconds=scvi_seconds(later)), needs=30),
        ig,
        bayes,
        # "if quick": whatever time is left
        Part("scvi_large", lambda: part_scvi(ctx, batch_size=large, max_seconds=scvi_seconds(0)), needs=25),
    ]
    if args.compile:
        options = {"dynamic": None}
        parts.append(
            Part(
                "scdgm_b128_compile",
                lambda: part_scdgm(ctx, batch_size=BASE_BATCH, key="vae_b128_compiled", compile_options=options),
                needs=40 + 40 * millions,
            )
        )
    if args.bf16:
        parts.append(
            Part(
                "scdgm_large_bf16",
                lambda: part_scdgm(ctx, batch_size=large, key=f"vae_b{large}_bf16", precision="bf16-mixed"),
                needs=10 + 20 * millions,
            )
        )
    for part in parts:
        if part.name in args.skip:
            runner._skip(part.name, "--skip")
            continue
        runner.run(part)
    eager, compiled = runner.payload["parts"].get("scdgm_b128"), runner.payload["parts"].get("scdgm_b128_compile")
    if eager and compiled:
        runner.payload["compile_speedup_last_epoch"] = (
            compiled["epoch_cells_per_second"][-1] / eager["epoch_cells_per_second"][-1]
        )
    runner.save()
    print(f"\nwrote {runner.path}\n")
    print(table(runner.payload))


if __name__ == "__main__":
    sys.exit(main())
