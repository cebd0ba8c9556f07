"""``sam``: the Segment Anything Model (Kirillov et al., arXiv:2304.02643) as a backbone family that segments.

``sam:vit_b``, ``sam:vit_l`` and ``sam:vit_h`` are SAM's three sizes; ``sam:tiny`` is a small configuration (64 px
images, 8 px patches, width 32, two blocks) that trains in seconds on a CPU, for tests and the demo; ``sam:tiny_synth``
is ``sam:tiny`` with weights that ship in the package (image encoder and mask decoder trained on generated shapes by
``benchmarks/pretrain_sam.py``), loaded when no checkpoint is given. A model is timm's
SAM image encoder (``samvit_*``: timm converts the official weights, and methods, GPS and the anatomy reach it as any
timm model) whose classifier is replaced by :class:`SamMaskHead`, SAM's mask decoder. The model takes normalised
images ``[B, 3, H, W]`` and returns one mask's logits per image, ``[B, 1, H, W]`` (upsampled to the input size).

**The head.** In prompt mode ``none`` (the default, as GPS's SAM code) the decoder gets an empty sparse prompt and the
learned no-mask embedding over the image embedding's grid, with SAM's random-frequency position encoding of that grid:
the head is the mask decoder and ``no_mask_embed`` (4,058,596 parameters on every size), which every method trains
fully, as the authors (``model.head``: what :func:`~vpeft.methods.base.apply_method` unfreezes). The prompt
encoder's point, box and mask-input embeddings are not part of the model in mode ``none`` (nothing uses them).

**Prompts from the ground truth.** In prompt mode ``box`` each image's sparse prompt is its ground-truth mask's
bounding box (SAM's two corner embeddings), in mode ``points`` one positive click on the mask's innermost pixel (and
SAM's padding point), both as SAM's prompt encoder embeds them (:mod:`vpeft.seg_prompts` draws them, from the masks
the segment task publishes around each call); an image with an empty mask gets two not-a-point tokens. The head then
also holds the prompt encoder's four point embeddings and its not-a-point embedding (1,280 parameters at width 256),
trained with the decoder. Such a model needs each image's mask (training, evaluation, GPS's gradient pass):
``vpeft predict`` on new images refuses it.

**Weights.** :meth:`Sam.load_checkpoint` reads an official ``sam_vit_{b,l,h}_*.pth`` (``torch.load`` with
``weights_only=True``: no code is unpickled): ``image_encoder.*`` through timm's SAM key mapping, ``mask_decoder.*``
and the prompt encoder's ``no_mask_embed`` and position-encoding matrix (which GPS's released code leaves random by a
non-strict load under other names) into the head. Every key of the file must be one of SAM's and every tensor of the
model must come from it, with its shape: anything else fails naming the key. There are no hub weights for the whole
model (``--pretrained`` is refused). :func:`official_checkpoint` writes a model's weights in the same layout (the
shipped ``sam_tiny_synth.safetensors`` is one).

The ``segment-anything`` package (``pip install 'vpeft[sam]'``) provides the decoder; it is imported only when a SAM
model is built.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from ..backbones import Family, read_state_dict
from ..errors import CheckpointError, ConfigError, describe_mismatch
from ..registry import FAMILIES
from ..seg_prompts import current_masks, inner_points, mask_boxes
from ..zoo import FAMILY_ZOO

#: SAM's mask decoder, the same for every size: a two-way transformer of depth 2 (MLP 2048, 8 heads) at the prompt
#: width 256, and a 3-layer IoU head of width 256.
DECODER = {"decoder_depth": 2, "decoder_mlp_dim": 2048, "decoder_heads": 8, "decoder_iou_hidden": 256}

#: ``name: (timm architecture, its overrides, the decoder)``.
SIZES: dict[str, tuple[str, dict, dict]] = {
    "vit_b": ("samvit_base_patch16", {}, DECODER),
    "vit_l": ("samvit_large_patch16", {}, DECODER),
    "vit_h": ("samvit_huge_patch16", {}, DECODER),
    "tiny": (
        "samvit_base_patch16",
        {
            "img_size": 64,
            "patch_size": 8,
            "embed_dim": 32,
            "depth": 2,
            "num_heads": 2,
            "window_size": 4,
            "global_attn_indexes": [1],
            "neck_chans": 32,
        },
        {"decoder_depth": 2, "decoder_mlp_dim": 64, "decoder_heads": 2, "decoder_iou_hidden": 32},
    ),
}

#: Models that ship with weights (:data:`vpeft.zoo.FAMILY_ZOO`): ``sam:tiny_synth``, the tiny size trained on generated
#: shapes; a shipped model's ``arch`` is one of :data:`SIZES`.
SHIPPED = FAMILY_ZOO["sam"]

#: Prompt modes: ``none`` (an empty sparse prompt and the learned no-mask embedding, as GPS); ``box`` and ``points``
#: (the ground-truth mask's bounding box, or one click on its innermost pixel, with the no-mask embedding).
PROMPTS = ("none", "box", "points")
#: Hidden channels of the prompt encoder's mask-input path (SAM's, every size); only its checkpoint keys are read.
MASK_IN_CHANS = 16
#: Spec keys the family reads itself; every other key is a timm ``samvit`` keyword.
FAMILY_KEYS = ("prompt", *DECODER)
#: The prompt encoder's tensors that prompt mode ``none`` uses, and where they live in the model.
PROMPT_TENSORS = {
    "pe_layer.positional_encoding_gaussian_matrix": "head.pe_layer.positional_encoding_gaussian_matrix",
    "no_mask_embed.weight": "head.no_mask_embed.weight",
}
#: The prompt encoder's tensors that prompt modes ``box`` and ``points`` use as well.
POINT_TENSORS = {
    **{f"point_embeddings.{i}.weight": f"head.point_embeddings.{i}.weight" for i in range(4)},
    "not_a_point_embed.weight": "head.not_a_point_embed.weight",
}


def segment_anything():
    """The ``segment_anything.modeling`` module, or a one-line error saying how to install it."""
    try:
        import segment_anything.modeling as modeling
    except ImportError:
        raise ConfigError(
            "the sam backbone family needs the segment-anything package: pip install 'vpeft[sam]'"
        ) from None
    return modeling


class SamMaskHead(nn.Module):
    """SAM's mask decoder as a model's head: the neck's image embedding ``[B, C, h, w]`` to one mask's logits
    ``[B, 1, h * patch, w * patch]`` (the decoder's 4x-upscaled mask, bilinearly upsampled to the input size, as SAM's
    ``postprocess_masks``).

    Prompt mode ``none``: the sparse prompt is empty and the dense prompt is ``no_mask_embed`` at every position of the
    grid; the position encoding is SAM's random-frequency encoding (``pe_layer``, a buffer) of the grid. Each image is
    decoded with its own prompt (SAM's decoder repeats the image once per prompt, which assumes one image per call).
    The single-mask output is the decoder's first mask token (``multimask_output=False``).

    Args:
        dim: Width of the image embedding and of the decoder (the neck's channels; SAM's 256).
        patch: The encoder's patch size ``(h, w)``: the input size is the grid times the patch.
        prompt: Prompt mode (see :data:`PROMPTS`); ``box`` and ``points`` read each image's ground-truth mask from
            :func:`vpeft.seg_prompts.current_masks`.
        decoder_depth, decoder_mlp_dim, decoder_heads: The decoder's two-way transformer.
        decoder_iou_hidden: Width of the decoder's IoU head (part of the decoder, unused by the loss).
    """

    def __init__(
        self,
        dim: int,
        patch: tuple[int, int],
        prompt: str = "none",
        decoder_depth: int = 2,
        decoder_mlp_dim: int = 2048,
        decoder_heads: int = 8,
        decoder_iou_hidden: int = 256,
    ):
        super().__init__()
        sam = segment_anything()
        self.prompt, self.patch = prompt, tuple(patch)
        self.num_features = dim  # timm's reset_classifier reads it
        self.task = "segment"  # the one task it serves (TaskConfig.configure_model refuses the others)
        self.pe_layer = sam.prompt_encoder.PositionEmbeddingRandom(dim // 2)
        self.no_mask_embed = nn.Embedding(1, dim)
        if prompt != "none":  # SAM's point embeddings: negative, positive, box corner 1, box corner 2; and padding
            self.point_embeddings = nn.ModuleList(nn.Embedding(1, dim) for _ in range(4))
            self.not_a_point_embed = nn.Embedding(1, dim)
        transformer = sam.TwoWayTransformer(
            depth=decoder_depth, embedding_dim=dim, mlp_dim=decoder_mlp_dim, num_heads=decoder_heads
        )
        self.mask_decoder = sam.MaskDecoder(
            num_multimask_outputs=3,
            transformer=transformer,
            transformer_dim=dim,
            iou_head_depth=3,
            iou_head_hidden_dim=decoder_iou_hidden,
        )

    def reset(self, num_classes: int, pool_type: Optional[str] = None, **kwargs) -> None:
        """timm's ``reset_classifier`` calls this: the head predicts one binary mask, so only 1 output is valid (it
        keeps its weights: a SAM head is loaded, not made afresh)."""
        if num_classes != 1:
            raise ConfigError(
                f"a sam backbone predicts one binary mask per image: its head has 1 output, not {num_classes} "
                "(train it with --task segment on image and mask data, data.format=segfolder)"
            )

    def sparse_prompt(self, batch: int, size: tuple[int, int]) -> torch.Tensor:
        """The sparse prompt embeddings ``[B, 2, dim]`` of prompt mode ``box`` or ``points`` for images of ``size``
        (the input's), drawn from the published ground-truth masks as SAM's prompt encoder embeds a box, or a point
        with its padding point."""
        masks = current_masks()
        if masks is None:
            raise ConfigError(
                f"sam prompt {self.prompt!r} is drawn from each image's ground-truth mask, and none was given: a "
                f"model with prompt={self.prompt} segments images that have masks (training, evaluation); to "
                "predict masks for new images, train with prompt=none"
            )
        if masks.shape[0] != batch or tuple(masks.shape[-2:]) != tuple(size):
            raise ValueError(
                f"sam prompt {self.prompt!r}: the published masks {list(masks.shape)} are not the batch's "
                f"{batch} images of {list(size)}"
            )
        dev = masks.device
        if self.prompt == "box":
            boxes, found = mask_boxes(masks)
            coords, labels = boxes.view(batch, 2, 2), torch.tensor([2, 3], device=dev)
        else:
            points, found = inner_points(masks)
            coords, labels = torch.stack([points, torch.zeros_like(points)], 1), torch.tensor([1, -1], device=dev)
        labels = torch.where(found.view(-1, 1), labels.expand(batch, 2), -1)
        pe = self.pe_layer.forward_with_coords(coords + 0.5, tuple(size))  # SAM shifts to the pixel's centre
        pe = pe.masked_fill((labels == -1).unsqueeze(-1), 0.0)
        table = torch.cat([e.weight for e in self.point_embeddings] + [self.not_a_point_embed.weight])
        return pe + table[labels.masked_fill(labels == -1, 4)]

    def forward(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        if pre_logits:  # the image embedding: what the decoder reads
            return x
        b, c, h, w = x.shape
        dec = self.mask_decoder
        dense = self.no_mask_embed.weight.reshape(1, -1, 1, 1).expand(b, -1, h, w)
        image_pe = self.pe_layer((h, w)).unsqueeze(0).expand(b, -1, -1, -1)
        # SAM's predict_masks with one prompt per image: the output tokens, then the sparse prompt (empty in mode none)
        tokens = torch.cat([dec.iou_token.weight, dec.mask_tokens.weight], dim=0).unsqueeze(0).expand(b, -1, -1)
        if self.prompt != "none":
            sparse = self.sparse_prompt(b, (h * self.patch[0], w * self.patch[1]))
            tokens = torch.cat([tokens, sparse.to(tokens.dtype)], dim=1)
        hs, src = dec.transformer(x + dense, image_pe, tokens)
        upscaled = dec.output_upscaling(src.transpose(1, 2).reshape(b, c, h, w))
        hyper = dec.output_hypernetworks_mlps[0](hs[:, 1, :])  # the first mask token: the single-mask output
        masks = (hyper.unsqueeze(1) @ upscaled.flatten(2)).view(b, 1, *upscaled.shape[-2:])
        return F.interpolate(masks, (h * self.patch[0], w * self.patch[1]), mode="bilinear", align_corners=False)


@FAMILIES.register("sam")
class Sam(Family):
    """Segment Anything (vit_b, vit_l, vit_h, tiny): timm's SAM image encoder with SAM's mask decoder as the head, one
    binary mask per image; official sam_vit_*.pth weights with --checkpoint; needs pip install 'vpeft[sam]'.

    Spec keys: ``prompt`` (``none``, ``box`` or ``points``), the decoder's ``decoder_depth``, ``decoder_mlp_dim``,
    ``decoder_heads`` and ``decoder_iou_hidden``; any other key is a timm ``samvit`` keyword (``img_size``,
    ``window_size``, ...).
    """

    #: The model names, for ``vpeft list backbones`` (the shipped ones are listed with their descriptions).
    models = tuple(SIZES)

    def resolve(self, name: str, kwargs: dict) -> tuple[str, dict]:
        if name in SHIPPED:  # a shipped model: its size, the entry's options, then the spec's
            name, kwargs = SHIPPED[name].arch, {**SHIPPED[name].kwargs, **kwargs}
        if name not in SIZES:
            raise ConfigError(
                f"unknown sam backbone {name!r} (valid: {', '.join(SIZES)}); with shipped weights: {', '.join(SHIPPED)}"
            )
        arch, encoder, decoder = SIZES[name]
        kwargs = {**encoder, **decoder, "prompt": "none", **kwargs}
        prompt = kwargs["prompt"]
        if prompt not in PROMPTS:
            raise ConfigError(f"unknown sam prompt {prompt!r} (valid: {', '.join(PROMPTS)})")
        return arch, kwargs

    def create(self, arch: str, kwargs: dict, *, drop_path: float = 0.0, pretrained: bool = False) -> nn.Module:
        if pretrained:
            raise ConfigError(
                "the sam family has no hub weights for the whole model (image encoder, prompt encoder, mask "
                "decoder): download the official sam_vit_b_01ec64.pth (vit_l, vit_h) from "
                "github.com/facebookresearch/segment-anything and pass it with --checkpoint FILE"
            )
        import timm

        kwargs = dict(kwargs)
        head = {k: kwargs.pop(k) for k in FAMILY_KEYS if k in kwargs}
        kwargs.setdefault("drop_path_rate", drop_path)
        model = timm.create_model(arch, num_classes=0, **kwargs)
        model.head = SamMaskHead(model.num_features, model.patch_embed.proj.kernel_size, **head)
        return model

    def weights(self, name: str) -> Optional[Path]:
        if name not in SHIPPED:
            return None
        path = SHIPPED[name].file
        if not path.is_file():
            raise CheckpointError(
                f"backbone 'sam:{name}': its weights {path} are missing from this install; rebuild them with "
                "'python benchmarks/pretrain_sam.py' or reinstall vpeft"
            )
        return path

    def load_checkpoint(self, model: nn.Module, path) -> None:
        model.load_state_dict(official_state_dict(read_state_dict(path), model, source=f"checkpoint {path}"))

    # the anatomy is timm's: the encoder's sites, and ``model.head`` (the mask head) as the head


def _official_name(key: str) -> str:
    """A model key under its name in an official SAM checkpoint."""
    if key.startswith("head.mask_decoder."):
        return key.removeprefix("head.")
    for official, ours in {**PROMPT_TENSORS, **POINT_TENSORS}.items():
        if key == ours:
            return "prompt_encoder." + official
    return "image_encoder." + key.replace("mlp.fc", "mlp.lin")


def _prompt_encoder_shapes(head: SamMaskHead, grid: tuple[int, int], img_size: tuple[int, int]) -> dict:
    """The shapes of SAM's prompt encoder tensors (its state dict) at ``head``'s width, built on the meta device."""
    sam = segment_anything()
    with torch.device("meta"):
        ref = sam.PromptEncoder(
            embed_dim=head.num_features,
            image_embedding_size=grid,
            input_image_size=img_size,
            mask_in_chans=MASK_IN_CHANS,
        )
    return {k: tuple(v.shape) for k, v in ref.state_dict().items()}


def official_state_dict(sd: dict[str, torch.Tensor], model: nn.Module, source: str = "checkpoint") -> dict:
    """An official SAM checkpoint's state dict keyed as ``model`` (a ``sam`` family model) keys it, checked whole.

    ``image_encoder.*`` goes through timm's SAM key mapping, ``mask_decoder.*`` into the head; of
    ``prompt_encoder.*``, every key of SAM's prompt encoder must be there, and the ones the model uses
    (:data:`PROMPT_TENSORS`, and :data:`POINT_TENSORS` in prompt modes ``box`` and ``points``) go into the head. A
    missing, unexpected or misshapen tensor fails with a :class:`~vpeft.errors.CheckpointError` naming it (under
    its checkpoint name).
    """
    from timm.models.vision_transformer_sam import checkpoint_filter_fn

    head = model.head
    if not isinstance(head, SamMaskHead):
        raise CheckpointError(f"{source}: the model is not a sam family model (its head is {type(head).__name__})")
    if not any(k.startswith("image_encoder.") for k in sd):
        raise CheckpointError(
            f"{source} holds no image_encoder.* tensors: it is not an official SAM checkpoint (sam_vit_b_01ec64.pth)"
        )
    own = model.state_dict()
    grid = tuple(model.patch_embed.grid_size)
    img = tuple(model.patch_embed.img_size)
    prompt_shapes = _prompt_encoder_shapes(head, grid, img)
    used = {**PROMPT_TENSORS, **(POINT_TENSORS if head.prompt != "none" else {})}
    out, unexpected, mismatched = {}, [], []
    for key, value in sd.items():
        part, _, rest = key.partition(".")
        if part == "image_encoder" and rest:
            mapped = checkpoint_filter_fn({key: value}, model)  # timm's mapping, key by key
            target = next(iter(mapped)) if mapped else None
        elif part == "mask_decoder" and rest:
            target = "head." + key
        elif part == "prompt_encoder" and rest:
            if rest not in prompt_shapes:
                unexpected.append(key)
                continue
            if tuple(value.shape) != prompt_shapes[rest]:
                mismatched.append(f"{key} {tuple(value.shape)} vs {prompt_shapes[rest]}")
                continue
            target = used.get(rest)
            if target is None:  # a mask-input embedding (or in prompt mode none a point embedding): unused
                continue
        else:
            target = None
        if target is None or target not in own:
            unexpected.append(key)
            continue
        if tuple(value.shape) != tuple(own[target].shape):
            mismatched.append(f"{key} {tuple(value.shape)} vs {tuple(own[target].shape)}")
            continue
        out[target] = value
    missing = [f"prompt_encoder.{k}" for k in prompt_shapes if f"prompt_encoder.{k}" not in sd]
    missing += [_official_name(k) for k in own if k not in out and _official_name(k) not in sd]
    if missing or unexpected or mismatched:
        raise CheckpointError(
            f"{source} does not match the backbone (SAM, {type(model).__name__}): "
            + describe_mismatch(missing, unexpected, mismatched)
        )
    return out


def official_checkpoint(model: nn.Module, seed: int = 0) -> dict[str, torch.Tensor]:
    """The weights of ``model`` (a ``sam`` family model) keyed as an official SAM checkpoint: what
    :func:`official_state_dict` reads back to the same tensors (and the ``segment-anything`` package's ``Sam`` of the
    same sizes loads). ``image_encoder.*`` and ``mask_decoder.*`` are the model's, and the prompt encoder is whole:
    its position-encoding matrix and ``no_mask_embed`` (and in prompt modes ``box`` and ``points`` the point
    embeddings) from the model, the embeddings the model does not hold (those of points and boxes in prompt mode
    ``none``, and the mask input's) as ``segment-anything`` initialises
    them, drawn with ``seed`` (the global random state is left as it was)."""
    head = model.head
    if not isinstance(head, SamMaskHead):
        raise CheckpointError(f"the model is not a sam family model (its head is {type(head).__name__})")
    out = {_official_name(k): v.detach().clone().contiguous() for k, v in model.state_dict().items()}
    sam = segment_anything()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        prompt = sam.PromptEncoder(
            embed_dim=head.num_features,
            image_embedding_size=tuple(model.patch_embed.grid_size),
            input_image_size=tuple(model.patch_embed.img_size),
            mask_in_chans=MASK_IN_CHANS,
        )
    for key, value in prompt.state_dict().items():
        out.setdefault(f"prompt_encoder.{key}", value.contiguous())
    return out
