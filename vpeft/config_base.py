"""Typed configs: dataclasses that reject unknown keys and bad values when they are read, not when they are used.

Every plug-in config and every section of a run config derives from :class:`BaseConfig`. Fields are documented once,
in the class docstring's ``Args:`` section; :func:`field_docs` reads them back for ``vpeft list`` and the docs. A leaf
of the package: it imports nothing of vpeft but the errors and the file reader.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Union

import yaml

from .errors import ConfigError
from .files import read_text


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return " | ".join(repr(a) for a in typing.get_args(tp))
    if origin in (Union, types.UnionType):
        return " | ".join(_type_name(a) for a in typing.get_args(tp))
    if origin is tuple:
        return f"tuple of {_type_name(typing.get_args(tp)[0])}"
    if tp is type(None):
        return "null"
    return getattr(tp, "__name__", str(tp))


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Check ``value`` against the annotation ``tp`` and convert the lossless cases (int -> float, str -> number)."""
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, where)
            except ConfigError as e:
                errors.append(e)
        raise ConfigError(f"{where}: expected {_type_name(tp)}, got {value!r}")
    if origin is Literal:
        choices = typing.get_args(tp)
        if value in choices:
            return value
        raise ConfigError(f"{where}: expected one of {', '.join(repr(c) for c in choices)}, got {value!r}")
    if origin is tuple:
        (item,) = typing.get_args(tp)[:1]
        if isinstance(value, str):
            value = [v for v in re.split(r"[+,]", value) if v]
        if not isinstance(value, (list, tuple)):
            value = [value]
        return tuple(_coerce(v, item, where) for v in value)
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return dict(value)
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "yes", "1", "false", "no", "0"):
            return value.lower() in ("true", "yes", "1")
        raise ConfigError(f"{where}: expected true or false, got {value!r}")
    if tp is int or tp is float:
        # bool is an int in Python but never a number here; an int field takes a whole float (1e3) too.
        ok = (int, float) if tp is float else int
        if isinstance(value, ok) and not isinstance(value, bool):
            return tp(value)
        if tp is int and isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                return tp(value)
            except ValueError:
                pass
        raise ConfigError(f"{where}: expected {'an integer' if tp is int else 'a number'}, got {value!r}")
    if tp is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(f"{where}: expected a string, got {value!r}")
    return value


def field_docs(cls: type) -> dict[str, str]:
    """Map field name -> description, read from the ``Args:`` section of the class docstring."""
    doc = cls.__doc__ or ""
    out: dict[str, str] = {}
    in_args, current = False, None
    for line in doc.splitlines():
        stripped = line.strip()
        if stripped == "Args:":
            in_args = True
            continue
        if not in_args:
            continue
        if stripped and not line.startswith(" " * 8) and stripped.endswith(":") and " " not in stripped:
            break  # next section (Returns:, Raises:)
        m = re.match(r"^\s{4,8}(\w+):\s*(.*)$", line)
        if m and (line.startswith(" " * 4) and not line.startswith(" " * 12)):
            current = m.group(1)
            out[current] = m.group(2).strip()
        elif current and stripped:
            out[current] += " " + stripped
        elif not stripped and current:
            current = None
    return out


@dataclass(kw_only=True)
class BaseConfig:
    """Base of every config: ``from_dict`` validates, ``to_dict`` gives plain YAML-able values."""

    @classmethod
    def fields(cls) -> list[dataclasses.Field]:
        return [f for f in dataclasses.fields(cls) if f.init]

    @classmethod
    def from_dict(cls, data: dict | None, where: str | None = None):
        where = where or cls.__name__
        data = dict(data or {})
        hints = typing.get_type_hints(cls)
        valid = [f.name for f in cls.fields()]
        unknown = [k for k in data if k not in valid]
        if unknown:
            key = unknown[0]
            close = difflib.get_close_matches(key, valid, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(f"{where} has no option {key!r}{hint}; valid options: {', '.join(valid) or '(none)'}")
        kwargs = {k: _coerce(v, hints[k], f"{where}, option {k!r}") for k, v in data.items()}
        try:
            return cls(**kwargs)
        except ConfigError:
            raise
        except (ValueError, TypeError) as e:
            raise ConfigError(f"{where}: {e}") from None

    def to_dict(self) -> dict:
        out = {}
        for f in self.fields():
            v = getattr(self, f.name)
            if isinstance(v, BaseConfig):
                v = v.to_dict()
            elif isinstance(v, tuple):
                v = list(v)
            out[f.name] = v
        return out


def load_yaml(path: str | Path) -> dict:
    """Read a YAML mapping, naming the file in any error."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"cannot read config file {path}: {'a folder' if path.is_dir() else 'no such file'}")
    text = read_text(path, ConfigError)
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, got {type(data).__name__}")
    return data
