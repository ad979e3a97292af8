"""Preparation of AnnData for scdgm models."""

from ._binarize import binarize

__all__ = ["binarize"]
