"""One registry per kind of plug-in: methods, selectors and objectives.

A registry maps a lower-case name to a config dataclass. Registering is the only step needed for a plug-in to be
listed by ``vpeft list``, accepted on the command line, documented and picked up by the parametrised tests.
"""

from __future__ import annotations

import difflib
import fnmatch
from typing import Any, Callable, TypeVar

from .errors import ConfigError

T = TypeVar("T")


class Registry:
    """A named collection of config classes, one per plug-in.

    Args:
        kind: What the entries are, e.g. ``"method"``; used in error messages.
    """

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, type] = {}

    def register(self, name: str) -> Callable[[type[T]], type[T]]:
        """Class decorator: register ``cls`` under ``name`` and set ``cls.name``."""
        if name != name.lower() or not name.replace("_", "").isalnum():
            raise ValueError(f"{self.kind} names are lower-case snake_case, got {name!r}")

        def decorator(cls: type[T]) -> type[T]:
            if name in self._entries:
                raise ValueError(f"{self.kind} {name!r} is already registered by {self._entries[name].__qualname__}")
            cls.name = name  # type: ignore[attr-defined]
            self._entries[name] = cls
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
                f"unknown {self.kind} {name!r}.{hint} Registered {self.kind}s: {', '.join(self.names()) or '(none)'}"
            ) from None

    def __contains__(self, name: str) -> bool:
        return name in self._entries

    def __len__(self) -> int:
        return len(self._entries)

    def build(self, spec: Any) -> Any:
        """Make a config instance from ``"name"``, ``"name:key=value,..."``, a mapping with ``name``, or an instance."""
        from .config import parse_spec

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


METHODS = Registry("method")
SELECTORS = Registry("selector")
OBJECTIVES = Registry("objective")
