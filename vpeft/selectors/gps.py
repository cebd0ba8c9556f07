"""GPS: gradient-based parameter selection (Zhang et al., CVPR 2024, arXiv:2312.10136), memory-lean.

1. Selection: one pass over the training list with the head-free supervised contrastive loss (temperature 0.07) on
   L2-normalised pre-logit features (the class token after the final norm on a ViT), two augmented views per image,
   gradients summed over the pass. Then, for every output neuron (row) of every weight of a Linear or convolution
   (the patch embedding flattened), the K input connections with the largest |accumulated gradient| are selected.
2. Fine-tuning: the selected entries, all non-norm biases and the head train; norms, position embedding and class
   token stay frozen. The official code keeps full-size gradients and Adam state and zeroes masked gradients (the
   memory of full fine-tuning, their issue #6). Here each selected weight stays frozen and a trainable vector of the
   selected *values* is added through its indices: ``y = x W^T + b + sparse(x)``, so gradients and optimizer state
   exist only for the selected entries. With Adam and weight decay 0 this gives the dense masked reference's weights.

Where the authors' pass differs from vpeft's default, an option reproduces it (the paper recipe sets them all):
``selection_amp`` (fp16 autocast without loss scaling), ``views`` (bicubic crops of each image at its own size),
``shuffle`` and ``drop_last`` (their selection loader). A row whose K-th and (K+1)-th scores tie is resolved as their
``argsort`` resolves it (:func:`legacy_argsort`), always: ``torch.topk``'s pick among ties is arbitrary.
"""

from __future__ import annotations

import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from ..data.loader import DeviceData, batch_len
from ..data.vtab import crop_center, normalize
from ..errors import ConfigError
from ..registry import SELECTORS
from .base import SelectorConfig
from .gps_views import SourceImages, official_views, two_views
from .legacy_sort import legacy_argsort

AMP_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}


def _head_modules(backbone) -> set[int]:
    """The head and every layer inside it, by ``id``: a head of several layers (SAM's mask decoder) is one head."""
    return {id(m) for m in backbone.head.modules()}


def weight_sites(backbone) -> dict[str, nn.Module]:
    """Linear and convolution layers whose weights GPS selects in, by name (the head excluded: on a ``sam`` backbone
    the selection's scope is the image encoder)."""
    head = _head_modules(backbone)
    out = {}
    for name, m in backbone.model.named_modules():
        if id(m) in head or not isinstance(m, (nn.Linear, nn.Conv2d)):
            continue
        out[name] = m
    return out


def _is_norm(m: nn.Module) -> bool:
    return isinstance(m, (nn.LayerNorm, nn.GroupNorm, nn.BatchNorm2d)) or "norm" in type(m).__name__.lower()


def fully_trained(backbone, kinds, norm_bias: str = "none") -> list[nn.Parameter]:
    """Tensors that train fully: non-norm biases, the head, layer scales (timm ``gamma``); with ``"bias"`` in
    ``kinds``, the biases of the norms ``norm_bias`` names too (``outside_blocks``: the norms outside the anatomy's
    blocks; ``all``)."""
    out = []
    head = backbone.head
    in_head = _head_modules(backbone)
    in_blocks = {id(m) for b in backbone.anatomy.blocks for m in b.modules()} if norm_bias == "outside_blocks" else ()
    for m in backbone.model.modules():
        if id(m) in in_head and m is not head:  # a layer inside a head of several layers: the head is one
            continue
        if "head" in kinds and m is head:
            out.extend(m.parameters())
            continue
        if _is_norm(m):
            bias = getattr(m, "bias", None)
            wanted = norm_bias == "all" or (norm_bias == "outside_blocks" and id(m) not in in_blocks)
            if "bias" in kinds and wanted and isinstance(bias, nn.Parameter):
                out.append(bias)
            continue
        for pname, p in m.named_parameters(recurse=False):
            if ("bias" in kinds and pname == "bias") or ("layer_scale" in kinds and pname == "gamma"):
                out.append(p)
    return out


class SparseDelta(torch.autograd.Function):
    """``y[..., r] += sum_e x[..., c_e] v_e`` over entries e with row r: a sparse weight update, saving only x.

    Computed in x's dtype (under autocast the caller passes x in the layer's compute dtype, so the sum with the layer's
    output stays in it); the values' gradient is accumulated in (at least) fp32 and returned in the values' dtype.
    """

    @staticmethod
    def forward(ctx, x, values, rows, cols, out_features):
        ctx.save_for_backward(x, values, rows, cols)
        flat = x.reshape(-1, x.shape[-1])
        y = flat.new_zeros(flat.shape[0], out_features).index_add_(1, rows, flat[:, cols] * values.to(x.dtype))
        return y.reshape(*x.shape[:-1], out_features)

    @staticmethod
    def backward(ctx, gy):
        x, values, rows, cols = ctx.saved_tensors
        flat = x.reshape(-1, x.shape[-1])
        g = gy.reshape(-1, gy.shape[-1])[:, rows].to(x.dtype)  # tokens x entries
        g_values = g_x = None
        if ctx.needs_input_grad[1]:
            acc = torch.promote_types(values.dtype, torch.float32)
            g_values = (g * flat[:, cols]).sum(0, dtype=acc).to(values.dtype)
        if ctx.needs_input_grad[0]:
            g_x = torch.zeros_like(flat).index_add_(1, cols, g * values.to(x.dtype)).reshape(x.shape)
        return g_x, g_values, None, None, None


class SelectedValues(nn.Module):
    """The trainable values of one weight's selected entries, with their flat indices (a buffer)."""

    def __init__(self, weight: torch.Tensor, flat_index: torch.Tensor):
        super().__init__()
        # On the weight's device whatever the selection's (one reloaded from a file is on the CPU).
        self.register_buffer("gps_index", flat_index.to(weight.device, torch.long), persistent=True)
        self.gps_values = nn.Parameter(torch.zeros(len(flat_index), dtype=weight.dtype, device=weight.device))
        cols = weight.reshape(weight.shape[0], -1).shape[1]
        self.register_buffer("rows", self.gps_index // cols, persistent=False)
        self.register_buffer("cols", self.gps_index % cols, persistent=False)

    def dense(self, weight: torch.Tensor) -> torch.Tensor:
        """The update as a dense tensor of the weight's shape."""
        return (
            torch.zeros(weight.numel(), dtype=weight.dtype, device=weight.device)
            .index_add(0, self.gps_index, self.gps_values)
            .view_as(weight)
        )


@SELECTORS.register("gps")
@dataclass(kw_only=True)
class GPSConfig(SelectorConfig):
    """GPS: per output neuron, the K input connections with the largest accumulated gradient train (plus the
    non-norm biases and the head). On ViT-B/16 with ``k=1``: 83,712 selected weights + 83,712 biases = 167,424
    trainable parameters without the head; each unit of K adds 83,712. Use with ``--method linear``.

    Args:
        k: Connections kept per output neuron (the authors' ``--times_para``: 1 for VTAB, 1 to 20 for FGVC).
        criterion: ``gradient`` (|accumulated gradient|, GPS), ``magnitude`` (|weight|) or ``random`` (Table 6b).
        level: ``neuron`` (top K per row, GPS), ``layer`` (top K x rows within each weight) or ``net`` (top
            K x rows over the whole network) (Table 6a).
        loss: Selection loss: ``supcon`` (head-free supervised contrastive on two augmented views, GPS), ``ce``
            (cross-entropy through the head, one view) (Table 6c) or ``task`` (the run's task's own loss through the
            head on its prepared, unaugmented training batches: GPS's SAM code, where SupCon has no class labels).
        temperature: SupCon temperature (and base temperature).
        train_fully: Tensor kinds that train in full: ``bias`` (non-norm biases), ``head``, ``layer_scale``.
        batch_size: Batch size of the selection pass; null: the training batch size.
        seed: Seed of the augmentations, of ``shuffle``'s order (and of ``random``).
        selection_amp: Autocast of the selection pass on CUDA: ``none`` (fp32: no gradient underflows), ``fp16`` (the
            authors': fp16 autocast without loss scaling, so gradients below fp16's range become 0) or ``bf16``. On
            other devices the pass runs in fp32, with a warning (``selection_amp_used`` in the result).
        amp_compare: With a ``selection_amp`` in use, run the pass in fp32 too and record how many rows' selections
            differ (``amp_rows_differing``; one more pass, the amp selection is kept).
        views: Source of the SupCon views: ``resized`` (crops of the training images as decoded for training, at
            the model's input size, bilinear) or ``official`` (the authors': crops of every image at its own size,
            decoded once more batch by batch; bicubic for the VTAB-1K layout, timm's random bilinear/bicubic for
            the others, as their FGVC scripts).
        shuffle: Visit the training images in a random order (seeded by ``seed``), as the authors' selection
            loader; false: in list order.
        drop_last: Leave out the last partial batch of the selection pass, as the authors' selection loader.
        norm_bias: Norm biases that train fully with the other biases (``bias`` in ``train_fully``): ``none`` (norms
            stay frozen, GPS), ``outside_blocks`` (the biases of norms outside the blocks: SAM's neck LayerNorm2d,
            which GPS's SAM code trains as its rule freezes only names holding "norm"; a ViT's final norm) or
            ``all``.
    """

    k: int = 1
    criterion: Literal["gradient", "magnitude", "random"] = "gradient"
    level: Literal["neuron", "layer", "net"] = "neuron"
    loss: Literal["supcon", "ce", "task"] = "supcon"
    temperature: float = 0.07
    train_fully: tuple[Literal["bias", "head", "layer_scale"], ...] = ("bias", "head", "layer_scale")
    batch_size: int | None = None
    seed: int = 0
    selection_amp: Literal["none", "fp16", "bf16"] = "none"
    amp_compare: bool = False
    views: Literal["resized", "official"] = "resized"
    shuffle: bool = False
    drop_last: bool = False
    norm_bias: Literal["none", "outside_blocks", "all"] = "none"
    #: What the last ``scores`` / ``select`` did (see ``record``); not an option.
    _last: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    mergeable: ClassVar[bool] = True
    #: What the registry-parametrised tests use: a selection that needs no data.
    test_overrides: ClassVar[dict] = {"criterion": "magnitude"}

    def check_task(self, task) -> None:
        if self.criterion == "gradient" and self.loss != "task" and task.labels != "int":
            kind = "real-valued targets" if task.labels == "float" else f"{task.labels} labels, not class labels"
            raise ConfigError(
                f"selector 'gps' with loss {self.loss!r} scores weights by a classification loss over class labels; "
                f"task {task.name!r} has {kind} (use loss=task, the task's own loss, or criterion=magnitude or random)"
            )

    def __post_init__(self):
        if self.k < 1:
            raise ValueError(f"k must be >= 1, got {self.k}")
        if self.temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")

    # ---- the selector contract ----------------------------------------------------------------------------------
    def prepare(self, model, data, *, normalize="inception", batch_size=32, progress=False, source=None, task=None):
        """The selection (:meth:`select` of :meth:`scores`); the pass's batch size is ``batch_size`` unless set.
        ``task``: the run's :class:`~vpeft.tasks.base.Task`, whose loss ``loss=task`` takes."""
        return self.select(
            model,
            self.scores(model, data, normalize, self.batch_size or batch_size, progress, source=source, task=task),
        )

    def structure_only(self, model):
        """The selection by magnitude: what trains (and its memory) does not depend on the criterion."""
        sel = type(self).from_dict({**self.to_dict(), "criterion": "magnitude"})
        return sel.select(model, sel.scores(model))

    def state_from_checkpoint(self, model, trainable_state):
        return selection_from_state(model, trainable_state)

    # ---- selection ----------------------------------------------------------------------------------------------
    def scores(
        self, backbone, dataset=None, normalize_kind="inception", batch_size=32, progress=False, source=None, task=None
    ):
        """Per weight name, the selection score of every entry (same shape as the weight). ``source`` is the
        ``(data config, split)`` the dataset was loaded from: ``views=official`` decodes that split again; ``task``
        is the run's task (``loss=task``: its batch preparation and loss)."""
        self._last = {
            "selection_amp": self.selection_amp,
            "views": self.views,
            "shuffle": self.shuffle,
            "drop_last": self.drop_last,
        }
        sites = weight_sites(backbone)
        if self.criterion == "magnitude":
            return {n: m.weight.detach().abs() for n, m in sites.items()}
        if self.criterion == "random":  # drawn on the CPU, so the selection is the same on every device
            g = torch.Generator().manual_seed(self.seed)
            return {
                n: torch.rand(m.weight.shape, generator=g, device="cpu").to(m.weight.device) for n, m in sites.items()
            }
        if dataset is None:
            raise ConfigError("gps with criterion=gradient needs the training data for its gradient pass")
        if self.loss == "task" and task is None:
            raise ConfigError("gps loss=task needs the run's task (its batch preparation and loss) for its pass")
        device = next(backbone.parameters()).device
        amp = self.selection_amp
        if amp != "none" and device.type != "cuda":
            warnings.warn(f"gps selection_amp={amp!r} is ignored on {device.type}; the selection pass runs in fp32")
            amp = "none"
        src = None
        if self.loss == "supcon" and self.views == "official":
            if source is None or source[0] is None or source[1] is None:
                warnings.warn(
                    "gps views=official needs the data config and split the training data came from; "
                    "using the resized views"
                )
            else:
                ds = dataset.ds if hasattr(dataset, "ds") else dataset
                src = SourceImages(source[0], source[1], backbone.num_classes, ds.labels)
        self._last.update(
            {
                "selection_amp_used": amp,
                "views_used": None if self.loss != "supcon" else ("official" if src is not None else "resized"),
                "view_interpolation": src.interpolation if src else None,
            }
        )
        grads = gradient_pass(
            backbone, sites, dataset, self, normalize_kind, batch_size, progress, AMP_DTYPES.get(amp), src, task
        )
        if src is not None:
            self._last["source_sizes"] = src.size_range()
        if self.amp_compare and amp != "none":
            reference = self.select(
                backbone,
                gradient_pass(backbone, sites, dataset, self, normalize_kind, batch_size, progress, None, src, task),
            )
            self._last["amp_rows_differing"] = rows_differing(backbone, reference, self.select(backbone, grads))
        return grads

    def record(self) -> dict:
        """What the last selection did, for the selection block of the run's result: ``criterion``, ``level`` and
        ``k``, the options that shape the pass as asked and as used (``selection_amp_used``, ``views_used``,
        ``view_interpolation``), the images the pass saw (``pass_images``), the range of their source sizes
        (``source_sizes``: ``[min h, min w, max h, max w]``, official views), ``amp_rows_differing``
        (``amp_compare``) and ``tied_rows`` (rows whose K-th score tied, resolved as the authors' ``argsort``)."""
        return {"criterion": self.criterion, "level": self.level, "k": self.k, **self._last}

    def describe(self) -> str:
        where = "-per-neuron" if self.level == "neuron" else f" x rows per {self.level}"
        return f"{self.k}{where} {self.criterion}"

    def select(self, backbone, scores: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Flat indices of the selected entries of every weight, on that weight's device."""
        sites = weight_sites(backbone)
        scores = {n: scores[n].to(m.weight.device) for n, m in sites.items()}
        out = {}
        if self.level == "net":
            flat = torch.cat([scores[n].reshape(-1).float() for n in sites])
            total = self.k * sum(m.weight.shape[0] for m in sites.values())
            keep = torch.zeros(flat.numel(), dtype=torch.bool, device=flat.device)
            keep[torch.topk(flat, min(total, flat.numel())).indices] = True
            start = 0
            for n, m in sites.items():
                size = m.weight.numel()
                out[n] = torch.nonzero(keep[start : start + size]).flatten().to(m.weight.device)
                start += size
            return out
        tied = 0
        for n, m in sites.items():
            s = scores[n].reshape(m.weight.shape[0], -1).float()
            if self.k > s.shape[1]:
                raise ConfigError(f"gps k={self.k} but {n} has only {s.shape[1]} inputs per neuron")
            if self.level == "neuron":
                cols, t = top_k_per_row(s, self.k)  # rows x k
                tied += t
                rows = torch.arange(s.shape[0], device=s.device).unsqueeze(1)
                out[n] = (rows * s.shape[1] + cols).flatten().sort().values
            else:
                out[n] = torch.topk(s.flatten(), self.k * s.shape[0]).indices.sort().values
        if self.level == "neuron":
            self._last["tied_rows"] = tied
        return out

    # ---- sparse fine-tuning -------------------------------------------------------------------------------------
    def apply(self, backbone, selection: dict[str, torch.Tensor]) -> None:
        """Freeze the selected weights, add trainable values at the selected entries, unfreeze the full kinds."""
        sites = weight_sites(backbone)
        unknown = sorted(set(selection) - set(sites))
        if unknown:
            raise ConfigError(f"gps selection names layers this backbone does not have: {unknown[:3]}")
        modules = nn.ModuleDict()
        for name, m in sites.items():
            if name not in selection or len(selection[name]) == 0:
                continue
            sv = SelectedValues(m.weight, selection[name])
            modules[name.replace(".", "_")] = sv
            m.weight.requires_grad_(False)
            if isinstance(m, nn.Linear):  # x in the output's dtype: under autocast the layer computes in bf16/fp16
                backbone.register_module_hook(
                    m,
                    post=lambda x, y, sv=sv, o=m.out_features: (
                        y + SparseDelta.apply(x.to(y.dtype), sv.gps_values, sv.rows, sv.cols, o)
                    ),
                )
            else:
                backbone.register_module_hook(
                    m,
                    post=lambda x, y, sv=sv, m=m: (
                        y + F.conv2d(x, sv.dense(m.weight), None, m.stride, m.padding, m.dilation, m.groups)
                    ),
                )
        backbone.extras["gps"] = modules
        backbone.selector = self
        for p in fully_trained(backbone, self.train_fully, self.norm_bias):
            p.requires_grad_(True)

    def merge(self, backbone) -> None:
        sites = weight_sites(backbone)
        with torch.no_grad():
            for key, sv in backbone.extras["gps"].items():
                m = _find(sites, key)
                m.weight.add_(sv.dense(m.weight))


def _find(sites, key):
    for n, m in sites.items():
        if n.replace(".", "_") == key:
            return m
    raise ConfigError(f"gps: no layer of this backbone matches {key!r}")


def selection_from_state(backbone, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The selection recorded in a trainable state dict (its ``extras.gps.*.gps_index`` tensors)."""
    sites = weight_sites(backbone)
    out = {}
    for k, v in state.items():
        if k.startswith("extras.gps.") and k.endswith(".gps_index"):
            key = k[len("extras.gps.") : -len(".gps_index")]
            m = _find(sites, key)
            out[next(n for n, s in sites.items() if s is m)] = v
    return out


def top_k_per_row(s: torch.Tensor, k: int) -> tuple[torch.Tensor, int]:
    """The columns of every row's K largest scores (``rows x k``), and how many rows had their K-th and (K+1)-th
    scores tied. The authors keep the last K entries of the row's numpy ``argsort``; where the K largest are
    unique that is ``torch.topk``'s set, where they tie (an all-zero row: a neuron with no gradient, or one flushed
    to 0 in fp16) the pick depends on the sort: the last K of :func:`legacy_argsort` here. For an all-zero row of
    768 that is column 767 (766 for K = 2); ``torch.topk`` on the CPU would pick 0 (and 1)."""
    top = torch.topk(s, min(k + 1, s.shape[1]), dim=1)
    cols = top.indices[:, :k]
    if k == s.shape[1] or s.device.type == "meta":  # meta: shapes only (``vpeft measure``)
        return cols, 0
    a, b = top.values[:, k - 1], top.values[:, k]
    tied = torch.nonzero((a == b) | (a.isnan() & b.isnan())).flatten().tolist()
    if not tied:
        return cols, 0
    cols, rows, constant = cols.clone(), s[tied].cpu(), None
    for i, r in enumerate(tied):
        if bool((rows[i] == rows[i, 0]).all()):  # a constant row's order depends on its length only
            constant = constant or legacy_argsort(rows[i].tolist())[-k:]
            last = constant
        else:
            last = legacy_argsort(rows[i].tolist())[-k:]
        cols[r] = torch.tensor(last, device=cols.device)
    return cols, len(tied)


def rows_differing(backbone, a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> int:
    """How many output neurons (rows of the selected weights) have different selected entries in ``a`` and ``b``."""
    out = 0
    for n, m in weight_sites(backbone).items():
        rows = m.weight.shape[0]
        masks = []
        for sel in (a, b):
            mask = torch.zeros(m.weight.numel(), dtype=torch.bool)
            mask[sel[n].cpu()] = True
            masks.append(mask.view(rows, -1))
        out += int((masks[0] != masks[1]).any(1).sum())
    return out


def supcon_loss(features: torch.Tensor, labels: torch.Tensor, temperature: float = 0.07) -> torch.Tensor:
    """Supervised contrastive loss (Khosla et al., arXiv:2004.11362), ``contrast_mode='all'``.

    Args:
        features: ``[B, views, D]``, L2-normalised.
        labels: ``[B]``.
    """
    b, v, _ = features.shape
    feats = torch.cat(features.unbind(1), 0)  # views stacked: [v B, D]
    lab = labels.repeat(v)
    logits = feats @ feats.t() / temperature
    logits = logits - logits.max(1, keepdim=True).values.detach()
    self_mask = torch.eye(b * v, dtype=torch.bool, device=feats.device)
    pos = (lab[:, None] == lab[None, :]) & ~self_mask
    exp = torch.exp(logits).masked_fill(self_mask, 0)
    log_prob = logits - torch.log(exp.sum(1, keepdim=True))
    mean_log_prob_pos = (log_prob * pos).sum(1) / pos.sum(1).clamp(min=1)
    return -mean_log_prob_pos.mean()  # temperature / base_temperature = 1


def gradient_pass(
    backbone,
    sites,
    dataset,
    cfg: GPSConfig,
    normalize_kind,
    batch_size,
    progress,
    amp=None,
    source: SourceImages | None = None,
    task=None,
):
    """|gradient| of every site's weight, summed over one pass over the training data (``cfg.loss``; drop-path
    active, as the authors). ``amp``: the autocast dtype of the forward pass and the loss, without loss scaling
    (None: fp32); ``source``: the split at source size, for the authors' views (None: ``cfg.views=resized``);
    ``task``: the run's task (a :class:`~vpeft.tasks.base.Task`), whose ``prepare`` (no augmentation) and ``loss``
    ``loss=task`` uses on the data's batch mappings (``DeviceData.mappings``: images and labels, masks, ...)."""
    from ..data.augment import gps_views

    state = {id(p): p.requires_grad for p in backbone.parameters()}
    for p in backbone.parameters():
        p.requires_grad_(False)
    grads = {n: torch.zeros_like(m.weight) for n, m in sites.items()}
    for m in sites.values():
        m.weight.requires_grad_(True)
        m.weight.grad = None
    if cfg.loss == "ce":
        for p in backbone.head.parameters():
            p.requires_grad_(True)
    was_training = backbone.training
    backbone.train()  # drop-path active, as the authors
    rng_state = torch.get_rng_state()
    torch.manual_seed(cfg.seed)
    device = next(backbone.parameters()).device
    size = backbone.input_size
    # Batches on the model's device (a split the trainer placed there, or streamed); on a GPU the two views are
    # drawn there in one batch (their parameters from a generator seeded by cfg.seed).
    data = dataset if isinstance(dataset, DeviceData) else DeviceData(dataset, device, resident=False)
    views_gen = torch.Generator().manual_seed(cfg.seed)
    count = len(source) if source is not None else len(data)
    order = torch.randperm(count, generator=views_gen) if cfg.shuffle else None
    if source is not None:
        batches = source.batches(batch_size, torch.arange(count) if order is None else order, cfg.drop_last)
        total = source.num_batches(batch_size, cfg.drop_last)
    elif cfg.loss == "task":  # whole batch mappings (a segmentation batch holds its masks): the task reads them
        batches = ((b, None) for b, _ in data.mappings(batch_size, order, drop_last=cfg.drop_last))
        total = data.num_batches(batch_size, cfg.drop_last)
    else:
        batches = ((x, y) for x, y, _ in data.batches(batch_size, order, drop_last=cfg.drop_last))
        total = data.num_batches(batch_size, cfg.drop_last)
    if total == 0:
        raise ConfigError(f"gps drop_last with batch_size {batch_size} leaves no batch of the {count} training images")
    autocast = (lambda: torch.autocast(device.type, dtype=amp)) if amp is not None else nullcontext
    pool = ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) if source is not None else None
    images = 0
    try:
        for x, y in tqdm(batches, total=total, desc="gps selection", disable=not progress, leave=False):
            if cfg.loss == "task":  # x: the batch mapping
                batch = task.prepare(x, train=False)
                images += batch_len(batch)
                with autocast(), task.model_context(batch):
                    loss = task.loss(backbone(batch["image"]), batch)
                loss.backward()
                continue
            y = y.to(device)
            images += len(y)
            if cfg.loss == "supcon":  # B x 2 x C x H x W
                if source is not None:
                    views = official_views(x, size, views_gen, source.interpolation, device, pool)
                else:
                    views = gps_views(x, size, views_gen) if x.is_cuda else two_views(x, size)
                flat = normalize(views.flatten(0, 1), normalize_kind)
                with autocast():
                    feats = backbone.forward_head(backbone.forward_features(flat), pre_logits=True)
                    feats = F.normalize(feats.view(len(y), 2, -1), dim=-1)
                    loss = supcon_loss(feats, y, cfg.temperature)
            else:
                x = crop_center(x, size)  # the augmented layouts decode larger: their test-time centre crop
                with autocast():
                    loss = F.cross_entropy(backbone(normalize(x, normalize_kind)), y)
            loss.backward()  # summed over the pass: .grad accumulates (no loss scaling, as the authors)
        for n, m in sites.items():
            if m.weight.grad is not None:
                grads[n] = m.weight.grad.detach().abs()
                m.weight.grad = None
    finally:
        if pool is not None:
            pool.shutdown()
        for p in backbone.parameters():
            p.requires_grad_(state[id(p)])
            p.grad = None
        backbone.train(was_training)
        torch.set_rng_state(rng_state)
    cfg._last["pass_images"] = images
    return grads
