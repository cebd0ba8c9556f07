"""The VTAB-1K suite: its 19 tasks by their usual folder names, class counts and groups, and how results average."""

from __future__ import annotations

from statistics import mean

#: folder name -> (number of classes, group), NOAH's layout (METHODS.md section 5).
VTAB_TASKS: dict[str, tuple[int, str]] = {
    "caltech101": (102, "natural"),
    "cifar": (100, "natural"),
    "dtd": (47, "natural"),
    "oxford_flowers102": (102, "natural"),
    "oxford_iiit_pet": (37, "natural"),
    "svhn": (10, "natural"),
    "sun397": (397, "natural"),
    "patch_camelyon": (2, "specialized"),
    "eurosat": (10, "specialized"),
    "resisc45": (45, "specialized"),
    "diabetic_retinopathy": (5, "specialized"),
    "clevr_count": (8, "structured"),
    "clevr_dist": (6, "structured"),
    "dmlab": (6, "structured"),
    "kitti": (4, "structured"),
    "dsprites_loc": (16, "structured"),
    "dsprites_ori": (16, "structured"),
    "smallnorb_azi": (18, "structured"),
    "smallnorb_ele": (9, "structured"),
}
GROUPS = ("natural", "specialized", "structured")


def canonical_classes(task: str) -> int | None:
    entry = VTAB_TASKS.get(task)
    return entry[0] if entry else None


def vtab_summary(accuracies: dict[str, float]) -> dict[str, float | None]:
    """Both conventions the papers mix, named: the plain mean over the tasks given (``mean_of_tasks``; the
    19-task mean when all are there) and the mean of the three group means (``mean_of_groups``), with each group's
    mean. Tasks outside VTAB-1K count in ``mean_of_tasks`` only."""
    out: dict[str, float | None] = {"mean_of_tasks": mean(accuracies.values()) if accuracies else None}
    for g in GROUPS:
        vals = [a for t, a in accuracies.items() if VTAB_TASKS.get(t, (0, ""))[1] == g]
        out[g] = mean(vals) if vals else None
    groups = [out[g] for g in GROUPS if out[g] is not None]
    out["mean_of_groups"] = mean(groups) if len(groups) == len(GROUPS) else None
    out["tasks"] = len(accuracies)
    return out
