"""What the Hugging Face families (``hf_text``, ``t5``) share: the optional packages, a spec's source (a named
configuration or a local folder, checked), JSON and weight files, and the hook that unwraps a layer's tuple output.
Nothing here downloads: a folder must hold its files, and a missing one is named."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch
from torch import nn

from ..anatomy import Anatomy, TextInputSpec, TokenSequence, Where
from ..backbones import read_state_dict
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


def trim_padding(ids: torch.Tensor, pad_id: int) -> torch.Tensor:
    """``ids`` ``[B, L]`` without the trailing columns that are padding in every row: a batch of short texts padded to
    ``max_length`` is computed at its own longest length (masked padding changes nothing of the tokens' states; the
    saving is the attention and MLP work on the padding). Reads one number from the device."""
    if ids.dim() != 2 or ids.shape[1] == 0 or ids.is_meta:  # meta: shapes only, every column kept
        return ids
    used = (ids != pad_id).any(0)
    n = int(used.nonzero().max()) + 1 if bool(used.any()) else 1
    return ids if n == ids.shape[1] else ids[:, :n]


class HFTextModel(nn.Module):
    """What the two Hugging Face text models share: ids padded with ``pad_id``, a tokenizer per length read from
    ``tokenizer_folder`` (:meth:`_new_tokenizer`), and the input spec from their special ids (``cls_id``, -1 where
    there is none; ``sep_id``). ``max_positions``: the longest input the model embeds (None: relative positions,
    no limit)."""

    max_positions: Optional[int] = None

    def _init_text(self, source: Source, max_length: int, pad_id: int, cls_id: int, sep_id: int) -> None:
        self.source = source
        self.tokenizer_folder = source.folder
        self.max_length = max_length
        self.pad_id, self.cls_id, self.sep_id = pad_id, cls_id, sep_id
        self._tokenizers: dict = {}

    def _new_tokenizer(self, max_length: int):
        raise NotImplementedError

    def valid_mask(self, ids: torch.Tensor) -> torch.Tensor:
        """Which positions of ``ids`` are tokens (not padding): the attention mask, ``[B, L]`` bool."""
        return ids != self.pad_id

    def tokenizer(self):
        """The model's tokenizer at its ``max_length`` (read once, then kept)."""
        return self.text_encoder(None)

    def text_encoder(self, max_length: Optional[int] = None):
        """The model's tokenizer giving ids ``[N, max_length]`` (None: the model's ``max_length``; at most
        ``max_positions``), read once per length, then kept."""
        n = self.max_length if max_length is None else max_length
        top = self.max_positions
        if isinstance(n, bool) or not isinstance(n, int) or n < 2 or (top is not None and n > top):
            limit = f"from 2 to {top} (the positions the model embeds)" if top is not None else "of at least 2"
            raise ConfigError(f"{self.source.label}: max_length {n!r} must be an integer {limit}")
        if n not in self._tokenizers:
            self._tokenizers[n] = self._new_tokenizer(n)
        return self._tokenizers[n]

    @property
    def input_spec(self) -> TextInputSpec:
        return TextInputSpec(
            size=(self.max_length,),
            mean=(),
            std=(),
            patch=None,
            channels=0,
            max_length=self.max_length,
            pad_id=self.pad_id,
            cls_id=self.cls_id,
            sep_id=self.sep_id,
            vocab_size=self.config.vocab_size,
        )


def read_weights_into(model: nn.Module, path, family: str, keyed, tokenizer_files: tuple[str, ...]) -> None:
    """A family's ``load_checkpoint``: the weight file (or a folder's) read, keyed by ``keyed(sd, model, source)``
    (which checks it whole) and loaded; a folder with tokenizer files also becomes the model's tokenizer source."""
    path = Path(path)
    file = weight_file(path, family) if path.is_dir() else path
    model.load_state_dict(keyed(read_state_dict(file), model, source=f"checkpoint {file}"), strict=False)
    if path.is_dir() and any((path / f).is_file() for f in tokenizer_files):
        model.tokenizer_folder = path.resolve()  # the folder's vocabulary, not the spec's
        model._tokenizers.clear()


def refuse_download_and_drop_path(family: str, what: str, pretrained: bool, drop_path: float) -> None:
    """A family's ``create`` refuses hub weights (nothing is downloaded) and stochastic depth, in one line each."""
    if pretrained:
        raise ConfigError(
            f"the {family} family downloads nothing: give a local Hugging Face {what}folder as {family}:PATH "
            "(config.json, model.safetensors, tokenizer.json), or weights with --checkpoint"
        )
    if drop_path:
        raise ConfigError(f"{family} models have no stochastic depth: leave train.drop_path at 0 (got {drop_path})")


def first_output(module, args, output):
    """A forward hook: a layer's output tensor where transformers returns a tuple (before 5.0), so a method's hook
    on a block reads the hidden states."""
    return output[0] if isinstance(output, tuple) else None


class TextAnatomy(Anatomy):
    """The sites every text model of these families shares: token ids in, so no patch grid and no image embedding;
    tokens join the sequence after :meth:`insertion_module`'s output (``where`` ``post_norm_pre`` or ``embeddings``,
    one point), counted in the model's ``num_prefix_tokens`` (the attention mask grows with them); the head reads the
    pooled state as it is. Subclasses give the blocks' sites, :meth:`insertion_module`, ``has_class_token`` and
    :attr:`apart`, why their blocks cannot run apart from the model."""

    #: Why the blocks cannot run apart from the model (shared-trunk inference), for :meth:`embed`'s refusal.
    apart = "an attention mask over the padding"

    def insertion_module(self) -> nn.Module:
        """The module after whose output inserted tokens join."""
        raise NotImplementedError

    def token_sequence(self, where: Where = "post_norm_pre") -> Optional[TokenSequence]:
        if where not in ("post_norm_pre", "pre_norm_pre", "embeddings"):
            raise ConfigError(f"unknown token insertion point {where!r} (valid: post_norm_pre, embeddings)")
        if where == "pre_norm_pre":  # no norm of its own before the blocks, apart from the embeddings
            return None
        m = self.model
        return TokenSequence(self.insertion_module(), "output", m.num_prefix_tokens, m.embed_dim)

    @property
    def num_prefix_tokens(self) -> int:
        return self.model.num_prefix_tokens

    def add_prefix_tokens(self, n: int) -> None:
        self.model.num_prefix_tokens += n

    @property
    def input_spec(self) -> TextInputSpec:
        return self.model.input_spec

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        raise ConfigError(
            f"{self.name} runs its blocks with {self.apart}, so they cannot run apart from the model (shared-trunk "
            "multi-task inference takes ViT-like image backbones)"
        )

    @property
    def head(self) -> nn.Module:
        return self.model.head

    def pooled_features(self, pooled: torch.Tensor) -> torch.Tensor:
        return pooled  # the last norm already ran: the head reads the state as it is

    def reason(self, site: str, block: Optional[nn.Module] = None) -> str:
        if site == "tokens_last":
            return f"its {type(block).__name__ if block is not None else 'block'} reads token-last hidden states"
        if site == "patch_grid":
            return "its tokens are a text sequence, not a grid of image patches"
        return super().reason(site, block)
