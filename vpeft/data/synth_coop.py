"""A generated suite in CoOp's layout (issue 19): for tests, CI and ``vpeft demo --suite clip``, where Flowers102,
DTD and UCF101 are not at hand.

Each task folder is one of vpeft's generated classification tasks (:mod:`vpeft.data.synth`: ``shapes``, ``texture``)
written the way CoOp lays a dataset out: the images under ``images/`` and a ``split_zhou_<Task>.json`` beside them
holding ``{"train" | "val" | "test": [[relative path, label, class name], ...]}`` (class names from the task's
``classes.txt``), so the ``coop`` layout samples its few-shot training split exactly as Dassl does. The same seed
gives byte-identical files.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from .synth import generate_task

#: Generated tasks in the suite and the CoOp dataset name of their split file.
COOP_TASKS = {"shapes": "Shapes", "texture": "Texture"}
#: Images per split (``test``: the ``n_test`` argument); CoOp's val is a held-out part of the training data.
SPLIT_SIZES = {"train": 160, "val": 40}


def generate_coop(out: str | Path, seed: int = 0, size: int = 32, n_test: int = 100) -> list[Path]:
    """Write ``out/<task>/`` for each of :data:`COOP_TASKS` and return the task folders."""
    out = Path(out)
    folders = []
    for task, dataset in COOP_TASKS.items():
        scratch = out / f".{task}-vtab"
        src = generate_task(scratch, task, seed=seed, size=size, n_test=n_test)
        names = [line.split(maxsplit=1)[1] for line in (src / "classes.txt").read_text().splitlines() if line.strip()]
        root = out / task
        if root.exists():
            shutil.rmtree(root)
        (root / "images").mkdir(parents=True)
        splits = {}
        rows = {
            "train": (src / "train800.txt").read_text().splitlines()[: SPLIT_SIZES["train"]],
            "val": (src / "val200.txt").read_text().splitlines()[: SPLIT_SIZES["val"]],
            "test": (src / "test.txt").read_text().splitlines(),
        }
        for split, lines in rows.items():
            items = []
            for line in lines:
                rel, label = line.rsplit(maxsplit=1)
                name = f"{split}_{Path(rel).name}"
                shutil.copyfile(src / rel, root / "images" / name)
                items.append([name, int(label), names[int(label)]])
            splits[split] = items
        (root / f"split_zhou_{dataset}.json").write_text(_rows_per_line(splits))
        shutil.rmtree(scratch)
        folders.append(root)
    return folders


def _rows_per_line(splits: dict) -> str:
    """The split file as JSON with one ``[path, label, name]`` row per line (errors name rows by line)."""
    parts = []
    for split, items in splits.items():
        rows = ",\n".join(f"    {json.dumps(item)}" for item in items)
        parts.append(f"  {json.dumps(split)}: [\n{rows}\n  ]")
    return "{\n" + ",\n".join(parts) + "\n}\n"
