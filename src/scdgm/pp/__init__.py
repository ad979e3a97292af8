"""Preparation of AnnData for scdgm models."""

__all__: list[str] = []
