"""The files of the pre-flight check (:mod:`.validate`): each image and mask decoded, results remembered between runs.

An image is decoded with the project's loader (:func:`~sista_monai.transforms.read_chest_xray`), a mask must be one
channel of 0/1 values; each result (a reason or ``None``, rows, columns) is remembered in
``<cache_dir>/preflight_checks.json`` keyed by the file's path, size and modification time, and forgotten when the
check, pydicom, Pillow or the set of installed pixel decoders changes.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import PIL
import pydicom
from PIL import Image, UnidentifiedImageError
from pydicom.pixels import get_decoder

from sista_monai.errors import ChestXrayReadError
from sista_monai.io.files import sha256_bytes
from sista_monai.transforms.io import read_chest_xray

from .datalist import write_json_atomic

__all__ = ["CHECK_VERSION", "MEMO_FILE"]

logger = logging.getLogger("sista_monai.data.validate")  # the pre-flight check logs under one name

CHECK_VERSION = 1
"""Bumped whenever the check's rules change, so that remembered results are recomputed."""

MEMO_FILE = "preflight_checks.json"
"""The file in ``cache_dir`` remembering per-file results between runs."""


def _fingerprint() -> str:
    """What a remembered result depends on besides the file: this check, pydicom, Pillow, the decoders."""
    decodable = []
    for uid in sorted(pydicom.uid.AllTransferSyntaxes):
        try:
            if get_decoder(uid).is_available:
                decodable.append(str(uid))
        except NotImplementedError:
            continue
    content = json.dumps([CHECK_VERSION, pydicom.__version__, PIL.__version__, decodable])
    return sha256_bytes(content.encode())


class _Memo:
    """Per-file results remembered between runs in ``<cache_dir>/preflight_checks.json``."""

    def __init__(self, cache_dir: str | os.PathLike | None) -> None:
        self.path = Path(cache_dir) / MEMO_FILE if cache_dir is not None else None
        self.fingerprint = _fingerprint()
        self.tables: dict[str, dict[str, Any]] = {"images": {}, "masks": {}, "reports": {}}
        self.changed = False
        if self.path is None or not self.path.is_file():
            return
        try:
            content = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as err:
            logger.info("ignoring the unreadable pre-flight memo %s (%s)", self.path, type(err).__name__)
            return
        if isinstance(content, dict) and content.get("fingerprint") == self.fingerprint:
            for name in self.tables:
                if isinstance(content.get(name), dict):
                    self.tables[name] = content[name]

    def get(self, table: str, key: str, stamp: list[Any]) -> list[Any] | None:
        entry = self.tables[table].get(key)
        if isinstance(entry, list) and entry[: len(stamp)] == stamp:
            return entry[len(stamp) :]
        return None

    def put(self, table: str, key: str, stamp: list[Any], result: list[Any]) -> None:
        self.tables[table][key] = [*stamp, *result]
        self.changed = True

    def save(self) -> None:
        if self.path is None or not self.changed:
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            write_json_atomic(self.path, {"fingerprint": self.fingerprint, **self.tables})
        except OSError as err:
            logger.warning("cannot write the pre-flight memo %s (%s); the next run re-checks", self.path, err)


def _stamp(path: Path) -> list[Any] | None:
    try:
        status = path.stat()
    except (OSError, ValueError):
        return None
    return [status.st_size, status.st_mtime_ns]


def _paths(value: Any) -> list[str] | None:
    """The file paths of an item value (a path or a list of paths stacked as channels)."""
    if isinstance(value, (str, os.PathLike)):
        return [os.fspath(value)]
    if isinstance(value, (list, tuple)) and value and all(isinstance(v, (str, os.PathLike)) for v in value):
        return [os.fspath(v) for v in value]
    return None


def _read_image(path: str) -> list[Any]:
    """``[reason or None, rows, columns]`` of one image file."""
    try:
        image = read_chest_xray(path)
    except ChestXrayReadError as err:
        return [err.reason, None, None]
    except Exception as err:  # noqa: BLE001 - one unforeseen failure must not hide every other bad item
        logger.debug("unexpected error reading %s", path, exc_info=True)
        return [f"cannot be read: unexpected {type(err).__name__} (please report this file's kind)", None, None]
    return [None, int(image.meta["rows"]), int(image.meta["columns"])]


def _read_mask(path: str) -> list[Any]:
    """``[reason or None, rows, columns]`` of one mask file (one channel of 0/1 values)."""
    if not os.path.isfile(path):
        return ["file not found", None, None]
    try:
        with Image.open(path) as image:
            image.load()
            mode = image.mode
            array = np.asarray(image)
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError, SyntaxError, ValueError) as err:
        return [f"cannot decode the mask ({type(err).__name__})", None, None]
    if array.ndim != 2:
        return [f"the mask must have one channel (PIL mode {mode})", None, None]
    if array.size and (array.min() < 0 or array.max() > 1):
        return [f"mask values must be 0 and 1 (found values from {array.min()} to {array.max()})", None, None]
    return [None, int(array.shape[0]), int(array.shape[1])]


def _check_files(paths: Sequence[str], table: str, reader: Any, memo: _Memo, workers: int) -> dict[str, list[Any]]:
    """``{path: [reason or None, rows, columns]}``, from the memo or by reading each file."""
    results: dict[str, list[Any]] = {}
    todo: list[tuple[str, list[Any]]] = []
    remembered_count = 0
    for path in dict.fromkeys(paths):
        stamp = _stamp(Path(path))
        if stamp is None:
            results[path] = ["file not found", None, None]
            continue
        remembered = memo.get(table, os.path.abspath(path), stamp)
        if remembered is not None:
            results[path] = remembered
            remembered_count += 1
        else:
            todo.append((path, stamp))
    if todo:
        logger.info("pre-flight: reading %d %s (%d remembered)", len(todo), table, remembered_count)
        with ThreadPoolExecutor(max(1, workers)) as pool:
            for (path, stamp), result in zip(todo, pool.map(reader, [p for p, _ in todo]), strict=True):
                results[path] = result
                memo.put(table, os.path.abspath(path), stamp, result)
    return results
