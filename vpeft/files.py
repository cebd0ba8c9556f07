"""Reading the text files users hand to vpeft (list files, split files, configs) with errors that name the file."""

from __future__ import annotations

from pathlib import Path

from .errors import DataError, VpeftError


def read_text(path: str | Path, error: type[VpeftError] = DataError) -> str:
    """The file's text as UTF-8; a byte-order mark (as spreadsheet programs write) is dropped, and a file in another
    encoding is an ``error`` naming the file and the byte, not a bare ``UnicodeDecodeError``."""
    path = Path(path)
    try:
        return path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as e:
        line = path.read_bytes()[: e.start].count(b"\n") + 1
        raise error(
            f"{path}:{line}: not UTF-8 text (byte 0x{e.object[e.start]:02x} at offset {e.start}); save the "
            "file as UTF-8"
        ) from None
    except OSError as e:
        raise error(f"cannot read {path}: {e.strerror}") from None
