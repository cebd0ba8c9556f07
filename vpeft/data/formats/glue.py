"""``glue``: a GLUE task's folder of official TSV files (or JSONL), text for a text backbone (issue 20).

The folder is one task's, named as GLUE names it (``RTE``, ``SST-2``, ``STS-B``, ...; ``data.glue_task`` names the
task where the folder's name does not), holding ``train`` and ``dev`` (``.tsv`` as GLUE's download, or ``.jsonl``);
:mod:`vpeft.data.glue` reads them (quoting off, header-less CoLA, short rows skipped and counted). Splits follow
``data.split_rule``: ``attempt`` (ATTEMPT's re-split: small tasks halve a seeded permutation of dev into validation
and test, large ones hold 1,000 training rows out as validation and test on dev, MNLI validates on mismatched and
tests on matched; seeded by ``data.split_seed``, ATTEMPT's 42 in recipe ``attempt_glue``) or ``glue`` (GLUE's own:
train, and dev as the test split; no validation split). The texts are tokenised by the run's backbone
(:meth:`vpeft.tasks.base.TaskConfig.text_encoder`) when the split is loaded, into int64 token ids.
"""

from __future__ import annotations

import warnings
from pathlib import Path

from ...errors import ConfigError, DataError
from ...registry import FORMATS
from ..entries import Entry, Layout
from ..glue import SPLIT_RULES, TextExample, glue_task, load_task, split_glue


@FORMATS.register("glue")
class Glue(Layout):
    """GLUE TSV (or JSONL) files of one task: ``train``, ``dev`` (and ``test``); text, split by ``data.split_rule``
    (ATTEMPT's re-split by default), tokenised by the backbone. Tasks ``text_classify`` and ``text_regress``."""

    kind = "text"
    markers = ("train.tsv", "dev.tsv")
    check_splits = ()
    label_kinds = ("int", "float")
    options = ("split_rule", "split_seed", "glue_task", "max_train")

    def task(self, root: Path, glue_task_name: str | None = None):
        """The GLUE task of the folder: ``data.glue_task``, else the folder's name."""
        name = glue_task_name or Path(root).resolve().name
        try:
            return glue_task(name)
        except ConfigError:
            raise ConfigError(
                f"data folder {root}: {name!r} is not a GLUE task's name; name the task with data.glue_task "
                "(cola, sst2, mrpc, qqp, stsb, mnli, qnli, rte, wnli)"
            ) from None

    def label_kind(self, root, glue_task_name: str | None = None) -> str | None:
        """``float`` for STS-B's scores, ``int`` for the other tasks' classes; None where the folder names no task."""
        try:
            task = self.task(Path(root), glue_task_name)
        except ConfigError:
            return None
        return "float" if task.label_names is None else "int"

    def task_hint(self, kind: str) -> str:
        """The tasks that read ``kind`` labels of a GLUE folder."""
        if kind == "float":
            return "use --task text_regress (an encoder) or text2text_regress (T5)"
        return "use --task text_classify (an encoder) or text2text (T5)"

    def class_names(self, root: Path) -> list[str] | None:
        try:
            names = self.task(root).label_names
        except ConfigError:
            return None
        return list(names) if names else None

    def entries(self, root: Path, split: str, shot: int = 16, seed: int = 0, **options) -> tuple[list[Entry], Path]:
        raise DataError(
            f"{root} holds GLUE text, not images: train it with a text backbone (hf_text:...) and --task "
            "text_classify or text_regress"
        )

    def examples(
        self,
        root: Path,
        split: str,
        split_rule: str = "attempt",
        split_seed: int = 42,
        glue_task: str | None = None,
        max_train: int | None = None,
    ) -> list[TextExample]:
        """The labelled examples of ``split`` (``train``, ``val``, ``test``) under ``split_rule``."""
        if split_rule not in SPLIT_RULES:
            raise ConfigError(f"data.split_rule {split_rule!r}: expected one of {', '.join(SPLIT_RULES)}")
        task = self.task(root, glue_task)
        files = load_task(root, task)
        for f in files.values():
            if f.skipped:
                warnings.warn(f"{f.path}: {len(f.skipped)} short row(s) left out (lines {list(f.skipped)[:5]} ...)")
        splits = split_glue(files, task, rule=split_rule, seed=split_seed, max_train=max_train)
        if split not in splits:
            raise DataError(
                f"{root}: split {split!r} does not exist under data.split_rule={split_rule} (splits: "
                f"{', '.join(splits)})"
            )
        rows = splits[split]
        unlabelled = [e.line for e in rows if e.label is None]
        if unlabelled:
            raise DataError(f"{root}: split {split!r} has unlabelled rows (lines {unlabelled[:5]}): GLUE's test files")
        return rows
