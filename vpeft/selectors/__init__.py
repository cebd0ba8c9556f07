"""Selectors: which existing weights train (GPS). Registered in :data:`vpeft.registry.SELECTORS`; the contract they
implement is :class:`SelectorConfig`."""

from . import gps  # noqa: F401
from .base import SelectorConfig

__all__ = ["SelectorConfig"]
