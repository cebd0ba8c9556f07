"""A folder lock: one writer per run folder or sweep folder, for the writer's whole life.

The lock is an advisory ``fcntl.flock`` on a file in the folder, which also records the holder (pid, host, command,
start time) for the error a second writer gets. The kernel drops the lock when its holder dies, however it dies, so a
killed run never blocks the next one: the file it leaves is stale, noticed and taken over. On systems without
``fcntl`` (Windows) the lock is a no-op.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from pathlib import Path
from typing import Optional

from .errors import RunDirError

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None

LOCK_FILE = ".vpeft.lock"


class FolderLock:
    """Hold ``folder``'s lock from :meth:`acquire` (or ``with``) to :meth:`release`.

    Args:
        folder: The folder to lock (created if missing).
        what: How errors name it (``run folder``, ``sweep folder``).
    """

    def __init__(self, folder: str | Path, what: str = "folder"):
        self.folder, self.what = Path(folder), what
        self.path = self.folder / LOCK_FILE
        self._fd: Optional[int] = None
        #: The record a killed holder left, when this lock took over from it (None: there was none).
        self.stale: Optional[dict] = None

    def _holder(self) -> dict:
        try:
            return json.loads(self.path.read_text() or "{}")
        except (OSError, ValueError):
            return {}

    def acquire(self) -> FolderLock:
        if fcntl is None or self._fd is not None:
            return self
        self.folder.mkdir(parents=True, exist_ok=True)
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(fd)
                break
            try:  # the holder may have released and removed the file between our open and our flock: open again
                if os.fstat(fd).st_ino == os.stat(self.path).st_ino:
                    return self._took(fd)
            except FileNotFoundError:
                pass
            os.close(fd)
        h = self._holder()
        who = f"pid {h.get('pid', '?')}" + (f" on {h['host']}" if h.get("host") else "")
        since = f", since {h['started']}" if h.get("started") else ""
        raise RunDirError(
            f"{self.what} {self.folder} is in use by another vpeft process ({who}{since}: "
            f"{h.get('command', '?')}); wait for it to end, or write elsewhere"
        )

    def _took(self, fd: int) -> FolderLock:
        old = self._holder()
        self.stale = old or None  # the file is there but nobody holds it: a killed run's
        record = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": time.strftime("%Y-%m-%d %H:%M:%S"),
            "command": " ".join(Path(sys.argv[0]).name.split() + sys.argv[1:])[:300],
        }
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(record).encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is None:
            return
        try:
            self.path.unlink(missing_ok=True)
        finally:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> FolderLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
