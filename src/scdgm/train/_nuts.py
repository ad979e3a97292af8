"""NUTS, the other way a Bayesian classifier is fitted: exact posterior draws on all training cells at once."""

from __future__ import annotations

import time
import warnings
from typing import TYPE_CHECKING, Any

import numpy as np

from .._settings import settings
from .._warnings import ScdgmWarning

if TYPE_CHECKING:
    from ..data import PreparedData

NUTS_WEIGHT_WARNING = 2000
"""NUTS explores every weight at once; beyond this many it gets slow enough to warn about."""


def fit_nuts(
    module: Any, data: PreparedData, rows: np.ndarray, codes: np.ndarray, *, num_warmup: int, device: str
) -> dict[str, Any]:
    """Draw the posterior of ``module``'s weights with NUTS on the ``rows`` of ``data`` labelled ``codes[rows]``.

    Call inside :func:`~scdgm.train.seeded` for reproducible chains. The module keeps the draws
    (``run_nuts``); the returned summary holds the sampler diagnostics and the wall time.
    """
    import torch

    from ..data import dense_rows

    n_weights = sum(int(np.prod(module.model.site_shape(n))) for n in module.model.site_names)
    if n_weights > NUTS_WEIGHT_WARNING:
        msg = (
            f"NUTS samples all {n_weights} weights jointly; beyond {NUTS_WEIGHT_WARNING} this gets slow. "
            "Use a low-dimensional use_rep (e.g. 'X_vae'), fewer n_hidden, or inference='svi'."
        )
        warnings.warn(msg, ScdgmWarning, stacklevel=4)
    x = torch.as_tensor(dense_rows(data, rows), device=device)
    y = torch.as_tensor(codes[rows], device=device)
    start = time.perf_counter()
    diagnostics = module.run_nuts(x, y, num_warmup=num_warmup, progress_bar=settings.progress_bar)
    return {**diagnostics, "seconds": time.perf_counter() - start}
