"""Selectors: masks over existing weights (GPS). Registered in :data:`vpeft.registry.SELECTORS`.

None is built in yet; the registry, ``vpeft list selectors`` and the run config already take them.
"""
