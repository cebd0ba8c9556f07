"""Batches on the training device, gathered without Python per-image work.

A decoded split (uint8 ``[N, 3, H, W]``) that fits lives on the device (VTAB-1K's 1,000 training images at 224 px are
150 MB): the epoch's order is moved there once and every batch is one ``index_select``. A split that does not fit
stays in host memory: each batch is gathered straight into pinned memory and copied with ``non_blocking=True`` one
batch ahead, so the copy is queued while the GPU still works on the previous step. On the CPU both are the plain
gather of the same indices (``index_select`` gives the same values as advanced indexing, 8x faster).

The training loop and evaluation take batches as mappings (:meth:`DeviceData.mappings`: ``{"image": uint8 images,
"label": labels}``, or ``{"image", "mask"}`` for a split with masks: segmentation), which the run's task prepares;
:meth:`DeviceData.batches` gives the same tensors as a tuple (the GPS selection pass reads them so; a segmentation
split's masks stand where the labels do).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Optional

import torch

from .vtab import ImageDataset, StreamedSplit

#: A split lives on a CUDA device when all the splits given together take at most this share of its free memory.
RESIDENT_SHARE = 0.25


def fits_on_device(datasets, device: torch.device, share: float = RESIDENT_SHARE) -> bool:
    """Whether ``datasets`` (decoded splits) together fit in ``share`` of the device's free memory."""
    if device.type != "cuda":
        return device.type == "cpu"
    need = sum(
        d.images.numel() * d.images.element_size() + d.labels.numel() * 8 + _mask_bytes(d)
        for d in datasets
        if d is not None
    )
    free, _ = torch.cuda.mem_get_info(device)
    return need <= share * free


def _mask_bytes(ds) -> int:
    masks = getattr(ds, "masks", None)
    return 0 if masks is None else masks.numel() * masks.element_size()


class _Split:
    """What both kinds of prepared split share: their batches as mappings and how many there are. A subclass gives
    ``__len__``, ``batches`` and ``key`` (the name of the batches' targets)."""

    key = "label"

    def num_batches(self, batch_size: int, drop_last: bool = False) -> int:
        n = len(self)
        return n // batch_size if drop_last else (n + batch_size - 1) // batch_size

    def mappings(
        self,
        batch_size: int,
        order: Optional[torch.Tensor] = None,
        shard: tuple[int, int] = (0, 1),
        drop_last: bool = False,
    ) -> Iterator[tuple[dict[str, torch.Tensor], int]]:
        """``(batch, global batch size)``: the batches of ``batches`` as mappings ``{"image", "label"}`` (a split
        with masks: ``{"image", "mask"}``)."""
        for images, targets, size in self.batches(batch_size, order, shard, drop_last):
            yield {"image": images, self.key: targets}, size


class DeviceData(_Split):
    """One split prepared for ``device``.

    Args:
        ds: The decoded split.
        device: Where batches are used.
        resident: Keep the split on the device and gather there (True), or gather each batch in host memory
            (pinned, on CUDA) and copy it over (False). On the CPU both give the same batches.

    Attributes:
        key: The batches' target key: ``"label"``, or ``"mask"`` for a split with masks (then :attr:`labels` holds
            the masks, uint8 ``[N, H, W]``).
    """

    def __init__(self, ds: ImageDataset, device: torch.device, resident: bool = True):
        self.ds, self.device, self.resident = ds, torch.device(device), resident
        masks = getattr(ds, "masks", None)
        self.key = "label" if masks is None else "mask"
        targets = ds.labels if masks is None else masks
        self.images = ds.images.to(self.device) if resident else ds.images
        self.labels = targets.to(self.device) if resident else targets
        self.stream_pinned = not resident and self.device.type == "cuda"

    def __len__(self) -> int:
        return len(self.ds)

    def _gather(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.resident:
            return self.images.index_select(0, idx), self.labels.index_select(0, idx)
        idx = idx.cpu()
        pin = self.stream_pinned
        x = torch.empty((len(idx),) + tuple(self.images.shape[1:]), dtype=self.images.dtype, pin_memory=pin)
        y = torch.empty((len(idx),) + tuple(self.labels.shape[1:]), dtype=self.labels.dtype, pin_memory=pin)
        torch.index_select(self.images, 0, idx, out=x)
        torch.index_select(self.labels, 0, idx, out=y)
        return x.to(self.device, non_blocking=pin), y.to(self.device, non_blocking=pin)

    def batches(
        self,
        batch_size: int,
        order: Optional[torch.Tensor] = None,
        shard: tuple[int, int] = (0, 1),
        drop_last: bool = False,
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor, int]]:
        """``(images, labels, global batch size)`` on the device, in ``order`` (a CPU permutation; default: in
        turn). With ``shard=(rank, world)`` each batch holds only this process's share ``batch[rank::world]`` (which
        may be empty for a last batch smaller than the world)."""
        n = len(self)
        order = torch.arange(n) if order is None else order
        if self.resident and self.device.type == "cuda":  # one non-blocking copy per epoch
            order = order.pin_memory().to(self.device, non_blocking=True)
        elif self.resident and self.device.type != "cpu":
            order = order.to(self.device)
        stop = n - n % batch_size if drop_last else n
        rank, world = shard
        pending = None
        for i in range(0, stop, batch_size):
            idx = order[i : i + batch_size]
            size = len(idx)
            if world > 1:
                idx = idx[rank::world]
            nxt = (*self._gather(idx), size)
            if pending is not None:
                yield pending
            pending = nxt
        if pending is not None:
            yield pending


class StreamedData(_Split):
    """An evaluation split too large to hold decoded (:class:`~vpeft.data.vtab.StreamedSplit`), read a chunk at a time
    each time it is evaluated: the batches of :class:`DeviceData` (the same images in the same order and sharding), with
    at most one chunk of ``data.eval_memory_mb`` decoded in host memory. Evaluation only: no shuffled order."""

    resident = False

    def __init__(self, split: StreamedSplit, device: torch.device):
        self.split, self.device = split, torch.device(device)

    def __len__(self) -> int:
        return len(self.split)

    def batches(
        self,
        batch_size: int,
        order: Optional[torch.Tensor] = None,
        shard: tuple[int, int] = (0, 1),
        drop_last: bool = False,
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor, int]]:
        """``(images, labels, global batch size)`` in list order, batches of ``batch_size`` across chunk borders."""
        if order is not None or drop_last:
            raise ValueError("a streamed split is read in list order, whole: evaluation only")
        rank, world = shard
        held_x, held_y = [], []

        def emit(x, y):
            size = len(x)
            if world > 1:
                x, y = x[rank::world], y[rank::world]
            return x.to(self.device), y.to(self.device), size

        for images, labels in self.split.chunks():
            held_x.append(images), held_y.append(labels)
            x, y = torch.cat(held_x), torch.cat(held_y)
            full = len(x) - len(x) % batch_size
            for i in range(0, full, batch_size):
                yield emit(x[i : i + batch_size], y[i : i + batch_size])
            held_x, held_y = [x[full:]], [y[full:]]
        if held_x and len(held_x[0]):
            yield emit(held_x[0], held_y[0])


def batch_len(batch: Mapping[str, torch.Tensor]) -> int:
    """The number of items in a batch mapping (the length of its tensors)."""
    return len(next(iter(batch.values())))


def batch_targets(batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """What an objective trains on: the soft targets where the task mixed or smoothed labels (``"target"``), else
    the labels, else a segmentation batch's masks."""
    for key in ("target", "label", "mask"):
        if key in batch:
            return batch[key]
    raise KeyError(f"a batch holds no 'target', 'label' or 'mask' (keys: {', '.join(batch)})")


def split_batch(batch: Mapping[str, torch.Tensor], size: int) -> Iterator[dict[str, torch.Tensor]]:
    """A batch mapping in micro-batches of ``size`` items (the last may be smaller), every tensor split alike."""
    parts = {k: v.split(size) for k, v in batch.items()}
    for i in range(len(next(iter(parts.values())))):
        yield {k: v[i] for k, v in parts.items()}
