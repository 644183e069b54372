"""CSV files of the public datasets: read as UTF-8 text (directly from ``.zip``/``.gz``), rows numbered as the file.

Every dataset source reads its label and metadata CSVs through :func:`read_csv_table`, which checks the
header and keeps each row's 1-based line number (the header is row 1) so that problems name the row.
"""

from __future__ import annotations

import contextlib
import csv
import gzip
import io
import os
import zipfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from ..datalist import ProblemLog

__all__ = ["open_csv_text", "CsvTable", "read_csv_table", "width_problem", "format_rows", "repeat_reason"]


@contextlib.contextmanager
def open_csv_text(path: str | os.PathLike) -> Iterator[TextIO]:
    """Open a CSV as UTF-8 text (a leading BOM is dropped), directly from a ``.zip`` or ``.gz`` if it is one.

    A ``.zip`` must hold exactly one ``.csv`` member. Nothing is unpacked to disk.

    Args:
        path: the ``.csv``, ``.csv.gz`` or ``.zip`` file.

    Yields:
        A text stream for :func:`csv.reader` (newlines untranslated).

    Raises:
        OSError, zipfile.BadZipFile, gzip.BadGzipFile: when the file cannot be read.
        ValueError: when a zip archive does not hold exactly one CSV.
    """
    source = Path(path)
    suffix = source.suffix.lower()
    with contextlib.ExitStack() as stack:
        if suffix == ".zip":
            archive = stack.enter_context(zipfile.ZipFile(source))
            members = [name for name in archive.namelist() if name.lower().endswith(".csv")]
            if len(members) != 1:
                raise ValueError(f"the archive holds {len(members)} .csv files, expected exactly one")
            binary = stack.enter_context(archive.open(members[0]))
            handle: TextIO = stack.enter_context(io.TextIOWrapper(binary, encoding="utf-8-sig", newline=""))
        elif suffix == ".gz":
            handle = stack.enter_context(gzip.open(source, "rt", encoding="utf-8-sig", newline=""))
        else:
            handle = stack.enter_context(open(source, encoding="utf-8-sig", newline=""))
        yield handle


@dataclass
class CsvTable:
    """The rows of a CSV file with their 1-based row numbers (the header is row 1).

    Attributes:
        source: how problems name the file.
        columns: header name (stripped of surrounding spaces) -> field index.
        width: the number of header fields.
        rows: ``(row number, fields)`` of every non-blank data row.
    """

    source: str
    columns: dict[str, int]
    width: int
    rows: list[tuple[int, list[str]]]

    def field(self, fields: Sequence[str], name: str) -> str:
        """The stripped value of column ``name`` in ``fields`` (``""`` when the row is too short)."""
        index = self.columns[name]
        return fields[index].strip() if index < len(fields) else ""


def read_csv_table(path: str | os.PathLike, required: Sequence[str], problems: ProblemLog) -> CsvTable | None:
    """Read a CSV, checking that the header has the ``required`` columns.

    Row numbers are the line numbers of the file (:attr:`csv.reader.line_num`), so the header is row 1 and a
    blank line still counts; blank rows are left out.

    Args:
        path: the CSV (``.csv``, ``.gz`` or ``.zip``, see :func:`open_csv_text`).
        required: column names that must be present (surrounding spaces of header names are ignored, so
            SIIM's ``" EncodedPixels"`` matches ``"EncodedPixels"``).
        problems: where unreadable files and missing columns are recorded (as fatal problems).

    Returns:
        The table, or ``None`` when the file cannot be used at all.
    """
    source = str(path)
    line = 0
    try:
        with open_csv_text(path) as handle:
            reader = csv.reader(handle)
            header = next(reader, None)
            if header is None:
                problems.add(source, "empty file: no header row", fatal=True)
                return None
            columns = {name.strip(): index for index, name in enumerate(header)}
            missing = [name for name in required if name not in columns]
            if missing:
                problems.add(
                    source,
                    f"the header lacks the column(s) {', '.join(missing)} (expected {', '.join(required)})",
                    row=1,
                    fatal=True,
                )
                return None
            rows = []
            for fields in reader:
                line = reader.line_num
                if any(value.strip() for value in fields):
                    rows.append((reader.line_num, fields))
    except (OSError, ValueError, csv.Error, zipfile.BadZipFile, EOFError) as err:
        where = f" after row {line}" if line else ""
        problems.add(source, f"cannot read the CSV{where} ({type(err).__name__})", fatal=True)
        return None
    return CsvTable(source, columns, len(header), rows)


def width_problem(table: CsvTable, fields: Sequence[str]) -> str | None:
    if len(fields) != table.width:
        return f"malformed row: {len(fields)} fields, the header has {table.width}"
    return None


def format_rows(rows: Sequence[int]) -> str:
    return ", ".join(str(row) for row in rows)


def repeat_reason(first_row: int, identical: bool, key: str) -> str:
    """Why a row whose key was already seen in ``first_row`` is a problem."""
    return f"duplicate of row {first_row}" if identical else f"contradicts row {first_row} (same {key})"
