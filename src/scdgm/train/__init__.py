"""The one training engine every model of scdgm trains through."""

from ._fit import TrainingError, TrainResult, evaluate, fit, predict, seeded
from ._nuts import fit_nuts
from ._run import (
    INFERENCE_BATCH_SIZE,
    PRECISIONS,
    Schedule,
    TrainedModule,
    TrainingOptions,
    predict_cells,
    resolve_schedule,
    train_module,
)
from ._schedule import KLWarmup, default_kl_warmup_epochs, default_max_epochs

__all__ = [
    "INFERENCE_BATCH_SIZE",
    "PRECISIONS",
    "KLWarmup",
    "Schedule",
    "TrainedModule",
    "TrainResult",
    "TrainingError",
    "default_kl_warmup_epochs",
    "TrainingOptions",
    "default_max_epochs",
    "evaluate",
    "fit",
    "fit_nuts",
    "predict",
    "predict_cells",
    "resolve_schedule",
    "seeded",
    "train_module",
]
