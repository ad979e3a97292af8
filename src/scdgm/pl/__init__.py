"""Plots in scanpy's style."""

__all__: list[str] = []
