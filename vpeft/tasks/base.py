"""The task contract: what a run learns to predict, and how it is scored.

A task config (:class:`TaskConfig`, registered in :data:`vpeft.registry.TASKS`) says which data formats and which
kind of labels it reads, how many outputs its head has, the objective that trains it by default, and its primary
metric (which ``train.select=val``, ``vpeft report --tune val`` and the reports' tables use). :meth:`TaskConfig.build`
makes the :class:`Task` a run uses: it prepares each batch on the device (:meth:`Task.prepare`: augmentation and
normalisation of the images), holds the default loss and the prediction, and gives a fresh :class:`Metric` per split.

Batches are mappings: ``{"image": uint8 [B, 3, H, W], "label": labels}`` as they come from the data, ``"image"``
normalised float32 after :meth:`Task.prepare`. In training with label mixing or smoothing (``train.mixup``,
``train.cutmix``, ``train.smoothing``: classification only) the prepared batch also holds ``"target"``, the soft
targets (float ``[B, C]``, rows summing to 1) that the objective trains on, while ``"label"`` stays the hard labels
the training metric counts.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Any, ClassVar, Optional

import torch

from ..config_base import BaseConfig
from ..data.entries import layout
from ..data.vtab import normalize
from ..errors import ConfigError
from ..registry import FORMATS

Batch = Mapping[str, torch.Tensor]

#: The train options that turn class labels into soft targets (:meth:`TaskConfig.check_training`).
MIXING_OPTIONS = ("mixup", "cutmix", "smoothing")


class Metric:
    """The running state of a split's metrics. :meth:`update` keeps everything on the device (no host read);
    :meth:`sync` combines the states of the processes of a ``torchrun`` run; :meth:`compute` reads the values once."""

    def update(self, outputs: torch.Tensor, batch: Batch) -> None:
        """Add a batch: the model's ``outputs`` and the batch (its ``"label"``)."""
        raise NotImplementedError

    def sync(self, dist) -> None:
        """Combine this process's state with the other processes' (``dist``: a :class:`~vpeft.engine.distributed.
        Dist`); a no-op in a single process."""
        raise NotImplementedError

    def compute(self) -> dict[str, float]:
        """The metrics, by name."""
        raise NotImplementedError


@dataclass(kw_only=True)
class TaskConfig(BaseConfig):
    """Base of every task config.

    Class attributes a task sets:
        labels: What the data's label column holds: ``int`` class labels or ``float`` targets.
        outputs: The head's size when the task fixes it (regression: 1); null: read from the data
            (:meth:`num_outputs`).
        head_key: The ``result.json`` key that records the head's size.
        default_objective: The objective a run trains with when its config names none.
        objectives: The objectives that train this task; null: any objective that does not name its own tasks (an
            objective class may declare ``tasks``, the task names it serves).
        mixes_labels: Its task mixes and smooths class labels into soft targets (``train.mixup``, ``train.cutmix``,
            ``train.smoothing``); the other tasks refuse those options.
        needs_class_names: The model needs the data's class names (:meth:`configure_model`): CLIP's text classifier.
        inputs: What the model reads: ``image`` or ``text`` (token ids from :meth:`text_encoder`); a data format
            holds one kind (:attr:`~vpeft.data.entries.Layout.kind`).
    """

    name: ClassVar[str]
    labels: ClassVar[str] = "int"
    outputs: ClassVar[Optional[int]] = None
    head_key: ClassVar[str] = "num_outputs"
    default_objective: ClassVar[str] = "ce"
    objectives: ClassVar[Optional[tuple[str, ...]]] = None
    mixes_labels: ClassVar[bool] = False
    needs_class_names: ClassVar[bool] = False
    inputs: ClassVar[str] = "image"

    @property
    def primary_metric(self) -> str:
        """The metric that selects epochs and grid points and heads the reports' tables."""
        raise NotImplementedError

    def configure_model(self, backbone, class_names: Optional[list[str]]) -> None:
        """Bind what the model needs of the task before the method applies: the class names where
        :attr:`needs_class_names` (CLIP's text classifier); a head that serves one task only (``head.task``) refuses
        the others."""
        serves = getattr(backbone.head, "task", None)
        serves = (serves,) if isinstance(serves, str) else serves
        if serves is not None and self.name not in serves:
            raise ConfigError(
                f"backbone {backbone.spec!r} does task {' or '.join(map(repr, serves))}, not {self.name!r}: train it "
                f"with --task {' or --task '.join(serves)}"
            )

    @property
    def higher_is_better(self) -> bool:
        """Whether a larger :attr:`primary_metric` is better."""
        return True

    def formats(self) -> list[str]:
        """The registered data formats this task reads (those of its :attr:`inputs` whose label column holds
        :attr:`labels`)."""
        return [
            n
            for n in FORMATS.names()
            if self.labels in FORMATS.get(n).label_kinds and FORMATS.get(n).kind == self.inputs
        ]

    def text_encoder(self, backbone, data=None) -> Optional[Callable]:
        """Texts -> int64 token ids ``[N, L]`` for a task whose :attr:`inputs` are text (the backbone's tokenizer;
        ``data``: the run's data section, for a task that formats the texts by the dataset); None for image tasks."""
        return None

    def check_data(self, dc) -> None:
        """Fail with a :class:`ConfigError` where the data folder's own labels are not this task's kind (a layout
        whose folders differ, ``glue``: STS-B holds scores, the other tasks classes; ``label_kind``)."""
        lay = layout(dc.format) if dc.format in FORMATS else None
        kind_of = getattr(lay, "label_kind", None)
        kind = kind_of(dc.root, getattr(dc, "glue_task", None)) if kind_of is not None and dc.root else None
        if kind is not None and kind != self.labels:
            what = {"int": "class labels", "float": "real-valued targets"}
            hint = lay.task_hint(kind) if hasattr(lay, "task_hint") else ""
            raise ConfigError(
                f"task {self.name!r} reads {what.get(self.labels, self.labels)}, and {dc.root} holds "
                f"{what.get(kind, kind)}" + (f": {hint}" if hint else "")
            )

    def check(self, data_format: str, objective: Any) -> None:
        """Fail with a :class:`ConfigError` unless this task reads ``data_format`` and ``objective`` trains it."""
        if data_format in FORMATS and layout(data_format).kind != self.inputs:
            raise ConfigError(
                f"task {self.name!r} reads {self.inputs}, and data format {data_format!r} holds "
                f"{layout(data_format).kind}; formats it reads: {', '.join(self.formats())}"
            )
        if data_format in FORMATS and self.labels not in layout(data_format).label_kinds:
            raise ConfigError(
                f"task {self.name!r} reads {self.labels} labels, which data format {data_format!r} "
                f"does not hold; formats it reads: {', '.join(self.formats())}"
            )
        serves = getattr(type(objective), "tasks", None)
        if (self.objectives is not None and objective.name not in self.objectives) or (
            serves is not None and self.name not in serves
        ):
            takes = (
                f"it trains with {', '.join(map(repr, self.objectives))}"
                if self.objectives is not None
                else f"objective {objective.name!r} serves {', '.join(map(repr, serves))}"
            )
            raise ConfigError(f"objective {objective.name!r} does not train task {self.name!r}: {takes}")

    def check_training(self, train, objective: Any = None) -> None:
        """Fail with a :class:`ConfigError` where the run's train section ``train`` mixes or smooths labels
        (``mixup``, ``cutmix``, ``smoothing`` above 0) and this task does not (real-valued targets), or ``objective``
        cannot train on soft targets (its config class sets ``soft_labels``)."""
        mixing = [n for n in MIXING_OPTIONS if getattr(train, n, 0)]
        if not mixing:
            return
        if not self.mixes_labels:
            kind = "has real-valued targets" if self.labels == "float" else "does not mix class labels"
            raise ConfigError(
                f"train option {mixing[0]!r} mixes or smooths class labels; task {self.name!r} {kind}: leave "
                f"{', '.join('train.' + n for n in MIXING_OPTIONS)} at 0"
            )
        if objective is not None and not getattr(type(objective), "soft_labels", False):
            raise ConfigError(
                f"train option {mixing[0]!r} gives the objective soft targets (class probabilities), which objective "
                f"{objective.name!r} does not train on; leave {', '.join('train.' + n for n in MIXING_OPTIONS)} at 0"
            )

    def num_outputs(self, data, splits: list[str]) -> int:
        """The head's size for the run's data section ``data`` and its ``splits``."""
        if self.outputs is None:
            raise NotImplementedError(f"task {self.name!r} sets no 'outputs' and does not read them from the data")
        if data.num_classes is not None:
            raise ConfigError(
                f"data option 'num_classes' is for classification; task {self.name!r} has a head of "
                f"{self.outputs} output(s): leave it unset"
            )
        return self.outputs

    def log_key(self, split: str) -> str:
        """The key of the primary metric on ``split`` (``train``, ``val``, ``test``) in a ``log.jsonl`` entry."""
        return f"{split}_{self.primary_metric}"

    def better(self, value: float, best: Optional[float]) -> bool:
        """Whether ``value`` of the primary metric beats ``best`` (null: nothing yet); equal is not better."""
        return best is None or (value > best if self.higher_is_better else value < best)

    def build(
        self, normalize: str = "inception", augment: str = "none", size: Optional[tuple[int, int]] = None
    ) -> Task:
        """The task a run uses: images normalised by ``normalize`` (``inception`` or ``imagenet``) and, in training,
        augmented by ``augment`` to ``size``."""
        raise NotImplementedError


class Task:
    """A task as a run uses it: batch preparation, the default loss, prediction and a metric state per split.

    Args:
        cfg: The task's config.
        normalize: Image normalisation, ``inception`` or ``imagenet``.
        augment: Training augmentation (``none``, ``crop_flip``, ``crop_flip_randaug``).
        size: The model's input size, which augmentation crops to.
    """

    def __init__(
        self,
        cfg: TaskConfig,
        normalize: str = "inception",
        augment: str = "none",
        size: Optional[tuple[int, int]] = None,
    ):
        self.cfg, self.normalize, self.augment, self.size = cfg, normalize, augment, size
        self._augment_images = None
        self._randaug = self._erasing = self._mixing = None  # timm's, set by configure_training
        if augment != "none":
            if size is None:
                raise ValueError(f"augmentation {augment!r} needs the input size")
            from ..data.augment import augment as augment_images  # torchvision: imported only when augmenting

            self._augment_images = augment_images

    def configure_training(self, data, train, num_classes: int, objective: Any = None) -> None:
        """Set the training augmentations of timm's that the run's ``data`` and ``train`` sections ask for:
        ``data.randaug`` (timm's RandAugment in place of vpeft's, with augmentation ``crop_flip_randaug``) and
        ``data.erasing`` (random erasing) for every task; label mixing and smoothing (``train.mixup``, ``cutmix``,
        ``smoothing``) where the task :attr:`~TaskConfig.mixes_labels`, refused elsewhere
        (:meth:`TaskConfig.check_training`). ``num_classes``: the head's size."""
        self.cfg.check_training(train, objective)
        randaug, erasing = getattr(data, "randaug", None), getattr(data, "erasing", 0.0)
        if randaug is None and not erasing:
            return
        from ..data import augment as A  # torchvision and timm.data: imported only when augmenting

        if randaug is not None:
            if self.augment != "crop_flip_randaug":
                raise ConfigError(
                    f"data option 'randaug' replaces RandAugment, which augmentation {self.augment!r} does not run: "
                    "set data.augment=crop_flip_randaug, or leave data.randaug unset"
                )
            try:
                self._randaug = A.timm_rand_augment(randaug, self.size, self.normalize)
            except ValueError as e:
                raise ConfigError(f"data option 'randaug': {e}") from None
        if erasing:
            self._erasing = A.Erasing(erasing)

    def model_context(self, batch: Batch) -> AbstractContextManager:
        """What a model may read of a prepared ``batch`` besides its images, for as long as it runs on them: nothing
        here. Every loop that runs a model on a batch does so inside this context (the segment task publishes the
        ground-truth masks, from which a prompted SAM draws its box or point: :mod:`vpeft.seg_prompts`)."""
        return nullcontext()

    def prepare(self, batch: Batch, train: bool, generator: Optional[torch.Generator] = None) -> dict:
        """The batch as the model takes it, on its device: in training augmented (parameters drawn from
        ``generator``), then normalised to float32 and, with ``data.erasing``, randomly erased."""
        images = batch["image"]
        if train and self._augment_images is not None and len(images):
            images = self._augment_images(images, self.size, self.augment, generator, randaug=self._randaug)
        images = normalize(images, self.normalize)
        if train and self._erasing is not None and len(images):
            images = self._erasing(images, generator)
        return {**batch, "image": images}

    def loss(self, outputs: torch.Tensor, batch: Batch) -> torch.Tensor:
        """The task's default loss of the model's ``outputs`` on a prepared batch."""
        raise NotImplementedError

    def predict(self, outputs: torch.Tensor) -> torch.Tensor:
        """Predictions from the model's ``outputs`` (class indices, values)."""
        raise NotImplementedError

    def metric(self) -> Metric:
        """A fresh metric state for one split."""
        raise NotImplementedError

    def result_keys(self, test: Metric, val: Optional[dict]) -> dict:
        """Keys of the task's own that ``result.json`` carries before ``metrics``, from the test split's synced metric
        state and the selected epoch's validation metrics (null without ``select=val``)."""
        return {}
