"""Selectors: which existing weights train (GPS). Registered in :data:`vpeft.registry.SELECTORS`; the contract they
implement is :class:`SelectorConfig`."""

from .base import SelectorConfig
from . import gps  # noqa: F401

__all__ = ["SelectorConfig"]
