"""Models and their results, written into AnnData."""

__all__: list[str] = []
