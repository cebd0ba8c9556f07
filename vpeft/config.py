"""The run schema: a run's sections (backbone, method, objective, selector, data, train, task) and its identity.

It stands above the plug-ins (``RunConfig.from_dict`` builds them from the catalog's registries). The typed-config
base (:mod:`vpeft.config_base`) and the spec grammar (:mod:`vpeft.spec`) stand below them; their names are
re-exported here, so ``from vpeft.config import parse_spec`` keeps working.
"""

from __future__ import annotations

import difflib
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Optional

from .catalog import FORMATS, METHODS, OBJECTIVES, SELECTORS, TASKS
from .config_base import BaseConfig, _coerce, _type_name, field_docs, load_yaml  # noqa: F401  (re-exported)
from .data.entries import SPLIT_FRACTIONS, detect_format
from .errors import ConfigError
from .spec import (  # noqa: F401  (re-exported)
    _parse_value,
    _split_top_level,
    apply_overrides,
    format_spec,
    parse_spec,
    plugin_to_dict,
    spec_string,
)

# --------------------------------------------------------------------------------------------------------------------
# Run config: the composition backbone x method x objective x data x train.


def _names(value, many: bool) -> bool:
    """Whether ``value`` is a non-empty string, or (``many``) a non-empty list of them."""
    if isinstance(value, str):
        return bool(value)
    return many and isinstance(value, list) and bool(value) and all(isinstance(v, str) and v for v in value)


@dataclass(kw_only=True)
class BackboneConfig(BaseConfig):
    """Which pretrained model to adapt.

    Args:
        spec: timm model name with optional overrides, ``name:key=value,...``
            (e.g. ``vit_tiny_patch16_224:img_size=32,patch_size=4,depth=2``).
        checkpoint: Local weight file (Google ``.npz``, ``.safetensors`` or ``.pth`` state dict); null for random
            weights.
        pretrained: Download timm hub weights (needs network); ignored when ``checkpoint`` is set.
        pool: Classifier input: ``token`` (class token after the final norm) or ``avg`` (mean of the patch tokens,
            then the final norm, as DTL); null keeps the model's default.
        head_init: Initialisation of the new classifier head: ``trunc_normal`` (std 0.02, zero bias: timm's init, as
            GIST, iDAT, GPS, DTL, SSF and NOAH), ``default`` (nn.Linear's own kaiming-uniform weight and uniform bias,
            left by timm's ``reset_classifier`` in FacT's and PETL-ViT's code) or ``kaiming_fanout`` (kaiming-normal
            fan-out weight, bias -log(99) = -4.595: VPT's head).
    """

    spec: str = "vit_tiny_patch16_224:img_size=32,patch_size=4,embed_dim=64,depth=4,num_heads=4"
    checkpoint: Optional[str] = None
    pretrained: bool = False
    pool: Optional[Literal["token", "avg"]] = None
    head_init: Literal["trunc_normal", "default", "kaiming_fanout"] = "trunc_normal"


@dataclass(kw_only=True)
class DataConfig(BaseConfig):
    """Where the images are and how they are read.

    Args:
        root: The task folder (for ``vtab1k``: ``train800.txt``, ``val200.txt``, ``train800val200.txt``, ``test.txt``
            with lines ``<relative path> <label>``).
        format: Layout, a name registered in ``FORMATS``: ``vtab1k``, ``fgvc`` (VPT's JSON splits), ``fewshot``
            (NOAH's lists), ``lists`` (``<path> <label>`` list files with their own list and image roots),
            ``folder`` (``<split>/<class>/<image>``, or a plain folder of class folders, ``<class>/<image>``, split by
            vpeft) or ``csv`` (``<split>.csv`` with columns path, label: integers or class names), or one from a
            plug-in; ``auto`` (default) picks it by what ``root`` holds (``vtab1k`` when it is a VTAB-1K task
            folder, when nothing else fits and when no root is given; ``lists`` where one of its options below is
            set) and records the one it picked.
        shot: Shots per class of a ``fewshot`` training list (``lists``: ``{shot}`` in a list file name).
        fewshot_seed: Seed of a ``fewshot`` training list (``lists``: ``{seed}`` in a list file name).
        lists_root: ``lists``: the folder of the list files, relative to ``root`` (or absolute); null: ``root``.
        image_root: ``lists``: the folder the listed image paths are relative to, relative to ``root`` (or
            absolute); null: ``root``.
        image_roots: ``lists``: split -> image folder where a split's images live apart (ImageNet's ``train`` and
            ``val``), relative to ``root`` (or absolute); a split not named here uses ``image_root``.
        lists: ``lists``: split -> list file name under ``lists_root``, where ``{shot}`` and ``{seed}`` stand for
            ``shot`` and ``fewshot_seed`` (NOAH's ``train_meta.list.num_shot_{shot}.seed_{seed}``), or a list of
            file names whose lines are read in turn (PACS's source domains: one list per domain); a split not named
            here is ``<split>.txt``.
        augment: Training augmentation: ``none`` (direct resize, VTAB), ``crop_flip`` (random-resized crop + flip,
            FGVC), ``crop_flip_randaug`` (plus RandAugment, few-shot); null picks by format (none for vtab1k, folder,
            csv). With augmentation, images are decoded at size / 0.875 and tested on the centre crop.
        randaug: With ``crop_flip_randaug``: null runs vpeft's batched RandAugment (torchvision's ops, 2 of magnitude
            9); a timm RandAugment string (``rand-m9-mstd0.5-inc1``, NOAH's and DTL's) runs timm's
            ``rand_augment_transform`` on each image after the crop and flip instead, with the hparams timm's
            ``create_transform`` gives it (translate 45% of the input size, fill the normalisation's mean,
            bicubic), seeded from the run's augmentation generator.
        erasing: Probability of timm's random erasing (mode ``pixel``: one box of normal noise per erased image)
            on the normalised training images, as timm's ``--reprob`` (NOAH: 0.25); 0 turns it off.
        train_split: Split to train on; null picks by format and selection rule (``train800val200`` or ``train800``
            for vtab1k; ``train+val`` or ``train`` for fgvc; ``train`` otherwise).
        val_split: Split for model selection with ``train.select=val``; null picks by format.
        test_split: Split to report accuracy on; null picks ``test``.
        normalize: ``inception`` (mean = std = 0.5, as the papers), ``imagenet`` (ImageNet mean and std) or ``clip``
            (OpenAI CLIP's mean and std, as CoOp and MaPLe).
        img_size: Input side length; null uses the backbone's.
        num_classes: Number of classes; null reads ``classes.txt`` or takes 1 + the largest label (a VTAB-1K task
            whose data disagrees with the canonical count gets the data's, with a warning).
        skip_bad: Leave out list lines whose image is missing or unreadable or whose label is out of range (counted
            in the result and in a warning) instead of failing on the first.
        split_fractions: Train, val and test shares of a plain folder of class folders (no ``train/``, ``val/``,
            ``test/`` folders), which vpeft splits itself: stratified (each class by these shares, at least one
            image per split with a share where the class has enough) and seeded by ``split_seed``.
        split_seed: Seed of that split (not ``train.seed``: runs of several seeds see the same split); ``glue``:
            the seed of ATTEMPT's re-split (ATTEMPT's ``data_seed`` is 42: recipe ``attempt_glue`` sets it).
        split_rule: ``glue``: ``attempt`` (ATTEMPT's re-split of GLUE's labelled files into train, val and test) or
            ``glue`` (train, and dev as the test split; no val).
        glue_task: ``glue``: the GLUE task (``rte``, ``sst2``, ...) where the folder's name is not its name.
        max_train: ``glue``: keep this many training examples (ATTEMPT's ``max_train_samples``: the first of its
            permuted or, for a file taken whole, a fresh seeded permutation's); null: all.
        strict_labels: Where nothing declares the classes (no ``classes.txt``, ``num_classes``, class names or
            canonical VTAB-1K count), labels with no training example (a gap, or a label far out of range that
            makes the head larger) are an error naming them; false: a warning.
        extra_tests: Target domains evaluated after training (domain generalisation), by name: a task folder, or a
            mapping with ``root``, ``split`` (default ``test``), ``format`` (default ``auto``) and ``classes``:
            ``present`` (default: the argmax over the classes the target's list holds, the official protocol of
            ImageNet-A and -R) or ``all`` (over every class, as NOAH's and DTL's code; warned). Both accuracies are
            recorded in ``result.json``'s ``tests``.
        eval_memory_mb: The most decoded images the test split or an extra test set holds in memory at once (MiB
            of uint8 pixels): a larger one (ImageNet val, 50,000 images: 7.5 GB at 224 px) is decoded and evaluated
            in chunks of that size each time it is evaluated. Changes no result.
    """

    root: Optional[str] = None
    format: str = "auto"
    shot: int = 16
    fewshot_seed: int = 0
    lists_root: Optional[str] = None
    image_root: Optional[str] = None
    image_roots: dict = field(default_factory=dict)
    lists: dict = field(default_factory=dict)
    augment: Optional[Literal["none", "crop_flip", "crop_flip_randaug"]] = None
    randaug: Optional[str] = None
    erasing: float = 0.0
    train_split: Optional[str] = None
    val_split: Optional[str] = None
    test_split: Optional[str] = None
    normalize: Literal["inception", "imagenet", "clip"] = "inception"
    img_size: Optional[int] = None
    num_classes: Optional[int] = None
    skip_bad: bool = False
    split_fractions: tuple[float, ...] = SPLIT_FRACTIONS
    split_seed: int = 0
    split_rule: Literal["attempt", "glue"] = "attempt"
    glue_task: Optional[str] = None
    max_train: Optional[int] = None
    strict_labels: bool = True
    extra_tests: dict = field(default_factory=dict)
    eval_memory_mb: float = 1024.0

    def __post_init__(self):
        if self.format != "auto" and self.format not in FORMATS:
            close = difflib.get_close_matches(self.format, FORMATS.names(), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(
                f"data option 'format': expected one of {', '.join(map(repr, FORMATS.names()))}, got "
                f"{self.format!r}{hint}; or 'auto' to pick it by the folder"
            )
        if not self.eval_memory_mb > 0:
            raise ConfigError(f"data option 'eval_memory_mb' must be > 0, got {self.eval_memory_mb}")
        fr = tuple(self.split_fractions)
        if len(fr) != 3 or min(fr) < 0 or fr[0] <= 0 or fr[2] <= 0 or abs(sum(fr) - 1) > 1e-6:
            raise ConfigError(
                f"data option 'split_fractions': expected three shares train, val, test that add up to "
                f"1, train and test above 0 (e.g. 0.8,0.1,0.1), got {','.join(map(str, fr))}"
            )
        for name in ("image_roots", "lists"):
            bad = {k: v for k, v in getattr(self, name).items() if not _names(v, many=name == "lists")}
            if bad:
                raise ConfigError(
                    f"data option {name!r}: expected split -> "
                    + ("folder (strings)" if name == "image_roots" else "file name, or a list of file names")
                    + f", got {bad}"
                )
            setattr(self, name, {str(k): v for k, v in getattr(self, name).items()})
        layout_set = [n for n in LISTS_OPTIONS if getattr(self, n)]
        if self.format == "auto" and layout_set:
            self.format = "lists"
        elif self.format == "auto":  # resolved at once, so every config (and record) names a registered layout
            self.format = detect_format(self.root)
        foreign = [n for n in layout_set if n not in FORMATS.get(self.format).options]
        if foreign:
            readers = [f for f in FORMATS.names() if foreign[0] in FORMATS.get(f).options]
            raise ConfigError(
                f"data option {foreign[0]!r} is not read by format {self.format!r} (formats that read it: "
                f"{', '.join(readers)}): set data.format to one of them, or leave {', '.join(foreign)} unset"
            )
        if not 0 <= self.erasing <= 1:  # nan fails too
            raise ConfigError(f"data option 'erasing' must be a probability in [0, 1], got {self.erasing}")
        if self.randaug is not None:
            from .data.augment import timm_rand_augment  # torchvision and timm.data: imported only when asked for

            try:
                timm_rand_augment(self.randaug)
            except ValueError as e:
                raise ConfigError(f"data option 'randaug': {e}") from None
            kind = self.augment or FORMATS.get(self.format).augment
            if kind != "crop_flip_randaug":
                raise ConfigError(
                    f"data option 'randaug' replaces RandAugment, which augmentation {kind!r} does not run: set "
                    "data.augment=crop_flip_randaug, or leave data.randaug unset"
                )


@dataclass(kw_only=True)
class TrainConfig(BaseConfig):
    """How to train.

    Args:
        epochs: Number of epochs.
        batch_size: Images per optimizer step (before gradient accumulation splits it).
        lr: Peak learning rate.
        optimizer: ``adamw``, ``adam`` or ``sgd``.
        momentum: SGD momentum.
        weight_decay: Weight decay.
        decay_1d: Also decay tensors with ndim <= 1 (biases, norms, tokens); the papers' code does not.
        warmup_epochs: Linear warm-up length, inside the cosine (timm ``warmup_prefix=False``).
        warmup_lr: Learning rate at the start of warm-up.
        warmup_kind: ``linear``: from ``warmup_lr`` to ``lr`` over ``warmup_epochs``, inside the cosine (timm's
            ``warmup_prefix=False``); ``constant_prefix``: ``warmup_lr`` throughout ``warmup_epochs``, then the
            cosine from its start (Dassl's ``ConstantWarmupScheduler``, which CoOp and MaPLe use).
        warmup_steps: Warm-up length in optimizer steps instead of epochs (transformers' ``warmup_steps``; ATTEMPT's
            500); needs ``sched_unit: step`` and ``warmup_epochs: 0``.
        schedule: After warm-up, ``cosine`` (timm's, from ``lr`` to ``min_lr`` over ``cosine_epochs``) or ``linear``
            (transformers' ``get_linear_schedule_with_warmup``: straight from ``lr`` to ``min_lr`` at the end of
            training, 0 in transformers; ATTEMPT's).
        min_lr: Learning rate at the end of the cosine.
        cosine_epochs: Length of the cosine in epochs; null means ``epochs``. Epochs past it stay at ``min_lr``
            (timm's ``--epochs 100`` trains 110 epochs this way).
        sched_unit: Step the schedule per ``epoch`` (timm style, as the papers) or per optimizer ``step``.
        grad_accum: Split each batch into this many micro-batches and accumulate gradients.
        drop_last: Leave out each epoch's last, smaller batch. Default false: every training image is seen every
            epoch (with 800 or 1,000 images and batch 32 or 64 the last batch holds a third to a half of a batch).
            The papers' loaders drop it (GIST, iDAT, GPS and DTL: 15 steps an epoch instead of 16 at batch 64), so
            their recipes set it.
        drop_path: Stochastic depth rate on the frozen backbone's blocks.
        mixup: Mixup alpha (timm's ``--mixup``; NOAH: 0.8): with it or ``cutmix`` above 0, timm's ``Mixup`` in mode
            ``batch`` mixes each training batch with its mirror (one lambda per batch) and the objective trains on
            soft targets (classification; the training accuracy counts the unmixed labels). 0 turns it off.
        cutmix: CutMix alpha (timm's ``--cutmix``; NOAH: 1.0); 0 turns it off.
        mixup_prob: Probability that a batch is mixed at all (timm's ``--mixup-prob``).
        mixup_switch_prob: With both ``mixup`` and ``cutmix`` on, the probability that a mixed batch uses CutMix
            (timm's ``--mixup-switch-prob``).
        smoothing: Label smoothing of the training targets (timm's ``--smoothing``; NOAH: 0.1): ``smoothing / C``
            on every class, ``1 - smoothing`` more on the true one, applied before mixing; classification only.
            ``objective.label_smoothing`` of ``ce`` smooths again on top.
        amp: Mixed precision on CUDA: ``none``, ``fp16`` or ``bf16`` (ignored on CPU, with a warning).
        seed: Seed for initialisation, shuffling, dropout and drop-path; same seed, same result on CPU.
        select: Model selection: ``last`` epoch, best ``val`` score of the task's primary metric (accuracy for
            ``classify``; training on train800), or ``best-test`` (selects on the test set, as the GIST/iDAT/GPS code;
            flagged in the log and result).
        eval_batch_size: Batch size for evaluation; null means ``batch_size`` on the CPU and at least 256 on CUDA
            (evaluation keeps no activations, so larger batches keep the GPU busy).
        eval_every: With ``select`` val or best-test, evaluate the selection split every this many epochs (and
            always after the last); the papers evaluate every epoch.
        save_every: Write the resume state every this many epochs; 0 (auto): after an epoch whenever the epochs
            since the last write took at least as long as that write did (so writing never costs more than the
            training). A killed run resumes from the last written epoch, with the same result.
        tf32: On CUDA without ``amp``, let fp32 matrix products and convolutions use TF32 tensor cores (PyTorch's
            default is off; recorded in ``result.json``).
        data_on_device: Keep the decoded splits on the GPU (``yes``), stream them from pinned host memory (``no``),
            or keep them there when together they take at most a quarter of its free memory (``auto``).
        log_every: Steps between reads of the running loss for the progress bar (and the divergence check); the
            rest of the epoch never waits for the GPU.
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
    """

    epochs: int = 10
    batch_size: int = 32
    lr: float = 1e-3
    optimizer: Literal["adamw", "adam", "sgd"] = "adamw"
    momentum: float = 0.9
    weight_decay: float = 0.05
    decay_1d: bool = False
    warmup_epochs: int = 0
    warmup_lr: float = 1e-7
    warmup_kind: Literal["linear", "constant_prefix"] = "linear"
    warmup_steps: int = 0
    schedule: Literal["cosine", "linear"] = "cosine"
    min_lr: float = 1e-8
    cosine_epochs: Optional[int] = None
    sched_unit: Literal["epoch", "step"] = "epoch"
    grad_accum: int = 1
    drop_last: bool = False
    drop_path: float = 0.0
    mixup: float = 0.0
    cutmix: float = 0.0
    mixup_prob: float = 1.0
    mixup_switch_prob: float = 0.5
    smoothing: float = 0.0
    amp: Literal["none", "fp16", "bf16"] = "none"
    seed: int = 0
    select: Literal["last", "val", "best-test"] = "last"
    eval_batch_size: Optional[int] = None
    eval_every: int = 1
    save_every: int = 0
    tf32: bool = True
    data_on_device: Literal["auto", "yes", "no"] = "auto"
    log_every: int = 20
    device: str = "auto"

    def __post_init__(self):
        for name in ("epochs", "batch_size", "grad_accum", "eval_every", "log_every"):
            if getattr(self, name) < 1:
                raise ConfigError(f"train option {name!r} must be >= 1, got {getattr(self, name)}")
        if self.batch_size % self.grad_accum:
            raise ConfigError(
                f"train option 'batch_size' ({self.batch_size}) must be a multiple of 'grad_accum' ({self.grad_accum})"
            )
        if self.save_every < 0:
            raise ConfigError(f"train option 'save_every' must be >= 0 (0: auto), got {self.save_every}")
        if not 0 < self.lr <= FLOAT32_MAX:  # nan fails too; an optimizer step in float32 overflows above
            raise ConfigError(f"train option 'lr' must be a number > 0 within float32's range, got {self.lr}")
        for name in ("weight_decay", "drop_path", "warmup_epochs"):
            if not math.isfinite(getattr(self, name)):
                raise ConfigError(f"train option {name!r} must be a finite number, got {getattr(self, name)}")
        if not 0 <= self.drop_path < 1:
            raise ConfigError(f"train option 'drop_path' must be in [0, 1), got {self.drop_path}")
        for name in ("mixup", "cutmix"):
            if not 0 <= getattr(self, name) < math.inf:
                raise ConfigError(f"train option {name!r} must be an alpha >= 0 (0: off), got {getattr(self, name)}")
        for name in ("mixup_prob", "mixup_switch_prob"):
            if not 0 <= getattr(self, name) <= 1:
                raise ConfigError(f"train option {name!r} must be a probability in [0, 1], got {getattr(self, name)}")
        if not 0 <= self.smoothing < 1:
            raise ConfigError(f"train option 'smoothing' must be in [0, 1), got {self.smoothing}")
        if self.warmup_steps < 0:
            raise ConfigError(f"train option 'warmup_steps' must be >= 0, got {self.warmup_steps}")
        if self.warmup_steps and (self.sched_unit != "step" or self.warmup_epochs):
            raise ConfigError(
                "train option 'warmup_steps' counts optimizer steps: it needs sched_unit=step and warmup_epochs=0 "
                f"(got sched_unit={self.sched_unit}, warmup_epochs={self.warmup_epochs})"
            )
        if self.warmup_epochs < 0 or self.warmup_epochs > self.epochs:
            raise ConfigError(f"train option 'warmup_epochs' must be in [0, epochs], got {self.warmup_epochs}")


#: The data options of the ``lists`` format (where its list files and images are); another layout takes none of them.
LISTS_OPTIONS = ("lists_root", "image_root", "image_roots", "lists")
#: The largest float32: an optimizer's step size beyond it cannot be computed.
FLOAT32_MAX = 3.4028234663852886e38

#: Options that change how a run executes, never what it computes: left out of a run's identity (a sweep's run hash,
#: the check that a resumed run is the same run), so they may change between a run and its resume.
EXECUTION_ONLY = {
    ("train", "save_every"),
    ("train", "log_every"),
    ("train", "data_on_device"),
    ("data", "eval_memory_mb"),
}
#: Options added after runs were first recorded, with their default: left out of a run's identity while they hold
#: it, so runs recorded before the option existed are found again. Each default reproduces the earlier behaviour,
#: except ``teacher_drop_path`` (null: the run's drop-path; before, iDAT's teacher had none) for an iDAT run with
#: ``train.drop_path`` > 0.
#: A plug-in's option is keyed ``(section, plug-in name, key)``, as another plug-in may have an option of that name
#: with another default; a section added later is keyed ``(section,)``.
ADDED_OPTIONS = {
    ("data", "extra_tests"): {},
    ("task",): {"name": "classify"},
    ("train", "eval_every"): 1,
    ("train", "tf32"): True,
    ("train", "drop_last"): False,
    ("objective", "idat", "teacher_drop_path"): None,
    ("objective", "gist", "cls_loss"): "ce",
    ("backbone", "head_init"): "trunc_normal",
    ("method", "lora", "init"): "zero_up",
    ("method", "lora", "bottleneck_dropout"): 0.0,
    ("method", "adapter", "dropout"): 0.0,
    ("method", "adapter", "train_norms"): False,
    ("method", "adaptformer", "dropout"): 0.0,
    ("method", "adapter_ps", "dropout"): 0.0,
    ("selector", "gps", "selection_amp"): "none",
    ("selector", "gps", "amp_compare"): False,
    ("selector", "gps", "views"): "resized",
    ("selector", "gps", "shuffle"): False,
    ("selector", "gps", "drop_last"): False,
    ("selector", "gps", "norm_bias"): "none",
    ("data", "split_fractions"): list(SPLIT_FRACTIONS),
    ("data", "split_seed"): 0,
    ("data", "split_rule"): "attempt",
    ("data", "glue_task"): None,
    ("data", "max_train"): None,
    ("data", "strict_labels"): True,
    ("data", "lists_root"): None,
    ("data", "image_root"): None,
    ("data", "image_roots"): {},
    ("data", "lists"): {},
    ("data", "randaug"): None,
    ("data", "erasing"): 0.0,
    ("train", "mixup"): 0.0,
    ("train", "warmup_kind"): "linear",
    ("train", "warmup_steps"): 0,
    ("train", "schedule"): "cosine",
    ("train", "cutmix"): 0.0,
    ("train", "mixup_prob"): 1.0,
    ("train", "mixup_switch_prob"): 0.5,
    ("train", "smoothing"): 0.0,
}


def run_identity(resolved: dict) -> dict:
    """A resolved run config as it identifies the run (see :data:`EXECUTION_ONLY` and :data:`ADDED_OPTIONS`)."""
    out = {k: dict(v) if isinstance(v, dict) else v for k, v in resolved.items()}
    for section, key in EXECUTION_ONLY:
        if isinstance(out.get(section), dict):
            out[section].pop(key, None)
    for option, default in ADDED_OPTIONS.items():
        if len(option) == 1:
            if out.get(option[0], default) == default:
                out.pop(option[0], None)
            continue
        key, sec = option[-1], out.get(option[0])
        if isinstance(sec, dict) and option[1:-1] in ((), (sec.get("name"),)) and sec.get(key, default) == default:
            sec.pop(key, None)
    return out


@dataclass(kw_only=True)
class RunConfig(BaseConfig):
    """A whole run: backbone x method x objective, on data, trained by the trainer.

    Args:
        backbone: The backbone section.
        method: Method spec: a name or a mapping with ``name`` and its options.
        objective: Objective spec, as ``method``; absent: the task's default (``ce`` for ``classify``, ``mse`` for
            ``regress``).
        selector: Selector spec (``gps``), or null for none: which existing weights train, on top of the method.
        data: The data section.
        train: The train section.
        task: Task spec, as ``method``: what the run predicts and how it is scored (``classify``, ``regress``).
    """

    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    method: Any = "linear"
    objective: Any = "ce"
    selector: Any = None
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    task: Any = "classify"

    @classmethod
    def from_dict(cls, data: dict | None, where: str | None = None) -> RunConfig:
        data = dict(data or {})
        valid = [f.name for f in cls.fields()]
        for key in data:
            if key not in valid:
                close = difflib.get_close_matches(key, valid, n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                raise ConfigError(f"run config has no section {key!r}{hint}; valid sections: {', '.join(valid)}")
        sections = {"backbone": BackboneConfig, "data": DataConfig, "train": TrainConfig}
        kwargs: dict[str, Any] = {}
        for name, sec in sections.items():
            value = data.get(name) or {}
            if isinstance(value, BaseConfig):
                kwargs[name] = value
            elif isinstance(value, str) and name == "backbone":
                kwargs[name] = BackboneConfig(spec=value)
            elif isinstance(value, dict):
                kwargs[name] = sec.from_dict(value, where=f"section {name!r}")
            else:
                raise ConfigError(f"section {name!r} must be a mapping, got {value!r}")
        # Plug-ins are validated against their registries and stored as instances.

        kwargs["task"] = TASKS.build(data.get("task") or "classify")
        kwargs["method"] = METHODS.build(data.get("method", "linear"))
        kwargs["objective"] = OBJECTIVES.build(
            data["objective"] if "objective" in data else kwargs["task"].default_objective
        )
        kwargs["selector"] = SELECTORS.build(data["selector"]) if data.get("selector") else None
        dc = kwargs["data"]
        if dc.root and not Path(dc.root).exists() and FORMATS.get(dc.format).kind != kwargs["task"].inputs:
            # the layout was guessed for a folder that is not there: name the folder, not the guess
            raise ConfigError(f"data folder {dc.root} does not exist")
        kwargs["task"].check(dc.format, kwargs["objective"])
        kwargs["task"].check_training(kwargs["train"], kwargs["objective"])
        if kwargs["selector"] is not None:
            kwargs["selector"].check_task(kwargs["task"])
        return cls(**kwargs)

    def to_dict(self) -> dict:
        return {
            "backbone": self.backbone.to_dict(),
            "method": plugin_to_dict(self.method),
            "objective": plugin_to_dict(self.objective),
            "selector": plugin_to_dict(self.selector) if self.selector is not None else None,
            "data": self.data.to_dict(),
            "train": self.train.to_dict(),
            "task": plugin_to_dict(self.task),
        }


def expand_backbone_spec(data: dict) -> dict:
    """``backbone: vit_base_patch16_224`` is short for ``backbone: {spec: vit_base_patch16_224}``: expand it in place
    (before merging command-line or experiment values into the section), and return ``data``."""
    if isinstance(data.get("backbone"), str):
        data["backbone"] = {"spec": data["backbone"]}
    return data
