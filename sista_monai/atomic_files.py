"""Crash-safe file writing: a temporary file beside the target, synced, then atomically renamed.

A process killed at any moment (``kill -9``, out-of-memory, power loss after the sync) leaves either the
previous file or the complete new one under the final name, never a partial file. The partial file of an
interrupted write keeps a hidden name ``.<final name>.<random>.tmp``; :func:`stale_temporary_files` finds
those leftovers so that the next writer can remove them.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

__all__ = ["TEMPORARY_SUFFIX", "stale_temporary_files", "write_atomically"]

TEMPORARY_SUFFIX = ".tmp"
"""Suffix of the partial files written before the atomic rename (``.<final name>.<random>.tmp``)."""


def stale_temporary_files(folder: str | os.PathLike, name: str = "*") -> list[Path]:
    """Partial files that an interrupted writer left in ``folder`` for final names matching the glob ``name``."""
    folder = Path(folder)
    return sorted(folder.glob(f".{name}.*{TEMPORARY_SUFFIX}")) if folder.is_dir() else []


def write_atomically(path: str | os.PathLike, write: Callable[[IO[bytes]], Any]) -> Path:
    """Call ``write(stream)`` on a temporary file beside ``path``, sync it, then rename it to ``path``.

    The file gets the usual ``0644`` permissions; on any error the temporary file is removed and the
    previous ``path`` (if any) is untouched.

    Returns:
        ``path``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=TEMPORARY_SUFFIX)
    try:
        with os.fdopen(handle, "wb") as stream:
            write(stream)
            stream.flush()
            os.fsync(stream.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    with contextlib.suppress(OSError):  # make the rename durable too where the platform allows it
        folder = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(folder)
        finally:
            os.close(folder)
    return path
