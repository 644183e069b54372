"""Files: crash-safe writing (a temporary file beside the target, synced, atomically renamed), JSON, checksums.

A process killed at any moment (``kill -9``, out-of-memory, power loss after the sync) leaves either the
previous file or the complete new one under the final name, never a partial file. The partial file of an
interrupted write keeps a hidden name ``.<final name>.<random>.tmp``; :func:`stale_temporary_files` finds
those leftovers so that the next writer can remove them.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

__all__ = [
    "TEMPORARY_SUFFIX",
    "stale_temporary_files",
    "write_atomically",
    "atomic_write_bytes",
    "json_text",
    "write_json",
    "sha256_bytes",
    "sha256_file",
]

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


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` through a synced temporary file in the same folder and an atomic rename."""
    return write_atomically(path, lambda stream: stream.write(data))


def json_text(obj: Any, indent: int | None = 2, sort_keys: bool = True) -> str:
    """The project's JSON layout: ``indent`` spaces, sorted keys, UTF-8 kept as is, one final newline."""
    return json.dumps(obj, indent=indent, sort_keys=sort_keys, ensure_ascii=False) + "\n"


def write_json(path: str | os.PathLike, obj: Any, indent: int | None = 2, sort_keys: bool = True) -> Path:
    """Write ``obj`` as JSON (:func:`json_text`) atomically to ``path``; returns ``path``."""
    return atomic_write_bytes(path, json_text(obj, indent, sort_keys).encode("utf-8"))


def sha256_bytes(data: bytes) -> str:
    """The SHA-256 hex digest of ``data``."""
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | os.PathLike, chunk_size: int = 1 << 20) -> str:
    """The SHA-256 hex digest of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for chunk in iter(lambda: stream.read(chunk_size), b""):
            digest.update(chunk)
    return digest.hexdigest()
