"""The ``name:key=value,...`` grammar of plug-in specs and the dotted ``section.key=value`` overrides.

A leaf under the registry: it knows the typed-config base, never a plug-in or the run schema.
"""

from __future__ import annotations

import copy
from typing import Any

import yaml

from .config_base import BaseConfig
from .errors import ConfigError


def _parse_value(text: str) -> Any:
    text = text.strip()
    if text == "":
        return ""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def _split_top_level(text: str, sep: str = ",") -> list[str]:
    """Split on ``sep`` outside brackets and quotes, so ``targets=[q,v],rank=4`` gives two items and
    ``teacher='vit_small_patch16_224:img_size=32,patch_size=8'`` one."""
    parts, depth, cur, quote = [], 0, [], None
    for ch in text:
        if quote:
            if ch == quote:
                quote = None
        elif ch in "'\"":
            quote = ch
        elif ch in "[({":
            depth += 1
        elif ch in "])}":
            depth -= 1
        if ch == sep and depth == 0 and quote is None:
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    parts.append("".join(cur))
    return parts


def parse_spec(spec: str) -> tuple[str, dict[str, Any]]:
    """Parse ``"name"`` or ``"name:key=value,key=value"`` into ``(name, kwargs)``.

    Values are read as YAML scalars or flow lists: ``rank=4``, ``scale=0.1``, ``bias=true``, ``targets=[q,v]``;
    quote a value that holds commas or colons: ``teacher='vit_small_patch16_224:img_size=32'``.
    """
    name, _, rest = spec.strip().partition(":")  # the first colon: quoted values may hold more
    name = name.strip()
    if not name:
        raise ConfigError(f"empty name in spec {spec!r}; write name or name:key=value,...")
    kwargs: dict[str, Any] = {}
    if rest.strip():
        for item in _split_top_level(rest):
            if not item.strip():
                continue
            key, eq, value = item.partition("=")
            if not eq or not key.strip():
                raise ConfigError(f"bad item {item!r} in spec {spec!r}; write key=value")
            kwargs[key.strip()] = _parse_value(value)
    return name, kwargs


def format_spec(name: str, kwargs: dict[str, Any]) -> str:
    """Inverse of :func:`parse_spec` for simple values."""
    if not kwargs:
        return name

    def fmt(v):
        if isinstance(v, (list, tuple)):
            return "[" + ",".join(str(x) for x in v) + "]"
        if isinstance(v, bool):
            return str(v).lower()
        return str(v)

    return name + ":" + ",".join(f"{k}={fmt(v)}" for k, v in kwargs.items())


def plugin_to_dict(cfg: BaseConfig) -> dict:
    """A registered plug-in config as a YAML mapping with its ``name``."""
    return {"name": cfg.name, **cfg.to_dict()}  # type: ignore[attr-defined]


def spec_string(cfg: BaseConfig) -> str:
    """A plug-in config as ``name:key=value,...`` listing only the options that differ from their defaults."""
    default = type(cfg)().to_dict()
    changed = {k: v for k, v in cfg.to_dict().items() if v != default.get(k)}
    return format_spec(cfg.name, changed)  # type: ignore[attr-defined]


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    """Apply dotted ``section.key=value`` overrides to a nested mapping (a copy)."""
    data = copy.deepcopy(data)
    for item in overrides:
        key, eq, value = item.partition("=")
        if not eq or not key:
            raise ConfigError(f"bad override {item!r}; write section.key=value, e.g. train.lr=0.01")
        parts = key.split(".")
        node = data
        for p in parts[:-1]:
            child = node.get(p)
            if isinstance(child, str) and p in ("method", "objective", "selector"):
                name, kwargs = parse_spec(child)
                child = {"name": name, **kwargs}
            if child is None:
                child = {}
            if not isinstance(child, dict):
                raise ConfigError(f"override {item!r}: {p!r} is not a section")
            node[p] = child
            node = child
        node[parts[-1]] = _parse_value(value)
    return data
