"""Training objectives. Importing this package registers the built-in ones in :data:`vpeft.registry.OBJECTIVES`."""

from . import ce, gist, idat, lm, mse, seg  # noqa: F401
from .base import Objective, ObjectiveConfig

__all__ = ["Objective", "ObjectiveConfig"]
