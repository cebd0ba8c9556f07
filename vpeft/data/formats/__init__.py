"""The built-in data layouts, one module each. Importing this package registers them in
:data:`vpeft.registry.FORMATS`; a new layout is one module here (a :class:`~vpeft.data.entries.Layout` subclass under
``@FORMATS.register("name")``) plus its line below."""

from . import coop, csvfile, fewshot, fgvc, folder, glue, lists, segfolder, vtab1k  # noqa: F401  (each module registers its layout)
