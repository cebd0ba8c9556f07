"""What the Hugging Face families (``hf_text``, ``t5``) share: the optional packages, a spec's source (a named
configuration or a local folder, checked), JSON and weight files, and the hook that unwraps a layer's tuple output.
Nothing here downloads: a folder must hold its files, and a missing one is named."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from ..errors import CheckpointError, ConfigError

#: A folder's weight files, in the order they are looked for.
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")


def transformers(family: str):
    """The ``transformers`` package, or a one-line error naming ``family`` and how to install it."""
    try:
        import transformers as tf
    except ImportError:
        raise ConfigError(f"the {family} backbone family needs transformers: pip install 'vpeft[text]'") from None
    return tf


def tokenizers(family: str):
    """The ``tokenizers`` package, or a one-line error naming ``family`` and how to install it."""
    try:
        import tokenizers as tk
    except ImportError:
        raise ConfigError(f"the {family} backbone family needs tokenizers: pip install 'vpeft[text]'") from None
    return tk


@dataclass(frozen=True)
class Source:
    """Where a spec's model comes from: a named configuration (``folder`` None) or a local folder, in ``family``."""

    name: str
    folder: Optional[Path]
    family: str = "hf_text"

    @property
    def label(self) -> str:
        return f"{self.family}:{self.name}" if self.folder is None else f"{self.family} folder {self.folder}"


def local_source(name: str, family: str, configs, tokenizer_files: tuple[str, ...], what: str) -> Source:
    """The named configuration (a key of ``configs``) or the local folder ``name`` stands for, checked: a folder must
    exist and hold ``config.json`` and one of ``tokenizer_files``. ``what``: the folder's kind, for the message."""
    if name in configs:
        return Source(name, None, family)
    path = Path(name).expanduser()
    if not path.exists():
        raise ConfigError(
            f"{family} backbone {name!r}: no such folder, and not a named configuration ({', '.join(configs)}); "
            f"give a local {what} (config.json, model.safetensors, {tokenizer_files[0]}): nothing is downloaded"
        )
    if not path.is_dir():
        raise ConfigError(f"{family} backbone {name!r} is a file; give the Hugging Face model folder that holds it")
    if not (path / "config.json").is_file():
        raise ConfigError(f"{family} folder {path} has no config.json")
    if not any((path / f).is_file() for f in tokenizer_files):
        raise ConfigError(f"{family} folder {path} has no tokenizer: {' or '.join(tokenizer_files)}")
    return Source(str(path.resolve()), path.resolve(), family)


def read_json(path: Path) -> dict:
    """A JSON object file, or a one-line error naming it."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ConfigError(f"cannot read {path}: {type(e).__name__}: {e}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path} does not hold a JSON object")
    return data


def weight_file(folder: Path, family: str) -> Path:
    """A folder's weight file (:data:`WEIGHT_FILES`), or a one-line error naming what is missing."""
    for name in WEIGHT_FILES:
        if (folder / name).is_file():
            return folder / name
    sharded = [f for f in ("model.safetensors.index.json", "pytorch_model.bin.index.json") if (folder / f).is_file()]
    if sharded:
        raise CheckpointError(f"{family} folder {folder}: sharded weights ({sharded[0]}) are not supported")
    raise CheckpointError(f"{family} folder {folder} has no weights: {' or '.join(WEIGHT_FILES)}")


def first_output(module, args, output):
    """A forward hook: a layer's output tensor where transformers returns a tuple (before 5.0), so a method's hook
    on a block reads the hidden states."""
    return output[0] if isinstance(output, tuple) else None
