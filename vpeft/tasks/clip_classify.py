"""``clip_classify``: image classification by CLIP's text classifier (the GIST paper's Table 4, CoOp's and MaPLe's
few-shot protocol): each class is a text prompt ("a photo of a {class}."), the logits are ``logit_scale *
cos(image, text)``, the loss cross-entropy, the metric top-1 accuracy.

The class names come from the data (a ``coop`` split file, a ``folder`` layout's class folders, a ``classes.txt``)
and are bound to the model before the method applies (:meth:`ClipClassifyConfig.configure_model`); a run records
them in ``result.json``, so evaluating the run folder later needs no data. Everything else is ``classify``'s.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from ..errors import ConfigError
from ..families.clip import TEMPLATES, ClipHead
from ..registry import TASKS
from .classify import ClassifyConfig


@TASKS.register("clip_classify")
@dataclass(kw_only=True)
class ClipClassifyConfig(ClassifyConfig):
    """Classification by CLIP's text classifier: one prompt per class name, ``logit_scale * cos(image, text)``,
    cross-entropy, top-1 accuracy. Needs a clip backbone and data that names its classes.

    Args:
        template: The class prompt when no method learns one: a key of CoOp's per-dataset prompts (``default``: "a
            photo of a {}.", ``flowers``: "a photo of a {}, a type of flower.", ``dtd``: "{} texture.",
            ``ucf101``: "a photo of a person doing {}.", ``pets``, ``aircraft``, ``eurosat``, ``cars``,
            ``food101``, ``sun397``, ``caltech101``, ``imagenet``) or a string with ``{}`` for the name. ``coop``
            and ``maple`` build their own prompts ("<context> {class}.").
    """

    template: str = "default"

    needs_class_names = True

    def __post_init__(self):
        if self.template not in TEMPLATES and "{}" not in self.template:
            raise ConfigError(
                f"task clip_classify: template {self.template!r} is neither a known one ({', '.join(TEMPLATES)}) "
                "nor a prompt with {} for the class name"
            )

    @property
    def prompt(self) -> str:
        """The template as a prompt string."""
        return TEMPLATES.get(self.template, self.template)

    def configure_model(self, backbone, class_names: Optional[list[str]]) -> None:
        head = backbone.head
        if not isinstance(head, ClipHead):
            raise ConfigError(
                f"task clip_classify classifies by CLIP's text tower: it needs a clip backbone (clip:vit_b16, ...), "
                f"not {backbone.spec!r}"
            )
        if not class_names:
            raise ConfigError(
                "task clip_classify reads the class names from the data, and it names none: add a classes.txt "
                "('<label> <name>' lines), use class folders (data.format=folder) or CoOp's split file "
                "(data.format=coop)"
            )
        head.set_classes(list(class_names), self.prompt)
