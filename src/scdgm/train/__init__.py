"""The one training engine every model of scdgm trains through."""

from ._fit import TrainingError, TrainResult, fit, predict, seeded
from ._schedule import KLWarmup, default_kl_warmup_epochs, default_max_epochs

__all__ = [
    "KLWarmup",
    "TrainResult",
    "TrainingError",
    "default_kl_warmup_epochs",
    "default_max_epochs",
    "fit",
    "predict",
    "seeded",
]
