"""What every module shares with the training engine: the loss dataclass and the base class."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from .._checks import check_int


def check_integer(name: str, value: Any, minimum: int) -> int:
    """``value`` as an ``int``, or a ``ValueError`` naming ``name`` when it is not an integer >= ``minimum``."""
    return check_int(name, value, minimum=minimum)


@dataclass
class LossOutput:
    """The loss of one minibatch and its terms, as the training engine reads it.

    Attributes
    ----------
    loss
        Scalar to minimise: the mean over cells of ``reconstruction + kl_weight * kl``, plus a
        penalty on the parameters when the module has one.
    terms
        Detached scalar per-cell means for logging: ``"reconstruction"``, ``"kl"``, ``"elbo"``
        (the negative ELBO, ``reconstruction + kl`` at full weight), ``"loss"``, and ``"penalty"``
        when there is one.
    n_obs
        Cells in the minibatch; the engine weights epoch means by it.
    """

    loss: torch.Tensor
    terms: dict[str, torch.Tensor]
    n_obs: int

    @classmethod
    def from_terms(
        cls,
        reconstruction: torch.Tensor,
        kl: torch.Tensor,
        kl_weight: float = 1.0,
        penalty: torch.Tensor | None = None,
    ) -> LossOutput:
        """Build the output from per-cell reconstruction and KL terms.

        Parameters
        ----------
        reconstruction
            ``-log p(x | z)`` per cell, shape ``(cells,)``.
        kl
            KL divergence per cell, shape ``(cells,)``.
        kl_weight
            Weight of the KL term in the loss (beta, KL warm-up).
        penalty
            A scalar added to the loss once per minibatch (a penalty on parameters, already per
            cell); it is not part of the ELBO, so early stopping on the ELBO ignores it.

        Returns
        -------
        The loss and its logged terms.
        """
        loss = (reconstruction + kl_weight * kl).mean()
        if penalty is not None:
            loss = loss + penalty
        reconstruction_mean = reconstruction.detach().mean()
        kl_mean = kl.detach().mean()
        terms = {
            "reconstruction": reconstruction_mean,
            "kl": kl_mean,
            "elbo": reconstruction_mean + kl_mean,
            "loss": loss.detach(),
        }
        if penalty is not None:
            terms["penalty"] = penalty.detach()
        return cls(loss=loss, terms=terms, n_obs=int(reconstruction.shape[0]))


class BaseModule(torch.nn.Module):
    """A torch module the engine can train and the AnnData layer can store and rebuild.

    Subclasses set :attr:`init_kwargs` to their constructor arguments (plain Python values), so that
    ``type(module)(**module.init_kwargs)`` followed by ``load_state_dict`` rebuilds a trained module,
    and implement :meth:`forward`.

    Attributes
    ----------
    init_kwargs
        Constructor arguments, keyword by keyword.
    early_stopping_term
        The loss term whose held-out value early stopping watches; ``None``: the negative ELBO
        (``"elbo"``) where the module reports one, else ``"loss"``.
    early_stopping_during_warmup
        Whether that term may pick the kept epoch during KL warm-up: only where the KL weight does not
        enter it.
    """

    init_kwargs: dict[str, Any]
    early_stopping_term: str | None = None
    early_stopping_during_warmup: bool = False

    def forward(self, batch: dict[str, torch.Tensor], kl_weight: float = 1.0) -> LossOutput:
        """Loss of one minibatch.

        Parameters
        ----------
        batch
            ``"x"`` (cells x genes, float32), ``"library"`` (cells x 1, observed total counts),
            optionally ``"batch"`` (int64 batch codes) and ``"index"``.
        kl_weight
            Weight of the KL term.

        Returns
        -------
        The loss and its terms.
        """
        raise NotImplementedError
