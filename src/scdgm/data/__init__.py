"""The data layer: AnnData to validated arrays and minibatches on the training device.

``prepare_data`` picks and validates the input, ``split_indices`` holds cells out, and
``BatchStore`` / ``MiniBatches`` serve batches of tensors to the training engine. Importing this
package does not import torch: the torch-using names load on first access.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._encoding import CategoryEncoding
from ._prepare import PreparedData, prepare_data
from ._split import split_indices
from ._stats import count_non_binary, dense_rows, feature_stats, principal_axes, row_blocks

if TYPE_CHECKING:
    from ._batches import BatchStore, InMemoryStore, MiniBatches, StreamingStore

_TORCH_NAMES = {"BatchStore", "InMemoryStore", "MiniBatches", "StreamingStore"}

__all__ = [
    "BatchStore",
    "CategoryEncoding",
    "InMemoryStore",
    "MiniBatches",
    "PreparedData",
    "StreamingStore",
    "count_non_binary",
    "dense_rows",
    "feature_stats",
    "prepare_data",
    "principal_axes",
    "row_blocks",
    "split_indices",
]


def __getattr__(name: str) -> Any:
    if name in _TORCH_NAMES:
        from . import _batches

        return getattr(_batches, name)
    msg = f"module {__name__!r} has no attribute {name!r}"
    raise AttributeError(msg)


def __dir__() -> list[str]:
    return sorted(set(globals()) | _TORCH_NAMES)
