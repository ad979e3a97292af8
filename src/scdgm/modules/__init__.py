"""Pure torch / pyro modules: they take tensors and never see AnnData."""

from ._base import BaseModule, LossOutput
from ._bayes import BayesianClassifierModule
from ._dbm import DBMModule, RBMModule
from ._vae import VAEModule

MODULE_CLASSES: dict[str, type[BaseModule]] = {
    "VAEModule": VAEModule,
    "BayesianClassifierModule": BayesianClassifierModule,
    "DBMModule": DBMModule,
    "RBMModule": RBMModule,
}
"""Module classes by name, to rebuild stored models: ``MODULE_CLASSES[name](**init_kwargs)``."""

__all__ = [
    "MODULE_CLASSES",
    "BaseModule",
    "BayesianClassifierModule",
    "DBMModule",
    "LossOutput",
    "RBMModule",
    "VAEModule",
]
