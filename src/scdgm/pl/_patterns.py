"""``pl.patterns``: the gene patterns of :func:`scdgm.tl.pattern_extractor`, placed by their hidden-state distances."""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
from anndata import AnnData

from .._docs import doc_params
from ._utils import finish

COLORS = ("frequency", "frequency_observed")
"""What the colour of a pattern can show."""


@doc_params
def patterns(
    adata: AnnData,
    *,
    key: str = "patterns",
    color: Literal["frequency", "frequency_observed"] = "frequency",
    annotate: bool = True,
    size: float = 2000.0,
    cmap: str = "viridis",
    ax: Any = None,
    show: bool | None = None,
    return_fig: bool = False,
) -> Any:
    """Draw the patterns at their coordinates, sized by their frequency among the synthetic observations.

    Patterns the model produces from similar hidden states lie close together (classical MDS of the
    square-root Jensen-Shannon distances between their hidden-state distributions).

    Parameters
    ----------
    adata
        AnnData holding the result of :func:`scdgm.tl.pattern_extractor`.
    key
        ``key_added`` of that call.
    color
        Colour by the pattern's frequency among the synthetic observations, or among the cells of
        ``adata`` (``"frequency_observed"``: how often the data show what the model makes).
    annotate
        Write each pattern's 0/1 states next to it (in the order of the genes in the title).
    size
        Marker area (points squared) of a pattern shown by every observation; areas scale with frequency.
    cmap
        Matplotlib colour map.
    ax
        Axes to draw into; default a new figure.
    {show_doc}

    Returns
    -------
    The Axes, the Figure with ``return_fig=True``, or ``None`` when shown.

    Examples
    --------
    >>> import scdgm as dgm
    >>> adata = dgm.datasets.pbmc68k()
    >>> dgm.tl.pattern_extractor(adata, model_key="dbm")  # doctest: +SKIP
    >>> dgm.pl.patterns(adata, color="frequency_observed")  # doctest: +SKIP
    """
    import matplotlib.pyplot as plt

    from ..get import patterns as patterns_table
    from ..get._common import names

    if color not in COLORS:
        msg = f"color={color!r} is not supported. Choose one of {list(COLORS)}."
        raise ValueError(msg)
    table = patterns_table(adata, key)
    genes = names(adata.uns[key]["genes"])
    if ax is None:
        fig, ax = plt.subplots(figsize=(5.5, 4.5))
    else:
        fig = ax.figure
    frequency = table["frequency"].to_numpy()
    points = ax.scatter(
        table["x"],
        table["y"],
        s=np.maximum(frequency * size, 10.0),
        c=table[color],
        cmap=cmap,
        alpha=0.8,
        edgecolors="0.2",
        linewidths=0.5,
    )
    if annotate:
        for _, row in table.iterrows():
            ax.annotate(
                row["pattern"], (row["x"], row["y"]), xytext=(6, 6), textcoords="offset points", fontsize="small"
            )
    fig.colorbar(points, ax=ax, label=color.replace("_", " "))
    ax.set_xlabel("MDS 1")
    ax.set_ylabel("MDS 2")
    ax.set_title("patterns of " + ", ".join(genes), fontsize="medium")
    ax.margins(0.15)
    return finish(fig, ax, show=show, return_fig=return_fig)
