"""Argument checks shared by every layer: each names the argument, says what is wrong and returns the clean value.

One place for them, so that ``n_latent=np.int64(5)`` and ``seed=np.int64(3)`` are treated alike
everywhere, and a string where a number belongs gets a message instead of a bare comparison error.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from numbers import Integral, Real
from typing import Any

import numpy as np


def check_choice(name: str, value: Any, allowed: Iterable[Any]) -> Any:
    """``value`` when it is one of ``allowed``, else a ValueError listing them."""
    allowed = list(allowed)
    # isinstance first: comparing an array with a string would give an array, not a bool
    if not any(isinstance(value, type(option)) and value == option for option in allowed):
        msg = f"{name}={value!r} is not supported. Choose one of {allowed}."
        raise ValueError(msg)
    return value


def check_int(name: str, value: Any, *, minimum: int = 1) -> int:
    """``value`` as an ``int`` when it is an integer (numpy ones too) >= ``minimum``, else a ValueError."""
    if isinstance(value, bool) or not isinstance(value, Integral) or value < minimum:
        msg = f"{name} must be an integer >= {minimum}, not {value!r}."
        raise ValueError(msg)
    return int(value)


def check_number(
    name: str,
    value: Any,
    *,
    minimum: float | None = None,
    maximum: float | None = None,
    exclusive_minimum: bool = False,
    exclusive_maximum: bool = False,
) -> float:
    """``value`` as a ``float`` when it is a finite real number within the bounds, else a ValueError."""
    low = "" if minimum is None else ("(" if exclusive_minimum else "[") + f"{minimum:g}"
    high = "" if maximum is None else f"{maximum:g}" + (")" if exclusive_maximum else "]")
    if minimum is not None and maximum is not None:
        where = f" in {low}, {high}"
    elif minimum is not None:
        where = f" {'>' if exclusive_minimum else '>='} {minimum:g}"
    elif maximum is not None:
        where = f" {'<' if exclusive_maximum else '<='} {maximum:g}"
    else:
        where = ""
    ok = not isinstance(value, bool) and isinstance(value, Real) and math.isfinite(value)
    if ok and minimum is not None:
        ok = value > minimum if exclusive_minimum else value >= minimum
    if ok and maximum is not None:
        ok = value < maximum if exclusive_maximum else value <= maximum
    if not ok:
        msg = f"{name} must be a finite number{where}, not {value!r}."
        raise ValueError(msg)
    return float(value)


def check_positive(name: str, value: Any) -> float:
    """``value`` as a ``float`` when it is a finite number > 0."""
    return check_number(name, value, minimum=0.0, exclusive_minimum=True)


def check_fraction(name: str, value: Any, *, upper_inclusive: bool = False) -> float:
    """``value`` as a ``float`` when it lies in ``[0, 1)`` (or ``[0, 1]``)."""
    return check_number(name, value, minimum=0.0, maximum=1.0, exclusive_maximum=not upper_inclusive)


def check_bool(name: str, value: Any) -> bool:
    """``value`` when it is a bool (numpy's too), else a ValueError; ``"False"`` is not silently true."""
    if not isinstance(value, bool | np.bool_):
        msg = f"{name} must be True or False, not {value!r}."
        raise ValueError(msg)
    return bool(value)
