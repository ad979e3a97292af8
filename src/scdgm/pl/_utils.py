"""Shared plumbing of the ``pl`` functions: scanpy's show / return conventions."""

from __future__ import annotations

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
