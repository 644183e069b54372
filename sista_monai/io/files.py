"""Files: crash-safe writing (a temporary file beside the target, synced, atomically renamed), JSON, checksums.

A process killed at any moment (``kill -9``, out-of-memory, power loss after the sync) leaves either the
previous file or the complete new one under the final name, never a partial file. The partial file of an
interrupted write keeps a hidden name ``.<final name>.<random>.tmp``; :func:`stale_temporary_files` finds
those leftovers so that the next writer can remove them. :class:`StagedFolder` does the same for a whole
folder (a prepared dataset, the demo data, a packaged bundle): it is built in a hidden folder beside its
destination and moved into place by renames only when it is complete.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
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
    "StagedFolder",
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


def _umask() -> int:
    """The process umask (read by setting it and restoring it at once)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


class StagedFolder:
    """Build a folder in a hidden staging folder beside it; move it into place when the block succeeds.

    Use as a context manager: write everything into the folder it returns. When the block ends without an
    exception the staged folder is moved into place by renames, so a reader sees the previous folder or the
    complete new one, never a half-written one; on an exception the staged folder is removed and the
    destination is untouched. The staged folder gets the usual permissions (``0777`` less the umask).

    Args:
        destination: the folder to write.
        merge: ``False``: the staged folder replaces ``destination`` as a whole (the old one is renamed aside
            and removed after the swap). ``True``: each top-level entry of the staged folder replaces the
            entry of the same name in ``destination`` (a file by one rename, a folder by renaming the old
            one aside), and entries it does not have are left alone (a ``prepare`` run into a folder that
            holds other datasets' outputs).
        keep: a test of a complete destination written by another process meanwhile (two runs creating the
            same cache folder at once): when it returns ``True`` at commit time, that folder stays and the
            staged one is discarded.
    """

    def __init__(
        self, destination: str | os.PathLike, merge: bool = False, keep: Callable[[Path], bool] | None = None
    ) -> None:
        self.destination = Path(destination)
        self.merge = merge
        self.keep = keep
        self.staging: Path | None = None

    def __enter__(self) -> Path:
        self.destination.parent.mkdir(parents=True, exist_ok=True)
        name = self.destination.name
        self.staging = Path(tempfile.mkdtemp(prefix=f".{name}.staging-", dir=self.destination.parent))
        self.staging.chmod(0o777 & ~_umask())
        return self.staging

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        staging = self.staging
        assert staging is not None, "StagedFolder used outside a with block"
        try:
            if exc_type is None:
                self._commit(staging)
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    def _kept(self) -> bool:
        return self.keep is not None and self.destination.is_dir() and self.keep(self.destination)

    def _commit(self, staging: Path) -> None:
        if self._kept():
            return
        if not self.destination.exists():
            try:
                os.rename(staging, self.destination)
            except OSError:  # another process moved its folder in first
                if not self._kept():
                    raise
            return
        if not self.merge:
            _swap(staging, self.destination)
            return
        for entry in sorted(staging.iterdir()):
            target = self.destination / entry.name
            if entry.is_dir() and target.exists():
                _swap(entry, target)
            else:
                os.replace(entry, target)


def _swap(new: Path, old: Path) -> None:
    """Put the folder ``new`` in the place of the existing ``old``: ``old`` renamed aside, ``new`` in, ``old`` removed."""
    aside = Path(tempfile.mkdtemp(prefix=f".{old.name}.old-", dir=old.parent))
    os.replace(old, aside / old.name)
    os.replace(new, old)
    shutil.rmtree(aside, ignore_errors=True)
