"""The run folder: its file names, its state, and every read and write of it (each write atomic).

A run folder holds what the trainer writes, ``config.yaml`` (the resolved config, written once the run can start),
``log.jsonl`` (one line per epoch), ``state.pt`` (the resume state, removed at the end), ``selection.safetensors`` and
its record ``selection.safetensors.json`` (a selector's pass), ``trainable.safetensors`` (the kept trainable tensors),
``teacher.safetensors`` (iDAT's, when asked) and ``result.json``; and what a sweep keeps beside a run: ``bench.json``,
``run.log`` and ``failed.json``. A kill during an atomic write leaves its temporary file, ``.NAME.<random>``: debris,
cleared when the run starts again, never a sign that the folder holds something else.

Its state (:attr:`RunDir.state`): ``empty`` (missing, or nothing but debris and a sweep's files), ``done``
(``result.json``), ``failed`` (a sweep's ``failed.json``), ``foreign`` (files that are not vpeft's) or ``partial``
(a run that started and did not finish).
"""

from __future__ import annotations

import json
import pickle
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path
from typing import Optional

import torch
import yaml
from safetensors import SafetensorError
from safetensors.torch import load_file

from .config_base import load_yaml
from .engine.checkpoint import (
    TRAINABLE_FILE,
    atomic_save_tensors,
    atomic_torch_save,
    atomic_write_json,
    atomic_write_text,
    read_trainable,
    save_trainable,
)
from .errors import RunDirError
from .lock import LOCK_FILE, FolderLock

CONFIG_FILE = "config.yaml"
LOG_FILE = "log.jsonl"
STATE_FILE = "state.pt"
RESULT_FILE = "result.json"
SELECTION_FILE = "selection.safetensors"
SELECTION_INFO_FILE = SELECTION_FILE + ".json"
TEACHER_FILE = "teacher.safetensors"
BENCH_FILE = "bench.json"
RUN_LOG = "run.log"
FAILED_FILE = "failed.json"

#: What the trainer writes (an objective's own files among them), and what ``overwrite`` replaces.
RUN_FILES = (
    CONFIG_FILE,
    LOG_FILE,
    STATE_FILE,
    TRAINABLE_FILE,
    RESULT_FILE,
    SELECTION_FILE,
    SELECTION_INFO_FILE,
    TEACHER_FILE,
)
OVERWRITTEN = (CONFIG_FILE, LOG_FILE, STATE_FILE, TRAINABLE_FILE, RESULT_FILE)
#: What a sweep (vpeft.bench) keeps beside a run; never a reason to refuse the folder.
SWEEP_FILES = (BENCH_FILE, RUN_LOG, FAILED_FILE)
STATES = ("empty", "partial", "done", "failed", "foreign")


class RunDir:
    """One run folder. Nothing is touched on construction; the folder need not exist."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def __truediv__(self, name: str) -> Path:
        return self.path / name

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    def has(self, name: str) -> bool:
        return (self.path / name).is_file()

    # --- what the folder holds ---

    def debris(self) -> list[Path]:
        """The temporary files of interrupted atomic writes (``.config.yaml.x1y2z3``)."""
        if not self.path.is_dir():
            return []
        known = RUN_FILES + SWEEP_FILES
        return sorted(p for p in self.path.iterdir() if any(p.name.startswith(f".{f}.") for f in known))

    def used(self) -> set[str]:
        """The names in the folder that are a run's or someone else's: everything but debris and a sweep's files."""
        if not self.path.is_dir():
            return set()
        return {p.name for p in self.path.iterdir()} - {p.name for p in self.debris()} - set(SWEEP_FILES) - {LOCK_FILE}

    def foreign(self) -> set[str]:
        """The names in the folder that vpeft did not write."""
        return self.used() - set(RUN_FILES)

    @property
    def state(self) -> str:
        """``empty``, ``done``, ``failed``, ``foreign`` or ``partial``, in that order of precedence after ``empty``:
        a finished run stays ``done`` whatever lies beside it."""
        used = self.used()
        if self.has(RESULT_FILE):
            return "done"
        if self.has(FAILED_FILE):
            return "failed"
        if used - set(RUN_FILES):
            return "foreign"
        return "partial" if used else "empty"

    @property
    def resumable(self) -> bool:
        """A resume state is there (``state.pt``): ``--resume`` continues after its epoch."""
        return self.has(STATE_FILE)

    # --- starting a run in it ---

    def check_start(self, resume: bool, overwrite: bool, config_diff: Callable[[dict], list[str]]) -> Optional[dict]:
        """Whether a run may be trained into this folder; nothing is changed.

        Returns the recorded result when the run is already finished (``resume`` without ``overwrite``), else None.
        Raises :class:`RunDirError` for a folder that is not empty without ``resume`` or ``overwrite``, for one whose
        saved config differs (``config_diff(saved)`` lists the differences), and for one that holds no run to resume.
        """
        used = self.used()
        if resume and used <= {SELECTION_FILE, SELECTION_INFO_FILE}:  # killed before its config was written
            used = set()
        if not used:
            return None
        if resume and self.has(CONFIG_FILE):
            # Compared first: a finished run is only "already done" for the config it was trained with.
            diff = config_diff(self.read_config())
            if diff:
                raise RunDirError(f"cannot resume {self.path}: its config differs: " + "; ".join(diff))
            if self.has(RESULT_FILE) and not overwrite:
                return self.read_result()
        elif self.has(RESULT_FILE) and resume and not overwrite:
            return self.read_result()
        elif not overwrite:
            raise RunDirError(
                f"run directory {self.path} is not empty; pass --resume to continue it or --overwrite to replace it"
                if not resume
                else f"cannot resume {self.path}: it holds no vpeft run config "
                f"({', '.join(sorted(used)[:5])}); pass --overwrite to replace what it holds"
            )
        return None

    def lock(self) -> FolderLock:
        """The folder's lock (see :mod:`vpeft.lock`): held by the trainer for the run's life, so a second training
        into the same folder fails at once, naming the first."""
        return FolderLock(self.path, "run folder")

    def clear_debris(self) -> None:
        for p in self.debris():
            p.unlink(missing_ok=True)

    def prepare(self, overwrite: bool = False) -> None:
        """Create the folder; with ``overwrite``, first remove an earlier run's config, log, state, checkpoint and
        result (a selection is redone and rewritten by the run itself)."""
        if overwrite and self.path.exists():
            for name in OVERWRITTEN:
                (self.path / name).unlink(missing_ok=True)
        self.path.mkdir(parents=True, exist_ok=True)

    # --- the files ---

    @contextmanager
    def _readable(self, name: str, remedy: str):
        """A file that cannot be read (truncated, overwritten) is a :class:`RunDirError` naming it and the way on;
        nothing is deleted."""
        try:
            yield
        except (OSError, RuntimeError, ValueError, EOFError, pickle.UnpicklingError, SafetensorError) as e:
            raise RunDirError(
                f"{self.path / name} cannot be read: it is truncated or not written by vpeft "
                f"({type(e).__name__}); {remedy}, or pass --overwrite"
            ) from None

    def read_config(self) -> dict:
        """The saved ``config.yaml`` as a mapping, with a clear error when the folder is not a run folder."""
        if not self.path.is_dir():
            raise RunDirError(f"run directory {self.path} does not exist")
        if not self.has(CONFIG_FILE):
            raise RunDirError(f"{self.path} is not a run directory: {CONFIG_FILE} is missing")
        return load_yaml(self.path / CONFIG_FILE)

    def write_config(self, resolved: dict) -> None:
        atomic_write_text(self.path / CONFIG_FILE, yaml.safe_dump(resolved, sort_keys=False))

    def write_log(self, history: list[dict]) -> None:
        atomic_write_text(self.path / LOG_FILE, "".join(json.dumps(e) + "\n" for e in history))

    def save_state(self, state: dict) -> None:
        atomic_torch_save(self.path / STATE_FILE, state)

    def read_state(self) -> Optional[dict]:
        """The resume state, or None when there is none."""
        if not self.resumable:
            return None
        with self._readable(STATE_FILE, "remove it to restart the run from its first epoch"):
            return torch.load(self.path / STATE_FILE, map_location="cpu", weights_only=True)

    def drop_state(self) -> None:
        (self.path / STATE_FILE).unlink(missing_ok=True)

    def save_selection(self, state: dict, info: dict) -> None:
        """A selector's pass: its tensors, then its record (a kill between the two leaves only the first)."""
        atomic_save_tensors(self.path / SELECTION_FILE, state)
        atomic_write_json(self.path / SELECTION_INFO_FILE, info)

    def read_selection(self) -> Optional[tuple[dict, dict]]:
        """``(tensors, record)`` of a saved selection pass; None unless both files are there."""
        if not (self.has(SELECTION_FILE) and self.has(SELECTION_INFO_FILE)):
            return None
        with self._readable(SELECTION_FILE, f"remove it and {SELECTION_INFO_FILE} to redo the selection pass"):
            return load_file(str(self.path / SELECTION_FILE)), json.loads((self.path / SELECTION_INFO_FILE).read_text())

    def save_trainable(self, model, metadata: Optional[dict] = None) -> None:
        save_trainable(self.path / TRAINABLE_FILE, model, metadata=metadata)

    def read_trainable(self) -> dict:
        """The kept trainable tensors; a :class:`RunDirError` when the run did not finish."""
        if not self.has(TRAINABLE_FILE):
            raise RunDirError(
                f"{self.path} has no {TRAINABLE_FILE}: the run did not finish (continue it with --resume)"
            )
        return read_trainable(self.path / TRAINABLE_FILE)

    def write_result(self, result: dict) -> None:
        atomic_write_json(self.path / RESULT_FILE, result)

    def read_result(self) -> Optional[dict]:
        """The recorded ``result.json``, or None when the run has none."""
        return json.loads((self.path / RESULT_FILE).read_text()) if self.has(RESULT_FILE) else None

    def write_bench(self, record: dict) -> None:
        atomic_write_json(self.path / BENCH_FILE, record)

    def read_bench(self) -> dict:
        """What the sweep asked of this run; empty outside a sweep."""
        return json.loads((self.path / BENCH_FILE).read_text()) if self.has(BENCH_FILE) else {}

    def write_failure(self, info: dict) -> None:
        atomic_write_json(self.path / FAILED_FILE, info)

    def read_failure(self) -> Optional[dict]:
        return json.loads((self.path / FAILED_FILE).read_text()) if self.has(FAILED_FILE) else None

    def clear_failure(self) -> None:
        (self.path / FAILED_FILE).unlink(missing_ok=True)
