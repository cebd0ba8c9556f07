"""The views of GPS's selection pass: torchvision's per-image pipeline on the decoded images (``two_views``, vpeft's
default on the CPU) and the authors' views, random-resized crops of every image at its own size
(``SourceImages``, ``official_views``). The batched on-device version is :func:`vpeft.data.augment.gps_views`."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

import torch

from ..data.entries import entries_for
from ..data.vtab import to_rgb
from ..errors import DataError


def two_views(images_u8: torch.Tensor, size) -> torch.Tensor:
    """GPS's two views with torchvision's per-image pipeline and the global RNG: what the selection pass uses on the
    CPU, where it is as fast as the batched :func:`vpeft.data.augment.gps_views` at 224 px and keeps the
    selections (and results) recorded before the batched version existed."""
    from torchvision.transforms import v2

    aug = v2.Compose(
        [
            v2.RandomResizedCrop(size, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3), antialias=True),
            v2.RandomHorizontalFlip(),
            v2.RandomApply([v2.ColorJitter(0.4, 0.4, 0.4, 0.1)], p=0.8),
            v2.RandomGrayscale(p=0.2),
        ]
    )
    return torch.stack([torch.stack([aug(img) for img in images_u8]) for _ in range(2)], 1)


class SourceImages:
    """A training split decoded at every image's own size (RGB uint8 ``3 x h x w``, not resized), batch by batch,
    for the authors' views. Not kept in the decode cache: the pass reads each image once, the sizes differ within
    most tasks (one stacked tensor cannot hold them), and at source size a split can be far larger than at the
    model's input size (KITTI's 1242 x 375 images: 1.4 GB per 1,000). The next batch decodes while one runs.

    Args:
        dc: The run's data config (root, format, few-shot list, ``skip_bad``).
        split: The training split.
        num_classes: The model's classes: entries outside the range are left out, as from the training split.
        labels: The training split's labels as loaded, to check that both read the same list.
    """

    def __init__(self, dc, split: str, num_classes: int, labels: torch.Tensor):
        entries, self.root = entries_for(dc, split)
        # The training split's filters (load_split): the label range and missing files; unreadable files (only
        # under skip_bad, or the training split would not have loaded) are left out when they fail to decode.
        self.entries = [e for e in entries if 0 <= e.label < num_classes and (self.root / e.path).is_file()]
        self.labels = torch.tensor([e.label for e in self.entries], dtype=torch.int64)
        self.skip_bad = dc.skip_bad
        same = len(self.labels) == len(labels) and torch.equal(self.labels, labels.cpu())
        if not same and not (self.skip_bad and len(self.labels) > len(labels)):
            raise DataError(f"split {split!r} of {dc.root} changed since the training split was loaded")
        # The authors' VTAB scripts pass --no-aug, which gives the model's bicubic; their FGVC scripts keep timm's
        # --train-interpolation random (bilinear or bicubic, drawn per view).
        self.interpolation = "bicubic" if dc.format == "vtab1k" else "random"
        self.smallest, self.largest = None, None

    def __len__(self) -> int:
        return len(self.entries)

    def _decode(self, e) -> torch.Tensor | None:
        import numpy as np
        from PIL import Image

        try:
            with Image.open(self.root / e.path) as img:
                img.load()
                return torch.from_numpy(np.asarray(to_rgb(img), dtype=np.uint8).transpose(2, 0, 1).copy())
        except Exception as ex:
            if self.skip_bad:
                return None
            raise DataError(f"{e.source}:{e.line}: cannot read image {self.root / e.path}: {ex}") from None

    def num_batches(self, batch_size: int, drop_last: bool) -> int:
        return len(self) // batch_size if drop_last else -(-len(self) // batch_size)

    def batches(self, batch_size: int, order: torch.Tensor, drop_last: bool):
        """``(images, labels)``: lists of decoded images (on the CPU) and their labels, ``batch_size`` entries
        at a time in ``order`` (entries that fail to decode under ``skip_bad`` are left out)."""
        stop = len(self) - len(self) % batch_size if drop_last else len(self)
        index = [order[i : i + batch_size].tolist() for i in range(0, stop, batch_size)]
        with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool:
            pending = [pool.submit(self._decode, self.entries[j]) for j in index[0]] if index else []
            for b, idx in enumerate(index):
                images = [f.result() for f in pending]
                if b + 1 < len(index):
                    pending = [pool.submit(self._decode, self.entries[j]) for j in index[b + 1]]
                keep = [i for i, im in enumerate(images) if im is not None]
                if not keep:
                    continue
                images = [images[i] for i in keep]
                hw = torch.tensor([im.shape[-2:] for im in images])
                low, high = hw.amin(0), hw.amax(0)
                self.smallest = low if self.smallest is None else torch.minimum(self.smallest, low)
                self.largest = high if self.largest is None else torch.maximum(self.largest, high)
                yield images, self.labels[[idx[i] for i in keep]]

    def size_range(self) -> list[int] | None:
        """``[min h, min w, max h, max w]`` of the images decoded so far."""
        return None if self.smallest is None else self.smallest.tolist() + self.largest.tolist()


def official_views(
    images: list[torch.Tensor], size, generator: torch.Generator, interpolation: str = "bicubic", device=None, pool=None
) -> torch.Tensor:
    """The authors' two views (``TwoCropTransform(transforms_contrastaug_train)``) of every image, each at its own
    size, uint8 ``B x 2 x 3 x h x w`` on ``device``: timm's ``RandomResizedCropAndInterpolation`` (scale 0.08-1,
    ratio 3/4-4/3; its rule is torchvision's, drawn by :func:`vpeft.data.augment.crop_boxes`), the crop resized by
    torchvision's antialiased ``interpolation`` (``bicubic``, ``bilinear``, or ``random``: one of the two per view,
    as timm), a flip with p 0.5; then colour jitter (0.4, 0.4, 0.4, 0.1) with p 0.8 and grayscale with p 0.2 on
    the whole batch on ``device`` (:mod:`vpeft.data.augment`). Every draw comes from ``generator`` (a CPU one).

    The crops are resized on the CPU on every device (by ``pool``'s threads if given), then copied over as one
    batch: torch's uint8 CPU kernel rounds and clamps between its two passes as PIL does (the authors resize PIL
    images), within 2 grey levels of PIL's; its float kernel (all CUDA has) does not clamp the bicubic overshoot
    between the passes and differs by up to 20 levels on high-contrast crops that it enlarges."""
    from torchvision.transforms import InterpolationMode
    from torchvision.transforms.v2 import functional as TF

    from ..data.augment import color_jitter, crop_boxes, random_grayscale

    oh, ow = (size, size) if isinstance(size, int) else size
    jobs = []  # (crop, bicubic, flip) per view, image-major
    for img in images:
        boxes = crop_boxes(2, img.shape[-2], img.shape[-1], generator).tolist()
        flips = (torch.rand(2, generator=generator) < 0.5).tolist()
        cubic = (
            [interpolation == "bicubic"] * 2
            if interpolation != "random"
            else (torch.rand(2, generator=generator) < 0.5).tolist()
        )
        jobs += [(img[:, top : top + h, left : left + w], c, f) for (top, left, h, w), c, f in zip(boxes, cubic, flips)]

    def resize(job):
        crop, bicubic, flip = job
        mode = InterpolationMode.BICUBIC if bicubic else InterpolationMode.BILINEAR
        view = TF.resize(crop, [oh, ow], interpolation=mode, antialias=True)
        return view.flip(-1) if flip else view

    out = torch.stack(list(pool.map(resize, jobs) if pool is not None else map(resize, jobs)))
    if device is not None and torch.device(device).type == "cuda":
        out = out.pin_memory()
    out = out.to(device, non_blocking=True) if device is not None else out
    out = color_jitter(out, generator, 0.4, 0.4, 0.4, 0.1, p=0.8)
    return random_grayscale(out, generator, p=0.2).unflatten(0, (len(images), 2))
