"""``t5``: T5 (Raffel et al., arXiv:1910.10683) as a backbone family that scores label strings (issue 20: ATTEMPT's
T5-base adapters, the GIST paper's Table 3).

**Specs.** ``t5:PATH`` is a local Hugging Face T5 folder: ``config.json`` (``model_type`` ``t5``), ``model.safetensors``
(or ``pytorch_model.bin``) and the tokenizer's ``tokenizer.json`` (or SentencePiece's ``spiece.model``, read through
transformers); its weights are loaded when no ``--checkpoint`` is given. The path runs to the next colon, options
follow it: ``t5:/models/t5-base:max_length=256``. ``t5:tiny`` (width 32, 2 + 2 blocks, 4 heads, feed-forward 128,
vocabulary 256) and ``t5:base`` (T5-base's configuration: 222,903,552 parameters) are named configurations with random
weights, for tests and counts; they tokenize with a small SentencePiece-like vocabulary built in code
(:func:`builtin_vocab`). ``--checkpoint FILE`` (or a folder) loads other weights, strictly. Nothing is fetched:
``--pretrained`` is refused, a folder that lacks a file fails naming it. Needs ``pip install 'vpeft[text]'``.

**The model** (:class:`T5TextModel`) keeps transformers' ``T5ForConditionalGeneration`` modules under their own names
(``shared``, ``encoder``, ``decoder``, ``lm_head``: its checkpoints load key for key) and runs them itself, so hooks
see tensors and the encoder's input can grow. Its input is token ids ``[B, L]`` (int64, padded with the pad id: the
attention mask is ``ids != pad_id``, computed inside). ``model(ids)`` returns **label scores** ``[B, C]``: for each of
the C label strings (:meth:`T5TextModel.set_labels`; by default ``"0"``, ``"1"``, ... one per class, ATTEMPT's
targets), the teacher-forced sum of the log-probabilities of its tokens and its end token ``</s>`` given the input.
One encoder pass; the decoder reads the C label sequences of an example packed into one sequence (block-diagonal
causal attention, relative positions within each label: the same numbers as C separate passes, the encoder states
projected once). So the classification trainer, ``ce`` and ``gist`` and the metrics work unchanged: a label's score is
a logit. ``head.label_lengths`` (``[C]``) counts each label's tokens with ``</s>``: ATTEMPT's loss (transformers'
``labels=`` loss: the mean negative log-likelihood over the batch's target tokens) is :func:`lm_loss`.
:meth:`T5TextModel.generate` decodes greedily (ATTEMPT's ``predict_with_generate``, the faithful prediction) and
returns strings (``vpeft.data.glue.parse_generation`` reads them).

**The head** (:class:`T5LabelHead`) is the decoder and the LM head run on an encoder memory: ``head(states, mask)``
scores the labels against ``[B, L, D]`` states, ``head(state)`` against one state ``[B, D]`` (GIST's gist logits: the
gist token's final encoder state as the only memory). It owns no parameters: the decoder's blocks are anatomy sites
where methods insert adapters and unfreeze norms (ATTEMPT's placement), so they count as the method's, and the LM
head stays frozen with the rest of the backbone in parameter-efficient methods (what ``apply_method`` unfreezes of the
head: nothing); ``full`` trains every tensor, the word embedding and LM head (tied) included. ``linear`` is refused:
T5 has no classifier to probe.

**Anatomy** (:class:`T5Anatomy`): stacks ``encoder.block`` and ``decoder.block``; per block q / k / v / o of
``layer[0].SelfAttention`` (no biases), the MLP ``layer[-1].DenseReluDense`` ``wi`` / ``wo`` (none for gated
feed-forwards), the RMS norms (``attn``, ``cross`` in the decoder, ``mlp``), residual branches ``attn`` (output
``SelfAttention.o``), ``cross`` (``EncDecAttention.o``) and ``mlp`` (``DenseReluDense``), each before its dropout and
residual add: ``adapter:position=sublayers`` adapts ``attn`` and ``mlp`` in encoder and decoder, none on
cross-attention (ATTEMPT's placement). Final norms ``encoder.final_layer_norm`` and ``decoder.final_layer_norm``.
Tokens join the encoder's input at index 0, after the embedding lookup and before the encoder's dropout (as ATTEMPT's
prompts; positions are relative, so the inserted tokens need none); the mask grows. BitFit: T5 has no biases, so it
adds zero-initialised ones to every Linear and RMS norm of both stacks, the final norms and the LM head, as
Compacter's BitFit for T5 (``freeze_bitfit_lm_head``: the LM head's bias trains, its weight does not).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import torch
import torch.nn.functional as F
from torch import nn

from ..anatomy import MLP, Anatomy, Branch, Site
from ..backbones import Family
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
from .hf_text import WORDS, TextTokenizer

#: Named configurations with random weights, ``name: T5Config fields``.
CONFIGS: dict[str, dict[str, Any]] = {
    "tiny": {
        "vocab_size": 256,
        "d_model": 32,
        "d_kv": 8,
        "d_ff": 128,
        "num_layers": 2,
        "num_decoder_layers": 2,
        "num_heads": 4,
        "relative_attention_num_buckets": 8,
        "relative_attention_max_distance": 16,
    },
    "base": {
        "vocab_size": 32128,
        "d_model": 768,
        "d_kv": 64,
        "d_ff": 3072,
        "num_layers": 12,
        "num_decoder_layers": 12,
        "num_heads": 12,
        "relative_attention_num_buckets": 32,
        "relative_attention_max_distance": 128,
    },
}
#: What every named configuration shares (T5 v1.0: ReLU feed-forward, tied word embedding and LM head).
COMMON = {
    "model_type": "t5",
    "feed_forward_proj": "relu",
    "dropout_rate": 0.1,
    "layer_norm_epsilon": 1e-6,
    "pad_token_id": 0,
    "eos_token_id": 1,
    "decoder_start_token_id": 0,
    "tie_word_embeddings": True,
}
#: The tokenizer's length of a named configuration (ATTEMPT's ``max_source_length`` for base).
NAMED_MAX_LENGTH = {"tiny": 64, "base": 256}
#: The default length of a folder without ``tokenizer_config.json``'s ``model_max_length`` (T5's 512).
DEFAULT_MAX_LENGTH = 512
#: Spec keys the family reads itself; every other key must be a field of the T5 config (``dropout_rate=0``).
FAMILY_KEYS = ("max_length",)
TOKENIZER_FILES = ("tokenizer.json", "spiece.model")
#: A checkpoint key transformers ignores (old checkpoints hold a cross-attention position bias no layer uses).
IGNORED_KEYS = ("decoder.block.0.layer.1.EncDecAttention.relative_attention_bias.weight",)
#: The special tokens of the built-in vocabulary at ids 0, 1, 2 (T5's).
SPECIALS = ("<pad>", "</s>", "<unk>")
#: ATTEMPT's input keys as words of the built-in vocabulary.
KEY_WORDS = ("sentence1", "sentence2", "question1", "question2", "premise", "hypothesis", "question", "sentence")
SPACE = "\u2581"  # SentencePiece's word-start mark


def builtin_vocab() -> list[str]:
    """The pieces of the named configurations' tokenizer, in id order: :data:`SPECIALS` (``<pad>`` 0, ``</s>`` 1,
    ``<unk>`` 2), the word-start mark alone, lower-case letters, digits and punctuation, each also as a word start
    (``▁a``), then the words of :data:`hf_text.WORDS <vpeft.families.hf_text.WORDS>` and ATTEMPT's input keys as word
    starts; the same on every machine."""
    chars = list("abcdefghijklmnopqrstuvwxyz0123456789") + list(".,!?;:'\"()-")
    words = [w for w in (*WORDS, *KEY_WORDS) if len(w) > 1]
    vocab = [*SPECIALS, SPACE, *chars, *(SPACE + c for c in chars), *(SPACE + w for w in dict.fromkeys(words))]
    if len(set(vocab)) != len(vocab):
        raise AssertionError("the built-in vocabulary repeats a piece")
    return vocab


def _builtin_tokenizer():
    """A Unigram tokenizer over :func:`builtin_vocab` that behaves as T5's: lower-cased, SentencePiece's word-start
    mark, every piece equally likely (the fewest pieces win: ``"3.4"`` is ``▁3 . 4``), ``</s>`` appended."""
    tk = tokenizers("t5")
    from tokenizers import decoders, models, normalizers, pre_tokenizers, processors

    vocab = builtin_vocab()
    tok = tk.Tokenizer(models.Unigram([(p, 0.0 if p in SPECIALS else -1.0) for p in vocab], unk_id=2))
    tok.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase()])
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement=SPACE, prepend_scheme="always")
    tok.decoder = decoders.Metaspace(replacement=SPACE, prepend_scheme="always")
    tok.post_processor = processors.TemplateProcessing(
        single="$A </s>", pair="$A </s> $B </s>", special_tokens=[("</s>", 1)]
    )
    tok.add_special_tokens(list(SPECIALS))
    return tok


# ---- sources -------------------------------------------------------------------------------------------------------
def source(name: str) -> Source:
    """The named configuration or the local folder ``name`` stands for, checked: a folder must exist and hold
    ``config.json`` and a tokenizer (its weights are checked by :meth:`T5.weights`)."""
    return local_source(name, "t5", CONFIGS, TOKENIZER_FILES, "Hugging Face T5 folder")


def _t5_config(src: Source, overrides: dict):
    """transformers' T5 config of the source, with the spec's overrides (each a field of the config)."""
    tf = transformers("t5")
    data = {**COMMON, **CONFIGS[src.name]} if src.folder is None else read_json(src.folder / "config.json")
    if data.get("model_type") != "t5":
        raise ConfigError(
            f"{src.label}: model type {data.get('model_type')!r} is not t5 (the t5 family builds T5, T5 v1.1 and "
            "FLAN-T5 folders; encoders go through hf_text)"
        )
    config = tf.T5Config.from_dict(data)
    for key, value in overrides.items():
        if key == "model_type" or not hasattr(config, key):
            raise ConfigError(
                f"t5 backbone {src.name!r}: unknown option {key!r} (the family's: {', '.join(FAMILY_KEYS)}; or a "
                "field of its T5Config, such as dropout_rate)"
            )
        setattr(config, key, value)
    if getattr(config, "decoder_start_token_id", None) is None:
        config.decoder_start_token_id = config.pad_token_id  # T5's: the decoder starts from the pad token
    return config


def _max_length(src: Source, value) -> int:
    """The spec's ``max_length``, else a named configuration's, else the folder's ``model_max_length``."""
    if value is None:
        if src.folder is None:
            return NAMED_MAX_LENGTH[src.name]
        path = src.folder / "tokenizer_config.json"
        limit = read_json(path).get("model_max_length") if path.is_file() else None
        return limit if isinstance(limit, int) and 2 <= limit <= 100_000 else DEFAULT_MAX_LENGTH
    if isinstance(value, bool) or not isinstance(value, int) or value < 2:
        raise ConfigError(f"t5 option max_length={value!r}: give an integer of at least 2")
    return value


# ---- the tokenizer -------------------------------------------------------------------------------------------------
class T5Tokenizer(TextTokenizer):
    """A T5 tokenizer as the data path calls it: a list of texts (strings, or tuples of one string) to int64 ids
    ``[N, max_length]``, ``</s>`` last, cut to ``max_length`` and padded with the pad id. T5 reads one string per
    example: format a GLUE pair first (``vpeft.data.glue.attempt_input``: ``"sentence1: ... sentence2: ..."``).
    :meth:`label_ids` encodes label strings whole, :meth:`decode` reads generated ids back."""

    def __init__(self, tokenizer, max_length: int, pad_id: int, eos_id: int, origin: str):
        self.plain = tokenizer.__class__.from_str(tokenizer.to_str())  # no truncation, no padding: labels
        self.plain.no_truncation()
        self.plain.no_padding()
        super().__init__(tokenizer, max_length, pad_id, origin)
        self.eos_id = eos_id

    def __call__(self, texts, pairs=None) -> torch.Tensor:
        if isinstance(texts, str):
            texts = [texts]
        if pairs is not None:
            raise ValueError(f"{self.origin}: T5 reads one string per example; join the pair first (attempt_input)")
        items = []
        for t in texts:
            if isinstance(t, (tuple, list)) and len(t) == 1 and isinstance(t[0], str):
                t = t[0]
            if not isinstance(t, str):
                raise ValueError(
                    f"{self.origin}: T5 reads one string per example, not {t!r}; format a pair as one string first "
                    "(vpeft.data.glue.attempt_input: 'sentence1: ... sentence2: ...')"
                )
            items.append(t)
        return super().__call__(items)

    def label_ids(self, text: str) -> list[int]:
        """The ids of a target string as the decoder must produce it: its pieces, then ``</s>``."""
        ids = list(self.plain.encode(text).ids)
        if not ids or ids[-1] != self.eos_id:
            ids.append(self.eos_id)
        return ids

    def decode(self, ids) -> str:
        """The text of generated ids: up to the first ``</s>``, special tokens left out."""
        ids = [int(i) for i in ids]
        if self.eos_id in ids:
            ids = ids[: ids.index(self.eos_id)]
        return self.plain.decode(ids, skip_special_tokens=True)


def _read_tokenizer(folder: Optional[Path]):
    """The ``tokenizers`` tokenizer of a folder (``tokenizer.json``; else ``spiece.model`` converted by transformers),
    or the built-in one."""
    tk = tokenizers("t5")
    if folder is None:
        return _builtin_tokenizer()
    if (folder / "tokenizer.json").is_file():
        try:
            return tk.Tokenizer.from_file(str(folder / "tokenizer.json"))
        except Exception as e:  # noqa: BLE001 - any failure to read the file is the file's
            raise ConfigError(f"cannot read {folder / 'tokenizer.json'}: {e}") from None
    if not (folder / "spiece.model").is_file():
        raise ConfigError(f"t5 folder {folder} has no tokenizer: {' or '.join(TOKENIZER_FILES)}")
    try:
        return transformers("t5").AutoTokenizer.from_pretrained(str(folder), local_files_only=True).backend_tokenizer
    except ConfigError:
        raise
    except Exception as e:  # noqa: BLE001 - transformers' converter needs sentencepiece or protobuf
        first = (str(e).strip().splitlines() or [""])[0][:200]
        raise ConfigError(
            f"t5 folder {folder}: cannot convert spiece.model ({type(e).__name__}: {first}); save the tokenizer as "
            "tokenizer.json where transformers can (AutoTokenizer.from_pretrained(...).save_pretrained(folder))"
        ) from None


# ---- the model -----------------------------------------------------------------------------------------------------
def _additive(keep: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """0 where ``keep``, the dtype's lowest value elsewhere (transformers' additive mask)."""
    return (~keep).to(dtype) * torch.finfo(dtype).min


class T5LabelHead(nn.Module):
    """The decoder and LM head of a :class:`T5TextModel` as its classifier: an encoder memory to the scores of the
    label strings, ``[B, C]``. It owns no parameters (the decoder and LM head are the model's; see the module
    docstring); it holds the labels' token ids.

    ``forward(x, pre_logits=False, mask=None)``: ``x`` ``[B, L, D]`` encoder states with ``mask`` ``[B, L]`` (True:
    a token), or ``[B, D]``: one state per example as the whole memory (GIST's gist state).
    """

    def __init__(self, model: T5TextModel):
        super().__init__()
        self.task = ("text2text", "text2text_regress")  # what it serves (TaskConfig.configure_model refuses others)
        object.__setattr__(self, "_model", model)  # not a submodule: the decoder's parameters stay the model's
        self.num_classes = 0
        self.strings: Optional[list[str]] = None
        self.token_ids: list[list[int]] = []
        self.register_buffer("packed_inputs", torch.zeros(0, dtype=torch.long), persistent=False)
        self.register_buffer("packed_targets", torch.zeros(0, dtype=torch.long), persistent=False)
        self.register_buffer("segments", torch.zeros(0, dtype=torch.long), persistent=False)
        self.register_buffer("label_lengths", torch.zeros(0, dtype=torch.long), persistent=False)

    def reset(self, num_classes: int, pool_type: Optional[str] = None, **kwargs) -> None:
        """timm's ``reset_classifier``: the number of labels; they start as ATTEMPT's class targets ``"0"``,
        ``"1"``, ... (:meth:`set_labels` gives others)."""
        self.num_classes = num_classes
        self.set_labels([str(i) for i in range(num_classes)])

    def set_labels(self, strings: list[str]) -> None:
        """The label strings in class order (STS-B's 26 ``"0.0"`` ... ``"5.0"``, ...): each is scored as its pieces
        and ``</s>``."""
        strings = [str(s) for s in strings]
        if self.num_classes and len(strings) != self.num_classes:
            raise ConfigError(f"{len(strings)} label strings for a t5 head of {self.num_classes} classes")
        if len(set(strings)) != len(strings):
            raise ConfigError(f"the t5 label strings repeat one: {strings}")
        model = self._model
        tok = model.tokenizer()
        ids = [tok.label_ids(s) for s in strings]
        inputs = [i for seq in ids for i in [model.decoder_start_id, *seq[:-1]]]
        dev = model.shared.weight.device
        with torch.device("cpu"):
            packed = (
                torch.tensor(inputs, dtype=torch.long),
                torch.tensor([i for seq in ids for i in seq], dtype=torch.long),
                torch.tensor([c for c, seq in enumerate(ids) for _ in seq], dtype=torch.long),
                torch.tensor([len(seq) for seq in ids], dtype=torch.long),
            )
        self.packed_inputs, self.packed_targets, self.segments, self.label_lengths = (t.to(dev) for t in packed)
        self.strings, self.token_ids = strings, ids

    def trained_parameters(self, method) -> list[nn.Parameter]:
        """What every run of ``method`` trains in the head: nothing (it owns no parameters); ``linear`` is refused,
        since T5 has no classifier to probe."""
        if getattr(method, "name", None) == "linear":
            raise ConfigError(
                "method 'linear' trains only the head, and a t5 model has none of its own (its decoder and LM head "
                "score the label strings): use adapter, lora, bitfit, vpt_shallow or full"
            )
        return []

    def forward(self, x: torch.Tensor, pre_logits: bool = False, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        if pre_logits:
            return x
        if x.dim() == 2:  # one state per example: a memory of one token
            x, mask = x.unsqueeze(1), None
        return self._model.score(x, mask)


class T5TextModel(HFTextModel):
    """transformers' T5 (``shared``, ``encoder``, ``decoder``, ``lm_head``) as a scorer of label strings, with timm's
    classifier interface; the input is token ids ``[B, L]`` padded with ``pad_id``. See the module docstring.

    Args:
        config: transformers' T5 config.
        max_length: The tokenizer's length.
        source: Where the model comes from (the tokenizer is read from there).
    """

    def __init__(self, config, max_length: int, source: Source):
        super().__init__()
        tf = transformers("t5")
        hf = tf.T5ForConditionalGeneration(config)
        self.config = config
        self.shared, self.encoder, self.decoder, self.lm_head = hf.shared, hf.encoder, hf.decoder, hf.lm_head
        #: The encoder's input embeddings: tokens join at its output (GIST's token, prompt tuning).
        self.encoder_input = nn.Identity()
        for block in (*self.encoder.block, *self.decoder.block):
            block.register_forward_hook(first_output)
        eos = config.eos_token_id
        self.eos_id = eos[0] if isinstance(eos, (list, tuple)) else (eos if eos is not None else 1)
        pad_id = config.pad_token_id if config.pad_token_id is not None else 0
        self._init_text(source, max_length, pad_id, -1, self.eos_id)  # no class token; </s> ends the text
        self.decoder_start_id = config.decoder_start_token_id
        scale = getattr(config, "scale_decoder_outputs", None)  # transformers 5; before, tie_word_embeddings said it
        self.scale_decoder_outputs = bool(config.tie_word_embeddings if scale is None else scale)
        self.num_features = self.embed_dim = config.d_model
        self.num_prefix_tokens = 0  # tokens inserted before the text (GIST's token, prompts)
        self.has_class_token = False
        self._mask: Optional[torch.Tensor] = None
        self.num_classes = 0
        self.head = T5LabelHead(self)

    # ---- timm's classifier interface ------------------------------------------------------------------------------
    def reset_classifier(self, num_classes: int, global_pool: Optional[str] = None) -> None:
        self.num_classes = num_classes
        self.head.reset(num_classes)

    def get_classifier(self) -> nn.Module:
        return self.head

    def set_labels(self, strings: list[str]) -> None:
        """The label strings the model scores, in class order (see :meth:`T5LabelHead.set_labels`)."""
        self.head.set_labels(strings)

    @property
    def label_lengths(self) -> torch.Tensor:
        """Each label's token count with ``</s>``, ``[C]`` (the denominators of ATTEMPT's loss: :func:`lm_loss`)."""
        return self.head.label_lengths

    # ---- encoder ---------------------------------------------------------------------------------------------------
    def _check(self, ids: torch.Tensor) -> None:
        if ids.dim() != 2 or ids.is_floating_point():
            raise ValueError(f"a t5 model takes token ids [batch, length] (int64), got {ids.dtype} {list(ids.shape)}")

    @staticmethod
    def _position_bias(stack, q: int, k: int, ref: torch.Tensor) -> torch.Tensor:
        """The stack's relative position bias ``[1, H, q, k]`` (its first block's table, shared by every block)."""
        return stack.block[0].layer[0].SelfAttention.compute_bias(q, k, device=ref.device).to(ref.dtype)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The encoder's final states ``[B, inserted + L', D]`` of token ids ``x`` ``[B, L]`` (``L'``: without the
        columns that are padding in every row; after its final norm
        and dropout); the mask of those states is kept for :meth:`forward_head`."""
        self._check(x)
        x = trim_padding(x, self.pad_id)
        valid = self.valid_mask(x)
        h = self.encoder_input(self.shared(x))
        extra = h.shape[1] - x.shape[1]  # tokens inserted at the front by hooks (GIST's token, prompts)
        keep = torch.cat([valid.new_ones(x.shape[0], extra), valid], 1) if extra else valid
        self._mask = keep
        h = self.encoder.dropout(h)
        n = h.shape[1]
        bias = self._position_bias(self.encoder, n, n, h) + _additive(keep, h.dtype)[:, None, None, :]
        for block in self.encoder.block:
            out = block(h, attention_mask=None, position_bias=bias)
            h = out[0] if isinstance(out, tuple) else out
        return self.encoder.dropout(self.encoder.final_layer_norm(h))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Label scores ``[B, C]`` from :meth:`forward_features`' states (with their mask)."""
        if pre_logits:
            return x
        mask = self._mask
        if x.dim() == 3 and (mask is None or mask.shape != x.shape[:2]):
            raise RuntimeError("forward_head needs the mask of the forward_features call that gave these states")
        return self.head(x, mask=mask if x.dim() == 3 else None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    # ---- decoder ---------------------------------------------------------------------------------------------------
    def decode(
        self,
        inputs: torch.Tensor,
        memory: torch.Tensor,
        mask: Optional[torch.Tensor] = None,
        segments: Optional[torch.Tensor] = None,
    ) -> torch.Tensor:
        """LM logits ``[B, T, V]`` of decoder inputs ``[B, T]`` (teacher forcing) reading ``memory`` ``[B, L, D]``
        (``mask`` ``[B, L]``, True: a token; None: all). ``segments`` ``[T]``: sequences packed into one, each
        attending only to itself (block-diagonal causal attention; positions are relative, so each keeps its own)."""
        h = self.decoder.dropout(self.decoder.embed_tokens(inputs))
        t = inputs.shape[1]
        pos = torch.arange(t, device=inputs.device)
        allowed = pos[None, :] <= pos[:, None]
        if segments is not None:
            allowed = allowed & (segments[None, :] == segments[:, None])
        bias = self._position_bias(self.decoder, t, t, h) + _additive(allowed, h.dtype)[None, None]
        if mask is None:
            cross = h.new_zeros(1, 1, 1, memory.shape[1])
        else:
            cross = _additive(mask, h.dtype)[:, None, None, :]
        for block in self.decoder.block:
            out = block(
                h,
                attention_mask=None,
                position_bias=bias,
                encoder_hidden_states=memory,
                encoder_attention_mask=None,
                encoder_decoder_position_bias=cross,
            )
            h = out[0] if isinstance(out, tuple) else out
        h = self.decoder.dropout(self.decoder.final_layer_norm(h))
        if self.scale_decoder_outputs:  # T5 v1.0 (tied embeddings) rescales before the LM head
            h = h * (self.config.d_model**-0.5)
        return self.lm_head(h)

    def score(self, memory: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Scores ``[B, C]`` of the label strings: each label's summed log-probability (its pieces and ``</s>``),
        teacher-forced, given the encoder memory ``[B, L, D]`` (``mask`` ``[B, L]``)."""
        head = self.head
        if head.strings is None:
            raise ConfigError("a t5 model scores label strings, and none were set: set_labels([...]) first")
        b = memory.shape[0]
        inputs = head.packed_inputs.unsqueeze(0).expand(b, -1)
        logits = self.decode(inputs, memory, mask, head.segments)
        targets = head.packed_targets.unsqueeze(0).expand(b, -1)
        nll = F.cross_entropy(logits.flatten(0, 1), targets.flatten(), reduction="none").view(b, -1)
        onehot = F.one_hot(head.segments, len(head.strings)).to(nll.dtype)
        return -(nll @ onehot)

    @torch.no_grad()
    def generate_ids(self, ids: torch.Tensor, max_new_tokens: int = 8) -> torch.Tensor:
        """Greedy decoding (transformers' ``generate`` with one beam, no sampling): ids ``[B, <= max_new_tokens]``
        after the start token, ``</s>`` included, padded after it."""
        memory = self.forward_features(ids)
        mask = self._mask
        out = torch.full((ids.shape[0], 1), self.decoder_start_id, dtype=torch.long, device=ids.device)
        done = torch.zeros(ids.shape[0], dtype=torch.bool, device=ids.device)
        for _ in range(max_new_tokens):
            nxt = self.decode(out, memory, mask)[:, -1].argmax(-1).masked_fill(done, self.pad_id)
            out = torch.cat([out, nxt[:, None]], 1)
            done |= nxt == self.eos_id
            if bool(done.all()):
                break
        return out[:, 1:]

    def generate(self, ids: torch.Tensor, max_new_tokens: int = 8) -> list[str]:
        """Greedy generations of token ids ``[B, L]`` as strings (up to ``</s>``, special tokens left out): ATTEMPT's
        prediction, which ``vpeft.data.glue.parse_generation`` reads."""
        tok = self.tokenizer()
        return [tok.decode(row) for row in self.generate_ids(ids, max_new_tokens).tolist()]

    # ---- text ------------------------------------------------------------------------------------------------------
    def _new_tokenizer(self, max_length: int) -> T5Tokenizer:
        tok = _read_tokenizer(self.tokenizer_folder)
        return T5Tokenizer(tok, max_length, self.pad_id, self.eos_id, self.source.label)


def lm_loss(scores: torch.Tensor, labels: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """ATTEMPT's loss from label scores: transformers' ``labels=`` loss of the gold strings, the mean negative
    log-likelihood over every target token of the batch (``</s>`` included), ``-sum(scores[i, y_i]) /
    sum(lengths[y_i])``. ``scores`` ``[B, C]`` (:meth:`T5TextModel.score`), ``labels`` ``[B]`` class indices,
    ``lengths`` ``[C]`` (``model.label_lengths``)."""
    gold = scores.gather(1, labels.view(-1, 1)).squeeze(1)
    return -gold.sum() / lengths[labels].sum().to(scores.dtype)


# ---- the family ----------------------------------------------------------------------------------------------------
@FAMILIES.register("t5")
class T5(Family):
    """T5 from a local Hugging Face folder, t5:PATH (config.json, model.safetensors, tokenizer.json), or a named
    random configuration (tiny, base); scores label strings with its decoder (text-to-text, ATTEMPT's GLUE); needs
    pip install 'vpeft[text]'.

    Spec keys: ``max_length`` (the tokenizer's length; default 64 for tiny, 256 for base, a folder's
    ``model_max_length``), and any field of the T5 config (``dropout_rate=0``, ``num_layers`` for a named
    configuration).
    """

    models = tuple(CONFIGS)

    def resolve(self, name: str, kwargs: dict) -> tuple[str, dict]:
        src = source(name)
        _t5_config(src, {k: v for k, v in kwargs.items() if k not in FAMILY_KEYS})  # checks the keys early
        _max_length(src, kwargs.get("max_length"))
        return src.name, dict(kwargs)

    def create(self, arch: str, kwargs: dict, *, drop_path: float = 0.0, pretrained: bool = False) -> nn.Module:
        refuse_download_and_drop_path("t5", "T5 ", pretrained, drop_path)
        src = source(arch)
        config = _t5_config(src, {k: v for k, v in kwargs.items() if k not in FAMILY_KEYS})
        return T5TextModel(config, _max_length(src, kwargs.get("max_length")), src)

    def weights(self, name: str) -> Optional[Path]:
        if name in CONFIGS:
            return None
        return weight_file(Path(name).expanduser(), "t5")

    def load_checkpoint(self, model: nn.Module, path) -> None:
        if not isinstance(model, T5TextModel):
            raise CheckpointError(f"checkpoint {path}: the model is not a t5 model")
        read_weights_into(model, path, "t5", t5_state_dict, TOKENIZER_FILES)
        if model.head.strings is not None:
            model.head.set_labels(model.head.strings)  # their ids in the (possibly new) vocabulary

    def anatomy(self, model: nn.Module) -> Anatomy:
        return T5Anatomy(model)


def t5_state_dict(sd: dict[str, torch.Tensor], model: T5TextModel, source: str = "checkpoint") -> dict:
    """A Hugging Face T5 checkpoint's tensors keyed as ``model`` keys them (transformers' own names), checked whole.
    Tied tensors (``shared.weight``, ``encoder.embed_tokens.weight``, ``decoder.embed_tokens.weight``,
    ``lm_head.weight``) need one of their names; names that the model ties must hold equal tensors. A missing,
    unexpected or misshapen tensor is a :class:`~vpeft.errors.CheckpointError` naming it."""
    own = model.state_dict(keep_vars=True)
    groups: dict[int, list[str]] = {}
    for key, value in own.items():
        groups.setdefault(id(value), []).append(key)
    out, unexpected, mismatched = {}, [], {}
    for key, value in sd.items():
        if key in IGNORED_KEYS:
            continue
        if key not in own:
            unexpected.append(key)
        elif tuple(value.shape) != tuple(own[key].shape):
            mismatched[key] = f"{key} {tuple(value.shape)} vs {tuple(own[key].shape)}"
        else:
            out[key] = value
    missing = [keys[0] for keys in groups.values() if not any(k in out or k in mismatched for k in keys)]
    if missing or unexpected or mismatched:
        raise CheckpointError(
            f"{source} does not match the backbone (t5, T5ForConditionalGeneration): "
            + describe_mismatch(missing, unexpected, list(mismatched.values()))
        )
    for keys in groups.values():
        given = [k for k in keys if k in out]
        for k in given[1:]:
            if not torch.equal(out[k], out[given[0]]):
                raise CheckpointError(
                    f"{source}: {k} differs from {given[0]}, and the model ties them (tie_word_embeddings in its "
                    "config.json)"
                )
    return out


# ---- anatomy -------------------------------------------------------------------------------------------------------
class T5Anatomy(TextAnatomy):
    """The sites of a :class:`T5TextModel`; see the module's docstring."""

    @property
    def name(self) -> str:
        return "T5ForConditionalGeneration"

    apart = "an attention mask and a position bias"

    def insertion_module(self) -> nn.Module:
        return self.model.encoder_input

    def stacks(self) -> dict[str, list[nn.Module]]:
        return {"encoder": list(self.model.encoder.block), "decoder": list(self.model.decoder.block)}

    def attention(self, block: nn.Module) -> Optional[dict[str, Site]]:
        att = getattr(block.layer[0], "SelfAttention", None)
        layers = [getattr(att, n, None) for n in ("q", "k", "v", "o")]
        if not all(isinstance(m, nn.Linear) for m in layers):
            return None
        return {t: Site(m, slice(0, m.out_features)) for t, m in zip(("q", "k", "v", "o"), layers)}

    def mlp(self, block: nn.Module) -> Optional[MLP]:
        ff = block.layer[-1].DenseReluDense
        wi, wo = getattr(ff, "wi", None), getattr(ff, "wo", None)
        if not (isinstance(wi, nn.Linear) and isinstance(wo, nn.Linear)):
            return None  # a gated feed-forward (T5 v1.1) has two input layers
        return MLP(ff, wi, wo, channels_first=False)

    def norms(self, block: nn.Module) -> dict[str, nn.Module]:
        out = {"attn": block.layer[0].layer_norm}
        if len(block.layer) == 3:
            out["cross"] = block.layer[1].layer_norm
        out["mlp"] = block.layer[-1].layer_norm
        return out

    def residual_branches(self, block: nn.Module) -> dict[str, Branch]:
        out = {"attn": Branch(block.layer[0], block.layer[0].SelfAttention.o)}
        if len(block.layer) == 3:
            out["cross"] = Branch(block.layer[1], block.layer[1].EncDecAttention.o)
        out["mlp"] = Branch(block.layer[-1], block.layer[-1].DenseReluDense)
        return out

    def width(self, block: nn.Module) -> int:
        return block.layer[0].layer_norm.weight.shape[0]

    def bias_free_layers(self) -> dict[str, tuple[nn.Module, int]]:
        """Compacter's BitFit for T5: every Linear and RMS norm of both stacks' blocks, the final norms, the LM
        head."""
        names = self.module_names()
        out = {}
        for block in self.blocks:
            for m in block.modules():
                if isinstance(m, nn.Linear):
                    out[names[id(m)]] = (m, m.out_features)
                elif type(m).__name__ == "T5LayerNorm":
                    out[names[id(m)]] = (m, m.weight.shape[0])
        for name, norm in self.final_norms().items():
            out[name] = (norm, norm.weight.shape[0])
        out["lm_head"] = (self.model.lm_head, self.model.lm_head.out_features)
        return out

    @property
    def has_class_token(self) -> bool:
        return False

    def final_norms(self) -> dict[str, nn.Module]:
        return {"encoder.final_layer_norm": self.model.encoder.final_layer_norm,
                "decoder.final_layer_norm": self.model.decoder.final_layer_norm}  # fmt: skip

    def head_input(self, last: torch.Tensor) -> torch.Tensor:
        raise ConfigError(f"{self.name}: its head is the decoder, which reads the encoder's states and their mask")

    def reason(self, site: str, block: Optional[nn.Module] = None) -> str:
        blk = type(block).__name__ if block is not None else "T5Block"
        if site == "attention":
            return f"its {blk} has no self-attention with q, k, v and o Linears"
        if site == "mlp":
            return f"its {blk} has a gated feed-forward (wi_0, wi_1, wo), not one wi and one wo"
        if site.startswith("branch:"):
            return f"its {blk} has no {site.removeprefix('branch:')} residual branch (it has: attn, cross, mlp)"
        if site == "token_sequence":
            return "it has no norm before its blocks: tokens join after the embedding lookup (post_norm_pre)"
        if site == "deep_prompts":
            return (
                "its decoder blocks read the label tokens, not the encoder's sequence, so deep prompts would replace "
                "decoder tokens; use vpt_shallow (prompt tuning)"
            )
        return super().reason(site, block)
