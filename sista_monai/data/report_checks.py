"""The reports of the pre-flight check (:mod:`.validate`): extracted, cleaned and counted in tokens as in training.

Each report (text, bytes or a ``.txt``/``.xml`` file) goes through the pipeline's section extraction and cleaning;
the reasons it cannot be used (empty, only de-identification masks, undecodable bytes, unreadable or missing file)
and its token count are remembered in the pre-flight memo (:class:`~.file_checks._Memo`) keyed by the report's
SHA-256 (a file's by its path, size and time) and the extraction and tokenizer settings.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sista_monai.errors import ReportError
from sista_monai.io.files import sha256_bytes
from sista_monai.transforms.report import CleanReport, ExtractReportSections
from sista_monai.transforms.tokenizer import ReportTokenizer

from .file_checks import _Memo, _stamp

__all__: list[str] = []  # private helpers of the pre-flight check


def _report_file(value: Any) -> str | None:
    """The path when a report value names a report file (as :class:`ExtractReportSections` reads it)."""
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, str) and "\n" not in value and len(value) < 4096 and os.path.isfile(value):
        return value
    return None


def _missing_report_file(value: Any) -> bool:
    """A one-line ``.txt``/``.xml`` name that is not a file: the pipeline would train on the name as text."""
    if isinstance(value, os.PathLike):
        return not os.path.isfile(value)
    return (
        isinstance(value, str)
        and "\n" not in value
        and " " not in value.strip()
        and value.strip().lower().endswith((".txt", ".xml"))
        and not os.path.isfile(value)
    )


def _report_key(value: Any, settings: str) -> str | None:
    """The memo key of a report value: its text, or a report file's path, size and time."""
    path = _report_file(value)
    if path is not None:
        content = f"file:{os.path.abspath(path)}:{_stamp(Path(path))}".encode()
    elif isinstance(value, str):
        content = b"text:" + value.encode("utf-8", "surrogatepass")
    elif isinstance(value, (bytes, bytearray)):
        content = b"bytes:" + bytes(value)
    else:
        return None
    return sha256_bytes(settings.encode() + b"\0" + content)


class _Reports:
    """Extraction, cleaning and token counting of reports, as the pretraining pipeline does them."""

    def __init__(
        self,
        parser: str,
        sections: Sequence[str],
        tokenizer: Any,
        max_length: int | None,
        memo: _Memo,
    ) -> None:
        self.extract = ExtractReportSections(parser, tuple(sections))
        self.clean = CleanReport()
        self.tokenizer: Any = None
        if tokenizer is not None and max_length is not None:
            self.tokenizer = ReportTokenizer(tokenizer, max_length=int(max_length)).tokenizer
        self.max_length = max_length
        name = tokenizer if tokenizer is None or isinstance(tokenizer, (str, os.PathLike)) else tokenizer.name_or_path
        self.settings = json.dumps([parser, list(sections), os.fspath(name) if name is not None else None])
        self.memo = memo

    def check(self, values: Sequence[tuple[str, Any]]) -> list[list[Any]]:
        """``[reason or None, token count or None]`` for each ``(item id, report value)``."""
        results: list[list[Any]] = []
        keys: list[str | None] = []
        pending: dict[int, str] = {}
        for position, (item_id, value) in enumerate(values):
            if _missing_report_file(value):
                keys.append(None)
                results.append(["report file not found", None])
                continue
            key = _report_key(value, self.settings)
            keys.append(key)
            remembered = self.memo.tables["reports"].get(key) if key is not None else None
            if isinstance(remembered, list) and len(remembered) == 2:
                results.append(remembered)
                continue
            try:
                cleaned = self.clean(self.extract(value, source=item_id), source=item_id)
            except ReportError as err:
                results.append([err.reason, None])
                continue
            except TypeError:
                results.append([f"the report is {type(value).__name__}, not text", None])
                continue
            results.append([None, None])
            if self.tokenizer is not None:
                pending[position] = cleaned
        if pending:
            encoded = self.tokenizer(list(pending.values()), add_special_tokens=True, truncation=False, verbose=False)
            for position, ids in zip(pending, encoded["input_ids"], strict=True):
                results[position] = [None, len(ids)]
        for key, result in zip(keys, results, strict=True):
            if key is not None and self.memo.tables["reports"].get(key) != result:
                self.memo.tables["reports"][key] = result
                self.memo.changed = True
        return results
