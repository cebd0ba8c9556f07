"""Accuracy on a domain-generalisation target whose test list covers only some of the model's classes (issue 17).

ImageNet-A and -R hold 200 of ImageNet's 1000 classes. NOAH and DTL take the argmax over all 1000 outputs
(``classes: all``, what DTL's Table 4 reports); CoOp and MaPLe take it over the 200 classes present (``classes:
present``, the benchmarks' official protocol). :func:`accuracy_all_and_present` gives both from one set of logits.
A leaf: it imports only torch and numpy.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import torch


def accuracy_all_and_present(logits, labels, present: Iterable[int]) -> dict[str, float]:
    """Top-1 accuracy in percent, with the argmax over every class (``all``) and over ``present`` only.

    Args:
        logits: ``(n, num_classes)`` scores (a tensor or an array).
        labels: ``(n,)`` true class labels, each one of ``present``.
        present: The classes present in the target's list (restricts the argmax of the ``present`` mode).

    Returns:
        ``{"all": ..., "present": ...}``, each in percent.

    Raises:
        ValueError: On empty or mis-shaped inputs, a class of ``present`` outside ``0..num_classes-1``, or a label
            not in ``present``.
    """
    logits = torch.as_tensor(np.asarray(logits)) if not isinstance(logits, torch.Tensor) else logits.detach()
    labels = torch.as_tensor(np.asarray(labels)) if not isinstance(labels, torch.Tensor) else labels.detach()
    labels = labels.to(logits.device).long()
    if logits.ndim != 2 or labels.shape != (logits.shape[0],) or logits.shape[0] == 0:
        raise ValueError(
            f"expected logits (n, num_classes) and labels (n,) with n > 0, got {tuple(logits.shape)} and "
            f"{tuple(labels.shape)}"
        )
    num_classes = logits.shape[1]
    keep = sorted({int(c) for c in present})
    if not keep:
        raise ValueError("present names no class")
    if keep[0] < 0 or keep[-1] >= num_classes:
        raise ValueError(f"present classes must lie in 0..{num_classes - 1}, got {keep[0]}..{keep[-1]}")
    mask = torch.zeros(num_classes, dtype=torch.bool, device=logits.device)
    mask[keep] = True
    missing = sorted(set(labels.tolist()) - set(keep))
    if missing:
        raise ValueError(f"labels {missing[:10]} are not among the {len(keep)} present classes")
    restricted = logits.masked_fill(~mask, float("-inf"))
    n = labels.numel()
    return {
        "all": 100.0 * int((logits.argmax(1) == labels).sum()) / n,
        "present": 100.0 * int((restricted.argmax(1) == labels).sum()) / n,
    }
