"""Shared plumbing of the ``pl`` functions: scanpy's show / return conventions."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def finish(fig: Any, axes: Any, *, show: bool | None, return_fig: bool) -> Any:
    """Show the figure or hand it back, the way scanpy's plotting functions do.

    ``return_fig=True`` returns the Figure; otherwise the figure is shown when ``show`` is True (or
    ``None`` and scanpy's ``autoshow`` is on) and nothing is returned, else the Axes are returned.
    """
    import matplotlib.pyplot as plt

    if return_fig:
        return fig
    if show is None:
        import scanpy as sc

        show = bool(sc.settings.autoshow)
    if show:
        plt.show()
        return None
    return axes


def panels(
    n: int,
    ax: Any,
    *,
    what: str,
    hint: str,
    width: float,
    height: float,
    ncols: int | None = None,
    extra_height: float = 0.0,
) -> tuple[Any, list[Any]]:
    """The figure and one Axes per panel: the given ``ax`` for a single panel, else a new grid.

    A grid has ``ncols`` columns (default: all panels in one row) of ``width`` x ``height`` inches
    each, plus ``extra_height``; its unused cells are hidden.
    """
    import matplotlib.pyplot as plt

    if ax is not None:
        if n != 1:
            msg = f"ax= takes one panel, but {n} {what} were asked for: {hint} or ax=None."
            raise ValueError(msg)
        return ax.figure, [ax]
    ncols = n if ncols is None else min(ncols, n)
    nrows = -(-n // ncols)
    fig, grid = plt.subplots(nrows, ncols, figsize=(width * ncols, height * nrows + extra_height), squeeze=False)
    axes = list(grid.ravel())
    for spare in axes[n:]:
        spare.set_visible(False)
    return fig, axes[:n]


def chosen_kinds(kind: str | Sequence[str], allowed: Sequence[str]) -> list[str]:
    """The panel kinds asked for, in order, or a ValueError listing the ones there are."""
    kinds = [kind] if isinstance(kind, str) else list(kind)
    unknown = [k for k in kinds if k not in allowed]
    if not kinds or unknown:
        msg = f"kind={kind!r} is not supported. Choose one or more of {list(allowed)}."
        raise ValueError(msg)
    return kinds
