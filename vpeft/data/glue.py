"""GLUE text tasks: a reader of the official TSV files (and of JSONL), ATTEMPT's re-split and ATTEMPT's text-to-text
formatting (issue 20). Pure Python, numpy and torch (``torch.randperm`` is the permutation ATTEMPT draws).

**Files.** The official ``download_glue_data.py`` output: ``<root>/<Folder>/{train,dev,test}.tsv`` (MNLI:
``dev_matched``, ``dev_mismatched``, ``test_matched``, ``test_mismatched``), tab-separated UTF-8, one example a line,
with **no quoting** (fields hold lone ``"`` characters: each line is split on tabs, as Hugging Face's ``glue`` script
does with ``csv.QUOTE_NONE``). Quirks handled: CoLA's ``train``/``dev`` have no header (columns: source, label,
original mark, sentence; its ``test`` has the header ``index sentence``); MRPC's files begin with a byte-order mark;
test files have no label column (MRPC's ``test`` has ``index`` in place of ``Quality``); lines may end in CRLF.

**Rows with a wrong number of fields.** A row too *short* to hold a column the task reads (a text column or the
label) is **skipped and counted** (:attr:`GlueFile.skipped` lists its lines), as Hugging Face's ``glue`` script
(``csv.DictReader`` fills missing columns with ``None``; "Filter out corrupted rows") and transformers' ``QqpProcessor``
(``except IndexError: continue``) skip them; so is a classification row with an empty label (the script maps it to
``None``). ``strict=True`` fails on them instead. A row with *more* fields than the header fails naming the file and
line (a stray tab: its columns cannot be trusted; none of the official files read here has one). Blank lines are
ignored. The six tasks in ``shared/data/glue`` have no short or long row.

**Labels** are Hugging Face's ``ClassLabel`` indices, which are ATTEMPT's target strings: RTE and QNLI entailment 0,
not_entailment 1; MNLI entailment 0, neutral 1, contradiction 2; WNLI 1 = entailment; CoLA 1 = acceptable; SST-2
1 = positive; MRPC 1 = equivalent; QQP 1 = duplicate. STS-B's score is a float. :attr:`TextExample.index` is the
row's 0-based position among the file's data rows, skipped ones included: Hugging Face's ``idx`` (except for MRPC,
whose ``idx`` Hugging Face numbers in the raw ``msr_paraphrase_*.txt`` file; the row order is the same).

**JSONL** (``<split>.jsonl``, users' own data): one object a line, with the TSV column names of the task
(``#1 String``, ``question1``, ``gold_label``, ...), or Hugging Face's names (``premise``, ``hypothesis``, ...), or
``sentence1`` / ``sentence2`` (``sentence`` for one-sentence tasks) and ``label``. A label is an index, its digit
string, or a class name; a file is labelled throughout or not at all. An example's index is its position among the
file's non-blank lines.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..errors import ConfigError, DataError
from ..metrics_text import string_to_float


@dataclass(frozen=True, slots=True)
class TextExample:
    """One example: its texts (one or two), label (class index, STS-B score, or ``None`` in a test file), 0-based
    ``index`` among the file's data rows (Hugging Face's ``idx``) and 1-based ``line`` of the file (for messages)."""

    texts: tuple[str, ...]
    label: int | float | None
    index: int
    line: int


@dataclass(frozen=True)
class GlueTask:
    """How one GLUE task is stored and formatted.

    Attributes:
        name: ATTEMPT's and Hugging Face's task name (``rte``), also ATTEMPT's input prefix.
        folder: The folder of the official download (``RTE``).
        columns: The TSV header's text columns, in order.
        label_column: The TSV header's label column (CoLA's headerless files: the second field).
        fields: Hugging Face's feature names of the texts (ATTEMPT's ``example[...]`` keys).
        keys: ATTEMPT's input keys (``tasks.py`` ``preprocessor``), one per text.
        label_names: Hugging Face's class names in index order; ``None`` for STS-B (a score).
        group: ATTEMPT's re-split group: ``small`` (dev halved), ``large`` (1,000 train held out) or ``mnli``.
    """

    name: str
    folder: str
    columns: tuple[str, ...]
    label_column: str
    fields: tuple[str, ...]
    keys: tuple[str, ...]
    label_names: tuple[str, ...] | None
    group: str

    @property
    def num_classes(self) -> int | None:
        return None if self.label_names is None else len(self.label_names)

    @property
    def files(self) -> tuple[str, ...]:
        """The file stems of the official download: ``train``, ``dev``, ``test`` (MNLI: matched and mismatched)."""
        if self.name == "mnli":
            return ("train", "dev_matched", "dev_mismatched", "test_matched", "test_mismatched")
        return ("train", "dev", "test")


_PAIR = ("sentence1", "sentence2")
#: The nine GLUE tasks, by ATTEMPT's names. ``keys``: ``attempt/data/tasks.py`` (ATTEMPT @ b5121e53) ``MRPC`` :266,
#: ``COLA`` :286, ``SST2`` :305, ``STSB`` :359, ``QQP`` :379, ``MNLI`` :398 (``TASK_MAPPING["mnli"]``, Hugging Face's
#: ``glue/mnli``), ``QNLI`` :455, ``RTE`` :475, ``WNLI`` :494; label names: Hugging Face's ``glue.py``
#: ``label_classes``; groups: ``tasks.py:29-33``.
GLUE_TASKS: dict[str, GlueTask] = {
    t.name: t
    for t in (
        GlueTask("cola", "CoLA", ("sentence",), "label", ("sentence",), ("sentence:",),
                 ("unacceptable", "acceptable"), "small"),
        GlueTask("sst2", "SST-2", ("sentence",), "label", ("sentence",), ("sentence:",),
                 ("negative", "positive"), "large"),
        GlueTask("mrpc", "MRPC", ("#1 String", "#2 String"), "Quality", _PAIR, ("sentence1:", "sentence2:"),
                 ("not_equivalent", "equivalent"), "small"),
        GlueTask("qqp", "QQP", ("question1", "question2"), "is_duplicate", ("question1", "question2"),
                 ("question1:", "question2:"), ("not_duplicate", "duplicate"), "large"),
        GlueTask("stsb", "STS-B", _PAIR, "score", _PAIR, ("sentence1:", "sentence2:"), None, "small"),
        GlueTask("mnli", "MNLI", _PAIR, "gold_label", ("premise", "hypothesis"), ("premise:", "hypothesis:"),
                 ("entailment", "neutral", "contradiction"), "mnli"),
        GlueTask("qnli", "QNLI", ("question", "sentence"), "label", ("question", "sentence"),
                 ("question:", "sentence:"), ("entailment", "not_entailment"), "large"),
        GlueTask("rte", "RTE", _PAIR, "label", _PAIR, ("sentence1:", "sentence2:"),
                 ("entailment", "not_entailment"), "small"),
        GlueTask("wnli", "WNLI", _PAIR, "label", _PAIR, ("sentence1:", "sentence2:"),
                 ("not_entailment", "entailment"), "small"),
    )
}  # fmt: skip


def glue_task(name: str | GlueTask) -> GlueTask:
    """The task ``name`` (case and ``-`` ignored: ``SST-2``, ``sst2``, ``STS-B``); an unknown one fails naming the
    nine."""
    if isinstance(name, GlueTask):
        return name
    key = str(name).lower().replace("-", "").replace("_", "")
    if key not in GLUE_TASKS:
        raise ConfigError(f"unknown GLUE task {name!r}: expected one of {', '.join(GLUE_TASKS)}")
    return GLUE_TASKS[key]


# ----------------------------------------------------------------------------------------------------------- reading


@dataclass(frozen=True)
class GlueFile:
    """One file read: its examples, whether it has labels, and the lines of the rows skipped (too short, or an
    empty label)."""

    path: Path
    task: str | None
    examples: list[TextExample]
    labelled: bool
    skipped: tuple[int, ...] = ()


def _lines(path: Path):
    """``(line number, text)`` of each line of ``path``, split on ``\\n`` only (a lone ``\\r`` stays in its field),
    without the line end; a byte-order mark at the start is dropped. Bytes that are not UTF-8 fail naming the line."""
    try:
        f = open(path, "rb")  # noqa: SIM115 - closed below; binary so that line numbers are exact
    except OSError as e:
        raise DataError(f"cannot read {path}: {e.strerror}") from None
    with f:
        for i, raw in enumerate(f, 1):
            if i == 1 and raw.startswith(b"\xef\xbb\xbf"):
                raw = raw[3:]
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise DataError(
                    f"{path}:{i}: not UTF-8 text (byte 0x{raw[e.start]:02x}); save the file as UTF-8"
                ) from None
            yield i, text.rstrip("\n").removesuffix("\r")


def _label(task: GlueTask, text: str, where: str) -> int | float:
    """A label field's value: a class name or index (checked against the task's classes), or STS-B's score."""
    if task.label_names is None:
        try:
            value = float(text)
        except ValueError:
            raise DataError(f"{where}: {task.name} score {text!r} is not a number") from None
        if not math.isfinite(value):
            raise DataError(f"{where}: {task.name} score {text!r} is not a finite number")
        return value
    if text in task.label_names:
        return task.label_names.index(text)
    if text.isascii() and text.isdigit() and int(text) < len(task.label_names):
        return int(text)
    raise DataError(
        f"{where}: {task.name} label {text!r} is not one of {', '.join(task.label_names)} or an index below "
        f"{len(task.label_names)}"
    )


def read_tsv(path: str | Path, task: str | GlueTask, strict: bool = False) -> GlueFile:
    """The examples of one official GLUE TSV file of ``task`` (labelled or not, found from its header; CoLA's first
    line is a header, as its test file's ``index<TAB>sentence``, where a field is ``sentence``, else it is data).
    Short rows are skipped and counted (``strict``: they fail); see the module docstring."""
    path, task = Path(path), glue_task(task)
    lines = ((i, t) for i, t in _lines(path) if t != "")
    first = next(lines, None)
    if first is None:
        raise DataError(f"{path}: the file is empty")
    head = first[1].split("\t")
    if task.name == "cola" and "sentence" not in head:
        text_at, label_at, width = (3,), 1, 4  # headerless train/dev: source, label, original mark, sentence
        lines = _chain(first, lines)
    else:
        missing = [c for c in task.columns if c not in head]
        if missing:
            raise DataError(
                f"{path}:{first[0]}: the header lacks the {task.name} column(s) {', '.join(missing)} "
                f"(expected {', '.join(task.columns)}; got {', '.join(head)})"
            )
        text_at = tuple(head.index(c) for c in task.columns)
        label_at = head.index(task.label_column) if task.label_column in head else None
        width = len(head)
    labelled = label_at is not None
    needed = max((*text_at, label_at) if labelled else text_at)
    examples, skipped = [], []
    for n, (i, text) in enumerate(lines):
        fields = text.split("\t")
        if len(fields) > width:
            raise DataError(f"{path}:{i}: {len(fields)} tab-separated fields, expected {width} (a stray tab?)")
        short = len(fields) <= needed
        if short or (labelled and task.label_names is not None and fields[label_at] == ""):
            if strict:
                what = f"{len(fields)} tab-separated fields, expected {width}" if short else "the label is empty"
                raise DataError(f"{path}:{i}: {what}")
            skipped.append(i)
            continue
        label = _label(task, fields[label_at], f"{path}:{i}") if labelled else None
        examples.append(TextExample(tuple(fields[k] for k in text_at), label, n, i))
    return GlueFile(path, task.name, examples, labelled, tuple(skipped))


def _chain(first, rest):
    yield first
    yield from rest


def _jsonl_names(task: GlueTask | None, slot: int, single: bool) -> tuple[str, ...]:
    """The JSON keys that may hold text ``slot``: the TSV column, Hugging Face's field, then the generic name."""
    generic = ("sentence", "sentence1") if single else (_PAIR[slot],)
    if task is None:
        return generic
    return tuple(dict.fromkeys((task.columns[slot], task.fields[slot], *generic)))


def read_jsonl(path: str | Path, task: str | GlueTask | None = None) -> GlueFile:
    """The examples of a JSONL file (one JSON object a line; see the module docstring for the keys). Without a
    ``task``: texts ``sentence1`` [+ ``sentence2``] (or ``sentence``), label ``label`` as a number (an integer class
    index or a float target), or absent throughout."""
    path = Path(path)
    task = None if task is None else glue_task(task)
    examples, labelled = [], None
    for n, (i, text) in enumerate((i, t) for i, t in _lines(path) if t.strip()):
        where = f"{path}:{i}"
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as e:
            raise DataError(f"{where}: not a JSON object ({e.msg})") from None
        if not isinstance(obj, dict):
            raise DataError(f"{where}: expected a JSON object, got {type(obj).__name__}")
        if task is None:
            single = "sentence1" not in obj or "sentence2" not in obj
        else:
            single = len(task.columns) == 1
        if examples and len(examples[0].texts) != (1 if single else 2):
            raise DataError(f"{where}: {1 if single else 2} text(s), unlike the file's first example")
        texts = []
        for slot in range(1 if single else 2):
            names = _jsonl_names(task, slot, single)
            key = next((k for k in names if k in obj), None)
            if key is None or not isinstance(obj[key], str):
                raise DataError(f"{where}: needs a text field {' or '.join(names)} (a string)")
            texts.append(obj[key])
        label_keys = ("label",) if task is None else tuple(dict.fromkeys((task.label_column, "label")))
        key = next((k for k in label_keys if k in obj and obj[k] is not None), None)
        if labelled is None:
            labelled = key is not None
        elif labelled != (key is not None):
            raise DataError(f"{where}: {'no' if labelled else 'a'} label, unlike the file's first example")
        label = None if key is None else _json_label(task, obj[key], where)
        examples.append(TextExample(tuple(texts), label, n, i))
    if not examples:
        raise DataError(f"{path}: the file has no examples")
    return GlueFile(path, None if task is None else task.name, examples, bool(labelled))


def _json_label(task: GlueTask | None, value, where: str) -> int | float:
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise DataError(f"{where}: label {value!r} is not a number or a class name")
    if task is None:
        if isinstance(value, str):
            raise DataError(f"{where}: label {value!r} is a string; without a GLUE task give a number")
        if isinstance(value, float) and not math.isfinite(value):
            raise DataError(f"{where}: label {value!r} is not a finite number")
        return value
    if task.label_names is not None and isinstance(value, float):
        if not value.is_integer():
            raise DataError(f"{where}: {task.name} label {value!r} is not a class index")
        value = int(value)
    return _label(task, str(value), where)


def read_glue(path: str | Path, task: str | GlueTask | None, strict: bool = False) -> GlueFile:
    """One file, a ``.tsv`` (official GLUE; needs ``task``) or a ``.jsonl`` (by its suffix)."""
    path = Path(path)
    if path.suffix == ".jsonl":
        return read_jsonl(path, task)
    if path.suffix == ".tsv":
        if task is None:
            raise ConfigError(f"{path}: reading a GLUE TSV file needs its task ({', '.join(GLUE_TASKS)})")
        return read_tsv(path, task, strict)
    raise DataError(f"{path}: expected a .tsv or .jsonl file")


def task_folder(root: str | Path, task: str | GlueTask) -> Path:
    """The folder holding ``task``'s files: ``root/<Folder>`` (``root`` is the GLUE download, e.g. ``glue_data``),
    or ``root`` itself where it holds a ``train`` or dev file."""
    root, task = Path(root), glue_task(task)
    for d in (root / task.folder, root / task.name, root):
        if d.is_dir() and any((d / f"{s}{x}").is_file() for s in task.files[:3] for x in (".tsv", ".jsonl")):
            return d
    raise DataError(
        f"no {task.name} files under {root}: expected {root / task.folder}/train.tsv and {task.files[1]}.tsv (or "
        f".jsonl), or those files in {root} itself"
    )


def load_task(root: str | Path, task: str | GlueTask, strict: bool = False) -> dict[str, GlueFile]:
    """Every file of ``task`` present under ``root`` (see :func:`task_folder`), by stem (``train``, ``dev``,
    ``test``; MNLI ``dev_matched`` ...): ``<stem>.tsv``, else ``<stem>.jsonl``."""
    task = glue_task(task)
    folder = task_folder(root, task)
    out = {}
    for stem in task.files:
        for suffix in (".tsv", ".jsonl"):
            if (folder / f"{stem}{suffix}").is_file():
                out[stem] = read_glue(folder / f"{stem}{suffix}", task, strict)
                break
    return out


# ------------------------------------------------------------------------------------------------------ the re-split

SPLIT_RULES = ("attempt", "glue")
#: ATTEMPT's ``AbstractTask.small_datasets_without_all_splits`` and ``large_data_without_all_splits``
#: (``attempt/data/tasks.py:29-33``), restricted to GLUE; MNLI is in neither.
ATTEMPT_SMALL = tuple(t.name for t in GLUE_TASKS.values() if t.group == "small")
ATTEMPT_LARGE = tuple(t.name for t in GLUE_TASKS.values() if t.group == "large")
#: Training examples ATTEMPT holds out as validation for a large task (``tasks.py:126``, ``validation_size=1000``).
ATTEMPT_HELD_OUT = 1000


def shuffled_indices(n: int, seed: int = 42) -> list[int]:
    """ATTEMPT's ``AbstractTask.shuffled_indices`` (``tasks.py:62-66``): ``torch.randperm(n)`` drawn from a fresh
    CPU ``torch.Generator`` seeded with ``seed`` (ATTEMPT's ``data_seed``, default 42, ``options.py:413``)."""
    generator = torch.Generator()
    generator.manual_seed(seed)
    return torch.randperm(n, generator=generator).tolist()


def _take(rows: Sequence[TextExample], indices: Sequence[int], limit: int | None) -> list[TextExample]:
    """``rows`` at ``indices[:limit]``: ATTEMPT's ``subsample`` (``tasks.py:68-81``; a limit above the size keeps
    all)."""
    if limit is not None and limit < 0:
        raise ConfigError(f"a sample limit must not be negative, got {limit}")
    return [rows[k] for k in indices[:limit]]


def _maybe_subsample(rows: Sequence[TextExample], limit: int | None, seed: int) -> list[TextExample]:
    """A whole split in file order, or with a ``limit`` ATTEMPT's ``subsample``: the first ``limit`` of a seeded
    permutation (``tasks.py:139-140``)."""
    return list(rows) if limit is None else _take(rows, shuffled_indices(len(rows), seed), limit)


def _rows(files: Mapping[str, GlueFile | Sequence[TextExample]], stem: str, task: GlueTask) -> list[TextExample]:
    if stem not in files:
        raise DataError(f"{task.name}: the split rule needs its {stem} file (found: {', '.join(files) or 'none'})")
    f = files[stem]
    if isinstance(f, GlueFile):
        if not f.labelled:
            raise DataError(f"{f.path}: has no labels; the {stem} file of {task.name} must be labelled")
        return f.examples
    return list(f)


def split_glue(
    files: Mapping[str, GlueFile | Sequence[TextExample]],
    task: str | GlueTask,
    rule: str = "attempt",
    seed: int = 42,
    max_train: int | None = None,
    max_val: int | None = None,
    max_test: int | None = None,
) -> dict[str, list[TextExample]]:
    """The ``train`` / ``val`` / ``test`` splits of one task from its official files (by stem, as :func:`load_task`
    returns them), deterministic given ``seed``.

    ``rule="attempt"`` reproduces ATTEMPT's ``AbstractTask.get(split, split_validation_test=True, n_obs=...)``
    (``attempt/data/tasks.py:97-141``, ATTEMPT @ b5121e53; ``split_validation_test: true`` in every config, e.g.
    ``configs/baselines/adapter.json``), with ``seed`` as its ``data_seed`` (default 42) and ``max_*`` as its
    ``max_train_samples`` / ``max_val_samples`` / ``max_test_samples``. Every permutation is
    :func:`shuffled_indices` of the whole file being split, drawn afresh each time, so the same file gets the same
    permutation:

    * small tasks (CoLA, RTE, MRPC, STS-B, WNLI): ``train`` is the train file in file order; the dev file is permuted
      and ``val`` is its first ``len(dev) // 2`` rows, ``test`` the rest, both in permuted order (RTE's 277: 138 and
      139; MRPC 204 / 204; STS-B 750 / 750; CoLA 521 / 522; WNLI 35 / 36);
    * large tasks (QQP, QNLI, SST-2): the train file is permuted; ``val`` is its first 1,000 rows, ``train`` the rest,
      both in permuted order; ``test`` is the dev file in file order;
    * MNLI: ``train`` the train file, ``val`` ``dev_mismatched``, ``test`` ``dev_matched``, each in file order
      (``split_to_data_split``, ``tasks.py:389-391``).

    A ``max_*`` limit keeps the first rows of that split as defined above; a split taken whole (in file order) is
    instead subsampled from a fresh permutation of its file (ATTEMPT's ``subsample(dataset, n_obs)``). The rows
    match ATTEMPT's where the files' row order is Hugging Face's (it is: its ``glue`` script reads these files in
    order) and ``torch.randperm`` on the CPU is unchanged since ATTEMPT's torch [inf: it has drawn the same
    permutations through torch 2.x; a test pins one].

    ``rule="glue"``: GLUE's own split. Its test files have no labels, so the labelled dev file is the only held-out
    set: ``train`` (file order) and ``test`` = ``dev`` (MNLI: ``dev_matched``, plus ``test_mismatched`` =
    ``dev_mismatched``); there is no ``val`` (train on a fixed schedule and keep the last epoch). ``max_train`` and
    ``max_test`` subsample as above; ``max_val`` must be unset.
    """
    task = glue_task(task)
    if rule not in SPLIT_RULES:
        raise ConfigError(f"unknown GLUE split rule {rule!r}: expected one of {', '.join(SPLIT_RULES)}")
    if rule == "glue":
        if max_val is not None:
            raise ConfigError("split rule glue has no validation split: leave max_val unset")
        dev = "dev_matched" if task.name == "mnli" else "dev"
        out = {
            "train": _maybe_subsample(_rows(files, "train", task), max_train, seed),
            "test": _maybe_subsample(_rows(files, dev, task), max_test, seed),
        }
        if task.name == "mnli":
            out["test_mismatched"] = _maybe_subsample(_rows(files, "dev_mismatched", task), max_test, seed)
        return out
    train = _rows(files, "train", task)
    if task.group == "small":
        dev = _rows(files, "dev", task)
        perm, half = shuffled_indices(len(dev), seed), len(dev) // 2
        return {
            "train": _maybe_subsample(train, max_train, seed),
            "val": _take(dev, perm[:half], max_val),
            "test": _take(dev, perm[half:], max_test),
        }
    if task.group == "large":
        if len(train) <= ATTEMPT_HELD_OUT:
            raise DataError(
                f"{task.name}: the train file has {len(train)} rows; ATTEMPT's re-split holds out "
                f"{ATTEMPT_HELD_OUT} of them as validation"
            )
        perm = shuffled_indices(len(train), seed)
        return {
            "train": _take(train, perm[ATTEMPT_HELD_OUT:], max_train),
            "val": _take(train, perm[:ATTEMPT_HELD_OUT], max_val),
            "test": _maybe_subsample(_rows(files, "dev", task), max_test, seed),
        }
    return {
        "train": _maybe_subsample(train, max_train, seed),
        "val": _maybe_subsample(_rows(files, "dev_mismatched", task), max_val, seed),
        "test": _maybe_subsample(_rows(files, "dev_matched", task), max_test, seed),
    }


# -------------------------------------------------------------------------------------------- text-to-text formatting

STSB_ROUNDING = ("attempt", "t5")


def attempt_input(task: str | GlueTask, texts: Sequence[str], add_prefix: bool = False) -> str:
    """ATTEMPT's source string (``AbstractTask.seq2seq_format``, ``tasks.py:44-54``): each text after its key, joined
    by single spaces, e.g. ``"sentence1: A man sings. sentence2: A man is singing."``; texts are not stripped.
    ``add_prefix`` puts the task name first (``"rte sentence1: ..."``); ATTEMPT's adapter runs have none
    (``add_prefix=False if adapter_args.train_task_adapters``, ``run_seq2seq.py:264``), its prompt-tuning runs do."""
    task = glue_task(task)
    if len(texts) != len(task.keys):
        raise ValueError(f"{task.name} takes {len(task.keys)} text(s), got {len(texts)}")
    parts = [part for key, text in zip(task.keys, texts, strict=True) for part in (key, text)]
    return " ".join([task.name, *parts] if add_prefix else parts)


def stsb_target(score: float, rounding: str = "attempt") -> str:
    """STS-B's target string.

    ``attempt``: ATTEMPT's code, ``str(np.round((label * 5) / 5, decimals=1))`` (``attempt/data/utils.py:4-17``) on
    Hugging Face's float32 label. Its docstring (copied from T5) promises the nearest multiple of 0.2, but the
    bracket makes it round to **0.1**: 0.5, 2.5, 3.3 ... stay (303 of STS-B's 5,749 training targets and 74 of 1,500
    dev targets lie off the 0.2 grid; up to 51 strings). The float32 step matters once: a score of 0.850 is
    0.8500000238 in float32 and becomes ``"0.9"`` (``"0.8"`` in float64).

    ``t5``: T5's ``tf.as_string(tf.round(label * 5) / 5, precision=1)`` (``t5/data/preprocessors.py`` ``stsb``): the
    nearest multiple of 0.2, ties to even, one decimal; 26 strings, ATTEMPT's ``STSB.labels_list``."""
    if rounding not in STSB_ROUNDING:
        raise ConfigError(f"unknown STS-B rounding {rounding!r}: expected one of {', '.join(STSB_ROUNDING)}")
    x = float(np.float32(score))
    if rounding == "attempt":
        return str(np.round((x * 5) / 5, decimals=1))
    return f"{np.round(x * 5) / 5:.1f}"


def label_strings(task: str | GlueTask, rounding: str = "attempt") -> tuple[str, ...]:
    """The strings a model may generate as labels (the verbaliser): class ``i`` is ``str(i)`` (``tasks.py``
    ``labels_list``; targets are ``str(example['label'])``). STS-B: ``t5`` gives ATTEMPT's ``labels_list``, the 26
    strings ``"0.0", "0.2", ..., "5.0"``; ``attempt`` the 51 strings ``"0.0", "0.1", ..., "5.0"`` its targets can be
    (a candidate set for scoring label strings that holds every target)."""
    task = glue_task(task)
    if task.label_names is not None:
        return tuple(str(i) for i in range(len(task.label_names)))
    if rounding not in STSB_ROUNDING:
        raise ConfigError(f"unknown STS-B rounding {rounding!r}: expected one of {', '.join(STSB_ROUNDING)}")
    steps = 25 if rounding == "t5" else 50
    return tuple(f"{5 * k / steps:.1f}" for k in range(steps + 1))


def attempt_target(task: str | GlueTask, label: int | float, rounding: str = "attempt") -> str:
    """ATTEMPT's target string: the class index as text (``"0"``, ``"1"``, ``"2"``), STS-B's :func:`stsb_target`."""
    task = glue_task(task)
    if task.label_names is None:
        return stsb_target(label, rounding)
    if isinstance(label, bool) or int(label) != label or not 0 <= label < len(task.label_names):
        raise ValueError(f"{task.name} label {label!r} is not a class index below {len(task.label_names)}")
    return str(int(label))


def parse_generation(task: str | GlueTask, text: str) -> int | float:
    """What a generated string means, as ATTEMPT scores it (after ``.strip()``, ``postprocessors.py:31``): a class
    index where it is exactly one of :func:`label_strings`, else -1 (always wrong); for STS-B the float it spells,
    else -1.0 (:func:`vpeft.metrics_text.string_to_float`, ATTEMPT's ``postprocessors.py:7-12``)."""
    task = glue_task(task)
    text = text.strip()
    if task.label_names is None:
        return string_to_float(text)
    strings = label_strings(task)
    return strings.index(text) if text in strings else -1
