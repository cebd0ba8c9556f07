"""Backbone families beyond timm's. Importing this package registers the built-in ones in
:data:`vpeft.registry.FAMILIES` (the ``timm`` family lives in :mod:`vpeft.backbones`); a new family is one module
here plus its line below, or a third-party module declared in the entry-point group ``vpeft.families``."""

from . import clip, hf_text, sam, t5  # noqa: F401  (each module registers its family)
