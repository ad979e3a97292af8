"""Schedules of the training engine: KL warm-up and the default length of a run."""

from __future__ import annotations

import math


def default_max_epochs(n_train: int) -> int:
    """Epochs for a run on ``n_train`` cells when the user does not say.

    About 40,000 cells' worth of passes for small data, never fewer than 20 epochs on large data and
    never more than 400: small data needs many epochs, large data few. Early stopping usually ends
    the run sooner.
    """
    if n_train < 1:
        msg = f"Need at least one training cell, got {n_train}."
        raise ValueError(msg)
    return int(min(400, max(20, round(400 * 20_000 / n_train))))


def default_kl_warmup_epochs(max_epochs: int) -> int:
    """KL warm-up length when the user does not say: a third of the run, so the weight reaches ``beta``.

    A fixed number of warm-up epochs (such as 400) can outlast a short run on large data, leaving the
    model trained with a KL weight below ``beta``; scaling with the run avoids that.
    """
    return max(1, math.ceil(max_epochs / 3))


class KLWarmup:
    """Linear KL warm-up from ``0`` to ``beta`` over ``warmup_steps`` optimisation steps.

    The weight at step ``s`` (0-based) is ``beta * min(1, (s + 1) / warmup_steps)``, so the last warm-up
    step already trains at the full ``beta``; ``warmup_steps=0`` means no warm-up.
    """

    def __init__(self, beta: float, warmup_steps: int) -> None:
        if beta < 0 or not math.isfinite(beta):
            msg = f"beta must be a non-negative finite number, not {beta!r}."
            raise ValueError(msg)
        if warmup_steps < 0:
            msg = f"warm-up length must be >= 0 steps, not {warmup_steps!r}."
            raise ValueError(msg)
        self.beta = float(beta)
        self.warmup_steps = int(warmup_steps)

    def weight(self, step: int) -> float:
        """KL weight for the optimisation step ``step`` (0-based)."""
        if self.warmup_steps == 0:
            return self.beta
        return self.beta * min(1.0, (step + 1) / self.warmup_steps)

    def done(self, step: int) -> bool:
        """Whether the step ``step`` (0-based) trains at the full ``beta``."""
        return step + 1 >= self.warmup_steps
