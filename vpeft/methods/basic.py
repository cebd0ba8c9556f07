"""Methods that add no modules: linear probing, full fine-tuning and BitFit (Ben Zaken et al., arXiv:2106.10199)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..registry import METHODS
from .base import MethodConfig


@METHODS.register("linear")
@dataclass(kw_only=True)
class LinearConfig(MethodConfig):
    """Linear probing: only the classifier head trains; the backbone stays frozen."""

    identity_init = True
    mergeable = True

    def inject(self, backbone) -> None:
        pass

    def extra_trainable_count(self, backbone) -> int:
        return 0


@METHODS.register("full")
@dataclass(kw_only=True)
class FullConfig(MethodConfig):
    """Full fine-tuning: every backbone parameter trains (the upper baseline of every PETL table)."""

    identity_init = True
    mergeable = True
    trains_backbone = True

    def inject(self, backbone) -> None:
        head = {id(p) for p in backbone.head.parameters()}  # the head trains as the head says (CLIP's text: frozen)
        for p in backbone.model.parameters():
            if id(p) not in head:
                p.requires_grad_(True)

    def extra_trainable_count(self, backbone) -> int:
        head = {id(p) for p in backbone.head.parameters()}
        return sum(p.numel() for p in backbone.model.parameters() if id(p) not in head)


def _bias_params(backbone):
    head = {id(m) for m in backbone.head.modules()}  # a head of several layers (SAM's mask decoder) is one head
    for module in backbone.model.modules():
        bias = getattr(module, "bias", None)
        if isinstance(bias, nn.Parameter) and id(module) not in head:
            yield bias


@METHODS.register("bitfit")
@dataclass(kw_only=True)
class BitFitConfig(MethodConfig):
    """BitFit: every bias term trains (linear, convolution and normalisation biases), plus the head.

    On ViT-B/16 this is 102,912 parameters without the head: per block the biases of norm1 (768), qkv (2,304),
    proj (768), norm2 (768), fc1 (3,072) and fc2 (768), plus the patch embedding's and the final norm's.

    A model whose layers have no biases gets zero-initialised ones where its anatomy lists them
    (:meth:`~vpeft.anatomy.Anatomy.bias_free_layers`), added to those layers' outputs: on T5 every Linear and RMS
    norm of encoder and decoder and the LM head, as Compacter's BitFit for T5 (282,496 on T5-base).
    """

    identity_init = True
    mergeable = True
    trains_backbone = True

    def inject(self, backbone) -> None:
        for p in _bias_params(backbone):
            p.requires_grad_(True)
        added = backbone.anatomy.bias_free_layers()
        if added:  # none on models with biases: their state dicts stay as they were
            biases = nn.ParameterDict()
            for name, (module, width) in added.items():
                ref = next(module.parameters())
                bias = nn.Parameter(torch.zeros(width, device=ref.device, dtype=ref.dtype))
                biases[name.replace(".", "_")] = bias
                backbone.register_module_hook(module, post=lambda x, y, b=bias: y + b)
            backbone.extras[self.name] = biases

    def extra_trainable_count(self, backbone) -> int:
        added = sum(width for _, width in backbone.anatomy.bias_free_layers().values())
        return sum(p.numel() for p in _bias_params(backbone)) + added
