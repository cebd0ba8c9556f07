"""One registry per kind of plug-in: methods, selectors, objectives, tasks, data formats and backbone families.

A registry maps a lower-case name to a config dataclass (for data formats, a layout class; for backbone families, a
:class:`~vpeft.backbones.Family`). Registering is the only
step needed for a plug-in to be listed by ``vpeft list``, accepted on the command line, documented and picked up by
the parametrised tests. The registries never import a plug-in: the built-in ones are listed in :mod:`vpeft.catalog`;
third-party ones come from the entry-point group of their kind (``vpeft.methods``, ``vpeft.objectives``,
``vpeft.selectors``, ``vpeft.tasks``, ``vpeft.formats``, ``vpeft.families``), loaded on the first look-up.
"""

from __future__ import annotations

import difflib
import fnmatch
from collections.abc import Callable
from importlib.metadata import entry_points
from typing import Any, Optional, TypeVar

from .errors import ConfigError
from .spec import parse_spec

T = TypeVar("T")


class Registry:
    """A named collection of config classes, one per plug-in.

    Args:
        kind: What the entries are, e.g. ``"method"``; used in error messages.
        group: The entry-point group whose plug-ins join on the first look-up: each entry point names a module that
            registers its classes (``pkg.mod``) or a config class (``pkg.mod:Config``), registered under the entry
            point's name unless its module did so.
        plural: ``kind`` in the plural, where it is not ``kind + "s"``.
    """

    def __init__(self, kind: str, group: Optional[str] = None, plural: Optional[str] = None):
        self.kind, self.group, self.plural = kind, group, plural or kind + "s"
        self._registered: dict[str, type] = {}
        self._loaded = group is None
        self._error: Optional[ConfigError] = None

    @property
    def _entries(self) -> dict[str, type]:
        """The registered classes, after the entry-point plug-ins (a failed one is named in the error, every time)."""
        if not self._loaded:
            self._loaded = True  # first, so a plug-in's own ``register`` calls do not come back here
            for ep in entry_points(group=self.group):
                try:
                    obj = ep.load()
                    if isinstance(obj, type) and obj not in self._registered.values():
                        self.register(ep.name)(obj)
                except Exception as e:
                    self._error = ConfigError(
                        f"{self.kind} plug-in {ep.name!r} ({ep.value}, entry point group "
                        f"{self.group!r}) failed to load: {type(e).__name__}: {e}"
                    )
                    break
        if self._error is not None:
            raise self._error
        return self._registered

    def register(self, name: str) -> Callable[[type[T]], type[T]]:
        """Class decorator: register ``cls`` under ``name`` and set ``cls.name``."""
        if name != name.lower() or not name.replace("_", "").isalnum():
            raise ValueError(f"{self.kind} names are lower-case snake_case, got {name!r}")

        def decorator(cls: type[T]) -> type[T]:
            if name in self._registered:
                owner = self._registered[name].__qualname__
                raise ValueError(f"{self.kind} {name!r} is already registered by {owner}")
            cls.name = name  # type: ignore[attr-defined]
            self._registered[name] = cls
            return cls

        return decorator

    def names(self, pattern: str = "*") -> list[str]:
        """Registered names matching an fnmatch ``pattern``, sorted."""
        return sorted(n for n in self._entries if fnmatch.fnmatch(n, pattern))

    def get(self, name: str) -> type:
        """The config class registered as ``name``; unknown names fail with the closest matches."""
        try:
            return self._entries[name]
        except KeyError:
            close = difflib.get_close_matches(name, self._entries, n=3)
            hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
            raise ConfigError(
                f"unknown {self.kind} {name!r}.{hint} Registered {self.plural}: {', '.join(self.names()) or '(none)'}"
            ) from None

    def __contains__(self, name: str) -> bool:
        return name in self._entries

    def __len__(self) -> int:
        return len(self._entries)

    def build(self, spec: Any) -> Any:
        """Make a config instance from ``"name"``, ``"name:key=value,..."``, a mapping with ``name``, or an instance."""
        if spec is None:
            raise ConfigError(f"no {self.kind} given")
        if isinstance(spec, str):
            name, kwargs = parse_spec(spec)
        elif isinstance(spec, dict):
            kwargs = dict(spec)
            if "name" not in kwargs:
                raise ConfigError(f"a {self.kind} mapping needs a 'name' key, got keys {sorted(kwargs)}")
            name = kwargs.pop("name")
        elif hasattr(spec, "name") and type(spec) in self._entries.values():
            return spec
        else:
            raise ConfigError(f"cannot read a {self.kind} from {spec!r}")
        cls = self.get(name)
        return cls.from_dict(kwargs, where=f"{self.kind} {name!r}")


METHODS = Registry("method", group="vpeft.methods")
SELECTORS = Registry("selector", group="vpeft.selectors")
OBJECTIVES = Registry("objective", group="vpeft.objectives")
TASKS = Registry("task", group="vpeft.tasks")
FORMATS = Registry("format", group="vpeft.formats")
FAMILIES = Registry("backbone family", group="vpeft.families", plural="backbone families")
