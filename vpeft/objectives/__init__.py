"""Training objectives. Importing this package registers the built-in ones in :data:`vpeft.registry.OBJECTIVES`."""

from .base import Objective, ObjectiveConfig
from . import ce, gist, idat, mse  # noqa: F401

__all__ = ["Objective", "ObjectiveConfig"]
