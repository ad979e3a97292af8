"""Integer codes for categorical ``.obs`` columns (batches, labels) that survive ``write_h5ad``."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

_N_SHOWN = 5


def _as_series(values: Any) -> pd.Series:
    if isinstance(values, pd.Series):
        return values.reset_index(drop=True)
    if isinstance(values, pd.Categorical | pd.Index):
        return pd.Series(values)
    array = np.asarray(values)
    if array.ndim != 1:
        msg = f"Category values must be one-dimensional, got an array of shape {array.shape}."
        raise ValueError(msg)
    return pd.Series(array)


def _shown(names: Any) -> str:
    names = list(names)
    head = ", ".join(repr(str(name)) for name in names[:_N_SHOWN])
    return f"[{head}{', ...' if len(names) > _N_SHOWN else ''}]"


@dataclass(frozen=True)
class CategoryEncoding:
    """The categories of one ``.obs`` column and their integer codes (position in ``categories``).

    A model trained on one AnnData keeps its encodings, so that another AnnData is encoded the same
    way (the same batch gets the same code) and unknown categories are refused rather than mislabelled.

    Attributes
    ----------
    key
        The ``.obs`` column the categories came from.
    categories
        Category names as strings; the code of a category is its position here.
    """

    key: str
    categories: tuple[str, ...]

    def __post_init__(self) -> None:
        categories = tuple(str(c) for c in self.categories)
        if len(set(categories)) != len(categories):
            msg = f"The categories of {self.key!r} must be unique, got {list(categories)}."
            raise ValueError(msg)
        object.__setattr__(self, "key", str(self.key))
        object.__setattr__(self, "categories", categories)

    @property
    def n_categories(self) -> int:
        """Number of categories."""
        return len(self.categories)

    @classmethod
    def fit(cls, values: Any, key: str) -> CategoryEncoding:
        """Learn the categories of ``values``.

        Parameters
        ----------
        values
            A pandas Series (categorical or not), Categorical, or 1-D array.
        key
            Name of the ``.obs`` column, kept for messages and for the stored model.

        Returns
        -------
        The encoding. For a categorical, its categories in pandas' order, with categories that no
        cell holds dropped (a class without cells cannot be learnt); otherwise the sorted unique
        values as strings. Missing values are ignored.
        """
        series = _as_series(values)
        if isinstance(series.dtype, pd.CategoricalDtype):
            used = set(series.cat.codes[series.cat.codes >= 0].unique().tolist())
            categories = [str(c) for i, c in enumerate(series.cat.categories) if i in used]
        else:
            present = series[series.notna()]
            categories = sorted({str(v) for v in present.unique()})
        return cls(key=key, categories=tuple(categories))

    def encode(self, values: Any, *, allow_missing: bool = False) -> np.ndarray:
        """Integer codes of ``values``.

        Parameters
        ----------
        values
            A pandas Series, Categorical or 1-D array; values are compared as strings.
        allow_missing
            Code missing values (NaN, None) as ``-1`` instead of raising.

        Returns
        -------
        ``int64`` codes, one per value.

        Raises
        ------
        ValueError
            If values are missing (and ``allow_missing`` is false) or not among :attr:`categories`.
        """
        series = _as_series(values)
        position = {name: i for i, name in enumerate(self.categories)}
        if isinstance(series.dtype, pd.CategoricalDtype):
            # Map each category once rather than every cell: -2 marks a category we do not know.
            lookup = np.array([position.get(str(c), -2) for c in series.cat.categories] + [-1], dtype=np.int64)
            raw = series.cat.codes.to_numpy()
            codes = lookup[np.where(raw >= 0, raw, len(lookup) - 1)]
            missing = raw < 0
        else:
            missing = series.isna().to_numpy()
            strings = series.astype(object).where(~missing, None)
            codes = np.fromiter(
                (-1 if m else position.get(str(v), -2) for v, m in zip(strings, missing, strict=True)),
                dtype=np.int64,
                count=len(series),
            )
        unknown_mask = codes == -2
        if unknown_mask.any():
            unknown = pd.unique(series[unknown_mask].astype(str))
            msg = (
                f"{len(unknown)} value(s) of {self.key!r} are not among the {self.n_categories} categories the "
                f"encoding knows: unknown {_shown(unknown)}, known {_shown(self.categories)}. A model can only be "
                "applied to cells of categories it was trained on; subset the cells or rename the categories."
            )
            raise ValueError(msg)
        if missing.any() and not allow_missing:
            msg = (
                f"{int(missing.sum())} cell(s) have a missing value (NaN/None) in {self.key!r}. "
                "Fill them in or remove those cells."
            )
            raise ValueError(msg)
        return codes

    def decode(self, codes: Any) -> np.ndarray:
        """Category names of integer codes (``-1`` becomes ``None``).

        Parameters
        ----------
        codes
            Integer codes as returned by :meth:`encode`.

        Returns
        -------
        Object array of category names.
        """
        codes = np.asarray(codes, dtype=np.int64)
        if codes.size and (codes.max() >= self.n_categories or codes.min() < -1):
            msg = f"Codes must lie in [-1, {self.n_categories}) for {self.key!r}, got [{codes.min()}, {codes.max()}]."
            raise ValueError(msg)
        names = np.array([*self.categories, None], dtype=object)
        return names[np.where(codes >= 0, codes, self.n_categories)]

    def to_dict(self) -> dict[str, Any]:
        """A dict that ``write_h5ad`` can store (categories as a string array).

        Returns
        -------
        ``{"key": str, "categories": np.ndarray of str}``.
        """
        return {"key": self.key, "categories": np.asarray(self.categories, dtype=str)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> CategoryEncoding:
        """Rebuild an encoding stored with :meth:`to_dict` (also after an h5ad round trip).

        Parameters
        ----------
        d
            The stored dict.

        Returns
        -------
        The encoding.
        """
        categories = np.atleast_1d(np.asarray(d["categories"]))
        names = tuple(c.decode() if isinstance(c, bytes) else str(c) for c in categories.tolist())
        return cls(key=str(d["key"]), categories=names)
