"""The catalog: every built-in plug-in, listed once. Importing it registers them in :mod:`vpeft.registry`'s
registries, which load third-party plug-ins from their entry-point groups on the first look-up.

A new built-in plug-in is one module plus one line in its package's ``__init__`` (which lists the modules of that
kind, imported here; tasks live in ``vpeft/tasks/``, data layouts in ``vpeft/data/formats/``, the ``timm`` backbone
family in :mod:`vpeft.backbones`, the others in ``vpeft/families/``); a third-party one declares an entry point
instead, e.g. in its ``pyproject.toml``::

    [project.entry-points."vpeft.methods"]
    my_method = "my_package.my_method"          # a module whose classes register themselves
    other = "my_package.other:OtherConfig"      # or one config class, registered as "other"
"""

from __future__ import annotations

from . import backbones, families, methods, objectives, selectors, tasks  # noqa: F401  (each registers its plug-ins)
from .data import formats  # noqa: F401  (the built-in data layouts)
from .registry import FAMILIES, FORMATS, METHODS, OBJECTIVES, SELECTORS, TASKS

__all__ = ["FAMILIES", "FORMATS", "METHODS", "OBJECTIVES", "SELECTORS", "TASKS"]
