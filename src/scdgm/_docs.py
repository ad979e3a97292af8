"""Docstring fragments every tool shares, written once and filled in by :func:`doc_params`."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

F = TypeVar("F", bound=Callable)

FRAGMENTS = {
    "copy_doc": "copy\n        Return a new AnnData instead of writing into ``adata``.",
    "returns_doc": "``None``, or a new AnnData when ``copy=True``, with these fields written:",
    "show_doc": (
        "show\n        Show the plot; ``None`` follows scanpy's ``autoshow``.\n"
        "    return_fig\n        Return the Figure instead of the Axes."
    ),
}
"""Parameter descriptions are indented for a function's docstring (name at 4 spaces, text at 8)."""


def doc_params(func: F) -> F:
    """Fill ``{copy_doc}``, ``{returns_doc}`` and ``{show_doc}`` in ``func``'s docstring.

    A plain replacement rather than ``str.format``, so that braces elsewhere in a docstring (maths,
    dict literals in examples) need no escaping.
    """
    doc = func.__doc__ or ""
    for name, text in FRAGMENTS.items():
        doc = doc.replace("{" + name + "}", text)
    func.__doc__ = doc
    return func
