"""Backbones that ship inside the package: small ViTs pretrained on CIFAR-10 (``benchmarks/pretrain_c10.py``) and a
tiny SAM trained on generated segmentation data (``sam:tiny_synth``, ``benchmarks/pretrain_sam.py``).

The ViTs are plain timm ViTs at 32 x 32 input with patch 8, so every method that works on a timm ViT works on them,
and the demo and the mini-VTAB results need no download. Use them by name anywhere a backbone is given::

    vpeft train --backbone vit_c10_base ...
    create_backbone("vit_c10_small", num_classes=10)
    vpeft train --backbone sam:tiny_synth --task segment ...
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"


@dataclass(frozen=True)
class ZooEntry:
    arch: str
    kwargs: dict = field(default_factory=dict)
    about: str = ""

    @property
    def file(self) -> Path:
        return WEIGHTS_DIR / f"{self.name}.safetensors"

    name: str = ""


def _entry(name: str, arch: str, about: str, **kwargs) -> ZooEntry:
    return ZooEntry(arch=arch, kwargs=kwargs, about=about, name=name)


ZOO: dict[str, ZooEntry] = {
    e.name: e
    for e in [
        _entry(
            "vit_c10_small",
            "vit_tiny_patch16_224",
            "ViT, 32 px, patch 8, width 96, depth 6, 3 heads; CIFAR-10 pretrained (iDAT's small teacher)",
            img_size=32,
            patch_size=8,
            embed_dim=96,
            depth=6,
            num_heads=3,
        ),
        _entry(
            "vit_c10_base",
            "vit_tiny_patch16_224",
            "ViT, 32 px, patch 8, width 192, depth 6, 6 heads; CIFAR-10 pretrained (the demo's backbone)",
            img_size=32,
            patch_size=8,
            embed_dim=192,
            depth=6,
            num_heads=6,
        ),
    ]
}


#: Backbones of the other families that ship inside the package: ``{family: {model name: entry}}``. An entry's
#: ``arch`` is the family's model it builds (``kwargs`` on top); its weights, ``weights/<entry.name>.safetensors``, are
#: the whole model's in the family's checkpoint layout and load when no checkpoint is given (``sam:tiny_synth``).
FAMILY_ZOO: dict[str, dict[str, ZooEntry]] = {
    "sam": {
        "tiny_synth": _entry(
            "sam_tiny_synth",
            "tiny",
            "SAM tiny (64 px, patch 8, width 32, 2 blocks; decoder width 32), image encoder and mask decoder trained "
            "together on 3,000 generated shape images (benchmarks/pretrain_sam.py)",
        ),
    },
}


def timm_model(name: str, **kwargs):
    """The timm model of a zoo entry with random weights (``kwargs`` override the entry's, e.g. ``num_classes``)."""
    import timm

    entry = ZOO[name]
    return timm.create_model(entry.arch, **{**entry.kwargs, **kwargs})
