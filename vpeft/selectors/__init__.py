"""Selectors: which existing weights train (GPS). Registered in :data:`vpeft.registry.SELECTORS`."""

from . import gps  # noqa: F401
