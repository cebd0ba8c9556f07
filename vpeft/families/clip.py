"""``clip``: CLIP (Radford et al., arXiv:2103.00020) as a backbone family that classifies by text.

``clip:vit_b16``, ``clip:vit_b32`` and ``clip:vit_l14`` are OpenAI's CLIP sizes; ``clip:tiny`` is a small random
configuration (32 px images, 8 px patches, both towers 32 wide, two blocks each, joint width 16) for tests and the
demo. A model is timm's CLIP image tower (``vit_*_clip_*``: timm converts the official weights, and methods, GPS, GIST
and the anatomy reach it as any timm ViT) whose classifier is :class:`ClipHead`: CLIP's image projection, then
``logit_scale * cos(image, text)`` against the text tower's features of one prompt per class ("a photo of a
{class}."). The text tower is ``open_clip``'s (``pip install 'vpeft[clip]'``: its BPE vocabulary ships with it, so
tokenising works offline).

**What trains.** The projection, the text tower and the logit scale (a buffer) are frozen: a method tunes the image
tower (LoRA, adapters, BitFit, VPT, SSF, ...), or the prompts (``coop``, ``maple``, :mod:`vpeft.methods.clip_prompts`),
with the text classifier as it is. ``linear`` is a linear probe: a class-embedding matrix initialised from the text
classifier (so it starts at the zero-shot prediction) trains on the normalised image features. ``full`` trains both
towers. The class names come from the data (the ``clip_classify`` task binds them: :meth:`ClipHead.set_classes`).

**Weights.** ``--checkpoint`` reads one local file: OpenAI's ``ViT-B-16.pt`` (a TorchScript archive: its tensors are
read with ``torch.jit.load``, which runs no Python code) or an ``open_clip`` state dict (``.bin``, ``.pt``,
``.safetensors``, read with ``weights_only``). ``visual.*`` goes through timm's OpenAI-CLIP key mapping (``visual.proj``
into the head's projection), the text keys into the head's text tower, ``logit_scale`` into its buffer; every tensor
must match, anything else fails naming the key. There are no hub weights (``--pretrained`` is refused).
"""

from __future__ import annotations

import math
import zipfile
from contextlib import nullcontext
from pathlib import Path
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from ..backbones import Family, read_state_dict
from ..errors import CheckpointError, ConfigError, describe_mismatch
from ..registry import FAMILIES

#: The joint embedding's width and the text tower of each size.
TEXT_B = {"joint_dim": 512, "text_width": 512, "text_heads": 8, "text_layers": 12}
TEXT_L = {"joint_dim": 768, "text_width": 768, "text_heads": 12, "text_layers": 12}
#: ``name: (timm architecture, its overrides, the text tower)``; OpenAI's CLIPs use QuickGELU in both towers.
SIZES: dict[str, tuple[str, dict, dict]] = {
    "vit_b16": ("vit_base_patch16_clip_224", {}, TEXT_B),
    "vit_b32": ("vit_base_patch32_clip_224", {}, TEXT_B),
    "vit_l14": ("vit_large_patch14_clip_224", {}, TEXT_L),
    "tiny": (
        "vit_base_patch16_clip_224",  # both towers 32 wide; the joint embedding 16
        {"img_size": 32, "patch_size": 8, "embed_dim": 32, "depth": 2, "num_heads": 2},
        {"joint_dim": 16, "text_width": 32, "text_heads": 2, "text_layers": 2},
    ),
}
#: CLIP's tokenizer: 77 positions, a 49,408-token BPE vocabulary (start 49406, end 49407: the end token's state is
#: the text feature).
CONTEXT_LENGTH, VOCAB_SIZE = 77, 49408
#: Spec keys the family reads itself; every other key is a timm keyword of the image tower.
FAMILY_KEYS = (*TEXT_B, "quick_gelu")
#: The prompt of a class when no method learns one (CLIP's own).
DEFAULT_TEMPLATE = "a photo of a {}."
#: CoOp's zero-shot prompts per dataset (``trainers/zsclip.py`` ``CUSTOM_TEMPLATES``), by vpeft's short names; a
#: ``template`` that is not one of these keys is used as it is ("{}" stands for the class name).
TEMPLATES = {
    "default": DEFAULT_TEMPLATE,
    "pets": "a photo of a {}, a type of pet.",
    "flowers": "a photo of a {}, a type of flower.",
    "aircraft": "a photo of a {}, a type of aircraft.",
    "dtd": "{} texture.",
    "eurosat": "a centered satellite photo of {}.",
    "cars": "a photo of a {}.",
    "food101": "a photo of {}, a type of food.",
    "sun397": "a photo of a {}.",
    "caltech101": "a photo of a {}.",
    "ucf101": "a photo of a person doing {}.",
    "imagenet": "a photo of a {}.",
}
#: Keys of OpenAI's TorchScript archives that are not tensors of the model.
ARCHIVE_EXTRAS = ("input_resolution", "context_length", "vocab_size")


def open_clip():
    """The ``open_clip`` package, or a one-line error saying how to install it."""
    try:
        import open_clip as oc
    except ImportError:
        raise ConfigError(
            "the clip backbone family needs the open_clip_torch package: pip install 'vpeft[clip]'"
        ) from None
    return oc


def tokenize(texts: list[str]) -> torch.Tensor:
    """CLIP's tokens of ``texts``, int64 ``[N, 77]`` (start, BPE tokens, end, zeros); a text longer than 77 tokens is
    cut, keeping its end token (open_clip's tokenizer)."""
    with torch.device("cpu"):  # host tokens, also where a model is being built on the meta device
        return open_clip().tokenize(list(texts), context_length=CONTEXT_LENGTH)


class ClipHead(nn.Module):
    """CLIP's classifier as a model's head: pooled image features ``[B, width]`` (the class token after ``ln_post``)
    to ``logit_scale * cos(proj(x), text(class prompt))``, ``[B, classes]``.

    The text features of the class prompts are cached while nothing on the text side can change (no prompt learner,
    no text parameter that requires a gradient, the same parameter versions): a frozen classifier costs one text
    pass per change, not per batch. A prompt learner (:attr:`learner`, set by a method) supplies the context vectors
    that replace the prompt's first tokens, and deep prompts for the text blocks.

    Args:
        width: The image tower's width (768 for ViT-B).
        joint_dim: The joint embedding's width (512 for ViT-B).
        text_width, text_heads, text_layers: The text tower.
        quick_gelu: QuickGELU in the text tower (OpenAI's weights); else GELU.
    """

    def __init__(
        self,
        width: int,
        joint_dim: int = 512,
        text_width: int = 512,
        text_heads: int = 8,
        text_layers: int = 12,
        quick_gelu: bool = True,
    ):
        super().__init__()
        transformer = open_clip().transformer
        self.num_features = width  # timm reads it
        self.joint_dim = joint_dim
        self.proj = nn.Linear(width, joint_dim, bias=False)
        act = transformer.QuickGELU if quick_gelu else nn.GELU
        self.text = transformer.TextTransformer(
            context_length=CONTEXT_LENGTH,
            vocab_size=VOCAB_SIZE,
            width=text_width,
            heads=text_heads,
            layers=text_layers,
            output_dim=joint_dim,
            act_layer=act,
        )
        self.task = "clip_classify"  # the one task it serves (TaskConfig.configure_model refuses the others)
        self.register_buffer("logit_scale", torch.tensor(math.log(1 / 0.07)))
        self.register_buffer("class_tokens", torch.zeros(0, CONTEXT_LENGTH, dtype=torch.long), persistent=False)
        self.num_classes = 0
        self.class_names: Optional[list[str]] = None
        self.template = DEFAULT_TEMPLATE
        #: A linear probe's class embeddings (the ``linear`` method), initialised from the text classifier.
        self.register_parameter("probe", None)
        self._learner = None  # a prompt learner (not a submodule: it lives in the backbone's extras)
        self._cache: Optional[tuple] = None

    # ---- classes --------------------------------------------------------------------------------------------------
    def reset(self, num_classes: int, pool_type: Optional[str] = None, **kwargs) -> None:
        """timm's ``reset_classifier``: the number of classes the class names must give (the head keeps its
        weights: a CLIP head is loaded, not made afresh)."""
        self.num_classes = num_classes

    def set_classes(self, names: list[str], template: str = DEFAULT_TEMPLATE) -> None:
        """The classes, in label order, and the prompt each is read in: a key of :data:`TEMPLATES` or a string where
        ``{}`` stands for the name."""
        names = [str(n) for n in names]
        template = TEMPLATES.get(template, template)
        if self.num_classes and len(names) != self.num_classes:
            raise ConfigError(f"{len(names)} class names for a head of {self.num_classes} classes")
        if "{}" not in template:
            raise ConfigError(f"class prompt template {template!r} has no {{}} for the class name")
        self.class_names, self.template = names, template
        self.class_tokens = tokenize([template.format(n.replace("_", " ")) for n in names]).to(self.proj.weight.device)
        self._cache = None

    @property
    def learner(self):
        """The prompt learner (a module with ``class_features(head)``) that replaces the template, or None."""
        return self._learner

    def set_learner(self, module) -> None:
        """Classify by ``module``'s prompts (it lives in the backbone's ``extras``, so it is not a submodule here:
        its parameters are counted and saved once)."""
        object.__setattr__(self, "_learner", module)
        self._cache = None

    def start_probe(self) -> nn.Parameter:
        """Turn the head into a linear probe (the ``linear`` method): trainable class embeddings, initialised to the
        normalised text features of the class prompts, which then replace the text classifier."""
        if self.class_names is None:
            raise ConfigError("a clip linear probe starts from the text classifier: set the class names first")
        with torch.no_grad():
            self.probe = nn.Parameter(F.normalize(self.encode_classes().float(), dim=-1))
        return self.probe

    def trained_parameters(self, method) -> list[nn.Parameter]:
        """What every run of ``method`` trains in the head: a linear probe's class embeddings for ``linear``,
        nothing otherwise (the projection, the text tower and the logit scale stay frozen)."""
        if getattr(method, "name", None) == "linear":
            return [self.probe if self.probe is not None else self.start_probe()]
        return []

    # ---- text ------------------------------------------------------------------------------------------------------
    def encode_text(
        self,
        tokens: torch.Tensor,
        context: Optional[torch.Tensor] = None,
        deep: Optional[list[torch.Tensor]] = None,
    ) -> torch.Tensor:
        """Text features ``[N, joint_dim]`` (not normalised) of ``tokens`` ``[N, 77]``, as open_clip's text tower,
        with ``context`` ``[n, width]`` (or ``[N, n, width]``) replacing the token embeddings at positions ``1..n``
        before the position embedding (CoOp, MaPLe), and ``deep[i]`` ``[n, width]`` replacing positions ``1..n``
        before text block ``i + 1`` (MaPLe's deeper prompts)."""
        text = self.text
        x = text.token_embedding(tokens)
        n = 0
        if context is not None:
            n = context.shape[-2]
            ctx = context.expand(len(x), -1, -1) if context.dim() == 2 else context
            x = torch.cat([x[:, :1], ctx.to(x.dtype), x[:, 1 + n :]], dim=1)
        x = x + text.positional_embedding.to(x.dtype)
        for i, block in enumerate(text.transformer.resblocks):
            if deep and 1 <= i <= len(deep):
                d = deep[i - 1]
                x = torch.cat([x[:, :1], d.to(x.dtype).expand(len(x), -1, -1), x[:, 1 + d.shape[0] :]], dim=1)
            x = block(x, attn_mask=text.attn_mask)
        x = text.ln_final(x)
        pooled = x[torch.arange(len(x), device=x.device), tokens.argmax(dim=-1)]  # the end token (the largest id)
        return pooled @ text.text_projection

    def encode_classes(self) -> torch.Tensor:
        """The class prompts' text features ``[classes, joint_dim]`` (not normalised): through the prompt learner
        where there is one, else the template's; computed afresh while something on the text side trains (a gradient
        is being recorded and a text or learner parameter requires one), else cached until a parameter changes (its
        version) or moves."""
        if self.class_names is None:
            raise ConfigError(
                "a clip backbone classifies by its classes' names, and none were given: train it with --task "
                "clip_classify on data that names its classes (classes.txt, class folders, CoOp's split JSON)"
            )
        learner = self._learner
        params = list(self.text.parameters()) + (list(learner.parameters()) if learner is not None else [])
        compute = (
            (lambda: learner.class_features(self))
            if learner is not None
            else (lambda: self.encode_text(self.class_tokens))
        )
        if torch.is_grad_enabled() and any(p.requires_grad for p in params):
            return compute()
        key = (self.class_tokens.device, tuple(p._version for p in params), tuple(p.data_ptr() for p in params))
        if self._cache is None or self._cache[0] != key:
            dev = self.class_tokens.device.type
            plain = torch.autocast(dev, enabled=False) if dev in ("cpu", "cuda") else nullcontext()
            with torch.no_grad(), plain:  # in float32, also when the batch runs under autocast
                self._cache = (key, compute().float())
        return self._cache[1]

    def forward(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        if pre_logits:  # the pooled image features, before the projection
            return x
        image = F.normalize(self.proj(x), dim=-1)
        classes = self.probe if self.probe is not None else self.encode_classes()
        classes = F.normalize(classes, dim=-1)
        return self.logit_scale.exp() * image @ classes.to(image.dtype).t()


@FAMILIES.register("clip")
class Clip(Family):
    """CLIP (vit_b16, vit_b32, vit_l14, tiny): timm's CLIP image tower with a text classifier of class prompts as the
    head (open_clip's text tower); OpenAI's ViT-B-16.pt or an open_clip checkpoint with --checkpoint; task
    clip_classify; needs pip install 'vpeft[clip]'.

    Spec keys: ``quick_gelu`` (default true: OpenAI's weights; false for open_clip's GELU models), the joint and
    text widths ``joint_dim``, ``text_width``, ``text_heads``, ``text_layers``; any other key is a timm keyword of
    the image tower (``img_size``, ...).
    """

    models = tuple(SIZES)

    def resolve(self, name: str, kwargs: dict) -> tuple[str, dict]:
        if name not in SIZES:
            raise ConfigError(f"unknown clip backbone {name!r} (valid: {', '.join(SIZES)})")
        arch, vision, text = SIZES[name]
        return arch, {**vision, **text, "quick_gelu": True, **kwargs}

    def create(self, arch: str, kwargs: dict, *, drop_path: float = 0.0, pretrained: bool = False) -> nn.Module:
        if pretrained:
            raise ConfigError(
                "the clip family has no hub weights: pass OpenAI's ViT-B-16.pt (or an open_clip checkpoint file) "
                "with --checkpoint FILE"
            )
        import timm

        kwargs = dict(kwargs)
        head = {k: kwargs.pop(k) for k in FAMILY_KEYS if k in kwargs}
        if head.get("quick_gelu", True):
            kwargs.setdefault("act_layer", "quick_gelu")
        kwargs.setdefault("drop_path_rate", drop_path)
        model = timm.create_model(arch, num_classes=0, **kwargs)
        model.head = ClipHead(model.num_features, **head)
        model.reset_classifier = model.head.reset  # timm's would put a fresh Linear in the text classifier's place
        return model

    def load_checkpoint(self, model: nn.Module, path) -> None:
        model.load_state_dict(official_state_dict(read_clip_file(path), model, source=f"checkpoint {path}"))


def read_clip_file(path) -> dict[str, torch.Tensor]:
    """The tensors of a CLIP checkpoint file: OpenAI's TorchScript archive (tensors only, through ``torch.jit.load``)
    or a state dict (:func:`~vpeft.backbones.read_state_dict`)."""
    path = Path(path)
    if path.is_file() and zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as z:
            scripted = any(n.endswith("/code/__torch__.py") or "/code/" in n for n in z.namelist())
        if scripted:
            try:
                return dict(torch.jit.load(str(path), map_location="cpu").state_dict())
            except Exception as e:  # noqa: BLE001 - any failure to read the archive is the file's
                raise CheckpointError(f"checkpoint {path}: cannot read the TorchScript archive: {e}") from None
    return read_state_dict(path)


def official_state_dict(sd: dict[str, torch.Tensor], model: nn.Module, source: str = "checkpoint") -> dict:
    """A CLIP checkpoint's state dict (OpenAI's or open_clip's keys) keyed as ``model`` (a ``clip`` family model),
    checked whole: a missing, unexpected or misshapen tensor is a :class:`~vpeft.errors.CheckpointError` naming it."""
    from timm.models.vision_transformer import _convert_openai_clip

    head = model.head
    if not isinstance(head, ClipHead):
        raise CheckpointError(f"{source}: the model is not a clip family model (its head is {type(head).__name__})")
    if "visual.class_embedding" not in sd:
        raise CheckpointError(
            f"{source} holds no visual.class_embedding: it is not an OpenAI or open_clip CLIP checkpoint"
        )
    sd = {k: v for k, v in sd.items() if k not in ARCHIVE_EXTRAS}
    own = model.state_dict()
    out, unexpected, mismatched = {}, [], []
    names = {}  # model key -> checkpoint key, for messages
    for key, value in sd.items():
        if key == "visual.proj":
            target, value = "head.proj.weight", value.t()
        elif key.startswith("visual."):
            mapped = _convert_openai_clip({key: value}, model)
            mapped.pop("head.bias", None)
            if not mapped:
                unexpected.append(key)
                continue
            target, value = next(iter(mapped.items()))
        elif key == "logit_scale":
            target = "head.logit_scale"
        else:
            target = "head.text." + key
        if target not in own:
            unexpected.append(key)
            continue
        if tuple(value.shape) != tuple(own[target].shape):
            mismatched.append(f"{key} {tuple(value.shape)} vs {tuple(own[target].shape)}")
            continue
        out[target], names[target] = value, key
    missing = [_checkpoint_name(k) for k in own if k not in out]
    if missing or unexpected or mismatched:
        raise CheckpointError(
            f"{source} does not match the backbone (CLIP, {type(model).__name__}): "
            + describe_mismatch(missing, unexpected, mismatched)
        )
    return out


def _checkpoint_name(key: str) -> str:
    """A model key under its name in an OpenAI / open_clip checkpoint (for messages)."""
    if key == "head.proj.weight":
        return "visual.proj"
    if key == "head.logit_scale":
        return "logit_scale"
    if key in ("norm.weight", "norm.bias"):
        return "visual.ln_post." + key.split(".")[1]
    if key.startswith("head.text."):
        return key.removeprefix("head.text.")
    for ours, theirs in _REVERSE:
        key = key.replace(ours, theirs)
    return "visual." + key


#: timm's image-tower names back to OpenAI's (the reverse of timm's ``_convert_openai_clip``), for messages.
_REVERSE = (
    ("blocks.", "transformer.resblocks."),
    ("norm_pre", "ln_pre"),
    ("norm1", "ln_1"),
    ("norm2", "ln_2"),
    ("attn.qkv.", "attn.in_proj_"),
    ("attn.proj", "attn.out_proj"),
    ("mlp.fc1", "mlp.c_fc"),
    ("mlp.fc2", "mlp.c_proj"),
    ("patch_embed.proj", "conv1"),
    ("pos_embed", "positional_embedding"),
    ("cls_token", "class_embedding"),
)
