"""Turn the public chest X-ray datasets into MONAI datalists (one command per dataset).

Commands (``--out`` receives the datalists; see ``data/README.md`` for where to obtain each dataset)::

    python -m sista_monai.data.prepare rsna --labels stage_2_train_labels.csv --images stage_2_train_images \\
        --out data/rsna [--splits DIR | --split-seed N] [--on-error raise|skip]
    python -m sista_monai.data.prepare siim --rle train-rle.csv --images dicom-images-train --out data/siim \\
        [--rle-format auto|stage1|stage2] [--splits DIR | --split-seed N] [--on-error raise|skip]
    python -m sista_monai.data.prepare mimic-cxr --root mimic-cxr-jpg/2.1.0 [--reports mimic-cxr/2.1.0] \\
        [--metadata mimic-cxr-2.0.0-metadata.csv] [--split mimic-cxr-2.0.0-split.csv] \\
        [--chexpert mimic-cxr-2.0.0-chexpert.csv] [--views PA,AP|all] [--uncertain ones|zeros] --out data/mimic
    python -m sista_monai.data.prepare iu-xray --reports ecgen-radiology [--images png] --out data/iu_xray

Outputs (paths inside a datalist are relative to its folder when under ``--out``, else absolute):

* ``rsna``: ``datalist_classification.json`` (``label`` = Target) and ``datalist_detection.json`` (every box
  of a patient, ``[x, y, width, height]`` in DICOM pixels as the CSV gives them, ``box_mode`` ``"xywh"``),
  both from ONE patient-level split, each with the nested ``training_1``/``training_10`` subsets, plus
  ``datalist_{classification,detection}_{1,10}pct.json`` whose ``training`` is the subset.
* ``siim``: ``datalist_segmentation.json`` (+ ``_1pct``/``_10pct``) and ``masks/<ImageId>.png`` (uint8 0/1,
  DICOM ``(Rows, Columns)``, all RLE rows of an image merged).
* ``mimic-cxr`` and ``iu-xray``: ``datalist_pretrain.json`` (report = IMPRESSION + FINDINGS, cleaned).
* every command: ``prepare_report.json`` (counts, split source, drops per reason) and ``skipped.json``.

Splits: RSNA and SIIM use the released split files (``data/splits``, SHA-256 verified) unless
``--split-seed`` asks for a fresh seeded split. A labels CSV that covers only part of the released ids (a
sample) keeps the released assignment of the ids it has, and the label fractions are the released ones
intersected with those ids; an id absent from the released split is a problem.

Input problems (missing image files, malformed rows, duplicate or contradictory rows, RLE past the image)
are all collected first and reported together, naming the file, the 1-based CSV row (the header is row 1)
and the item; nothing is written then. ``--on-error skip`` drops the affected items instead and lists them
with their reasons in ``skipped.json``. The command line prints the problems and exits with status 2.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import gzip
import io
import logging
import math
import os
import sys
import zipfile
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import numpy as np
import pydicom
from PIL import Image

from sista_monai.errors import ReportError, SistaDataError
from sista_monai.transforms.report import (
    clean_report_text,
    compose_report_text,
    decode_report_bytes,
    parse_iu_report_xml,
    parse_mimic_report,
)

from .datalist import (
    FRACTION_KEYS,
    DatasetPreparationError,
    ProblemLog,
    StagedOutput,
    check_datalist,
    datalist_path,
    sha256_file,
    write_json_atomic,
)
from .rle import RLE_FORMATS, RLEError, RunLengths, absolute_runs, decode_runs, detect_rle_format, parse_rle
from .splits import DATALIST_KEYS, SPLIT_FILES, DatasetSplit, SplitError, load_split, make_split

__all__ = [
    "ON_ERROR",
    "RSNA_COLUMNS",
    "SIIM_COLUMNS",
    "MIMIC_SPLIT_NAMES",
    "RsnaPatient",
    "SiimImage",
    "open_csv_text",
    "read_csv_table",
    "read_rsna_labels",
    "read_siim_rle",
    "prepare_rsna",
    "prepare_siim",
    "prepare_mimic_cxr",
    "prepare_iu_xray",
    "main",
]

logger = logging.getLogger(__name__)

ON_ERROR: tuple[str, ...] = ("raise", "skip")
"""What preparation does with bad items: report them all and write nothing, or drop them (``skipped.json``)."""

RSNA_COLUMNS: tuple[str, ...] = ("patientId", "x", "y", "width", "height", "Target")
SIIM_COLUMNS: tuple[str, ...] = ("ImageId", "EncodedPixels")
MIMIC_SPLIT_NAMES: dict[str, str] = {"train": "training", "validate": "validation", "test": "test"}
"""Values of the official ``split`` column -> datalist key."""

_CHEXPERT_VALUES: dict[str, int | None] = {"1.0": 1, "1": 1, "0.0": 0, "0": 0, "-1.0": -1, "-1": -1, "": None}
_PRETRAIN_SPLIT_FRACTIONS = ("0.98", "0.01", "0.01")
_IU_SPLIT_FRACTIONS = ("0.70", "0.15", "0.15")
_DICOM_SUFFIXES = (".dcm",)
_MIMIC_IMAGE_SUFFIXES = (".dcm", ".jpg", ".jpeg", ".png")
_FRACTION_FILE_SUFFIX = {"training_1": "1pct", "training_10": "10pct"}


# ---------------------------------------------------------------------------------------------- reading
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


def _width_problem(table: CsvTable, fields: Sequence[str]) -> str | None:
    if len(fields) != table.width:
        return f"malformed row: {len(fields)} fields, the header has {table.width}"
    return None


@dataclass
class RsnaPatient:
    """The label rows of one RSNA patient.

    Attributes:
        patient_id: the ``patientId`` (the DICOM file stem).
        target: ``Target`` (1 = pneumonia-like opacity).
        boxes: ``[x, y, width, height]`` of each Target-1 row, in row order, as the CSV gives them.
        rows: the 1-based CSV rows of the patient.
    """

    patient_id: str
    target: int
    boxes: list[list[float]] = field(default_factory=list)
    rows: list[int] = field(default_factory=list)


def _parse_box(values: Sequence[str]) -> list[float] | str:
    """``[x, y, width, height]`` from the four CSV fields, or the reason they are not a box."""
    if not all(values):
        return "malformed row: Target 1 needs x, y, width and height"
    try:
        box = [float(value) for value in values]
    except ValueError:
        return "malformed row: x, y, width and height must be numbers"
    if not all(math.isfinite(value) for value in box):
        return "malformed row: x, y, width and height must be finite"
    if box[0] < 0 or box[1] < 0 or box[2] <= 0 or box[3] <= 0:
        return "malformed row: the box needs x, y >= 0 and width, height > 0"
    return box


def read_rsna_labels(path: str | os.PathLike, problems: ProblemLog) -> dict[str, RsnaPatient]:
    """Read and check the RSNA ``stage_2_train_labels.csv`` (``patientId,x,y,width,height,Target``).

    Problems recorded (each naming the row and the patient): a row with the wrong number of fields, an empty
    ``patientId``, a ``Target`` other than 0/1, a Target-1 row without a valid box (numbers, ``x, y >= 0``,
    positive size), a Target-0 row with box values, an exact duplicate of an earlier row, and a patient with
    both Target-0 and Target-1 rows (contradictory).

    Args:
        path: the CSV (``.csv``, ``.gz`` or ``.zip``).
        problems: where problems are recorded.

    Returns:
        The patients by id (those with problems included; :attr:`ProblemLog.bad_items` names them).
    """
    table = read_csv_table(path, RSNA_COLUMNS, problems)
    if table is None:
        return {}
    source = table.source
    patients: dict[str, RsnaPatient] = {}
    seen: dict[tuple[str, ...], int] = {}
    target_rows: dict[str, dict[int, list[int]]] = defaultdict(lambda: defaultdict(list))
    for row, fields in table.rows:
        patient_id = table.field(fields, "patientId")
        reason = _width_problem(table, fields)
        if reason is None and not patient_id:
            reason = "malformed row: empty patientId"
        if reason is not None:
            problems.add(source, reason, row=row, item=patient_id or None)
            continue
        values = tuple(table.field(fields, name) for name in RSNA_COLUMNS)
        if values in seen:
            problems.add(source, f"duplicate of row {seen[values]}", row=row, item=patient_id)
            continue
        seen[values] = row
        target_text = values[5]
        if target_text not in ("0", "1"):
            problems.add(source, "malformed row: Target must be 0 or 1", row=row, item=patient_id)
            continue
        target = int(target_text)
        box: list[float] | str | None = None
        if target == 1:
            box = _parse_box(values[1:5])
        elif any(values[1:5]):
            box = "malformed row: a Target 0 row must not have box values"
        if isinstance(box, str):
            problems.add(source, box, row=row, item=patient_id)
            continue
        target_rows[patient_id][target].append(row)
        record = patients.setdefault(patient_id, RsnaPatient(patient_id, target))
        record.rows.append(row)
        if box is not None:
            record.boxes.append(box)
    for patient_id, by_target in target_rows.items():
        if len(by_target) > 1:
            problems.add(
                source,
                f"contradictory rows for one patient: Target 0 in row(s) {_rows(by_target[0])} but Target 1 in "
                f"row(s) {_rows(by_target[1])}",
                row=max(by_target[0][0], by_target[1][0]),
                item=patient_id,
            )
    return patients


def _rows(rows: Sequence[int]) -> str:
    return ", ".join(str(row) for row in rows)


def _repeat_reason(first_row: int, identical: bool, key: str) -> str:
    """Why a row whose key was already seen in ``first_row`` is a problem."""
    return f"duplicate of row {first_row}" if identical else f"contradicts row {first_row} (same {key})"


@dataclass
class SiimImage:
    """The RLE rows of one SIIM image.

    Attributes:
        image_id: the ``ImageId`` (the DICOM file stem).
        encodings: ``(row, parsed runs)`` of each non-empty row, in row order.
        empty_rows: the rows saying ``-1`` (no pneumothorax).
    """

    image_id: str
    encodings: list[tuple[int, RunLengths]] = field(default_factory=list)
    empty_rows: list[int] = field(default_factory=list)

    @property
    def positive(self) -> bool:
        """Whether any row encodes pneumothorax pixels."""
        return bool(self.encodings)

    @property
    def rows(self) -> list[int]:
        """Every CSV row of the image."""
        return sorted([row for row, _ in self.encodings] + self.empty_rows)


def read_siim_rle(path: str | os.PathLike, problems: ProblemLog) -> dict[str, SiimImage]:
    """Read and check a SIIM ``train-rle.csv`` (``ImageId, EncodedPixels``; either RLE format).

    Problems recorded (each naming the row and the image): a row with the wrong number of fields, an empty
    ``ImageId``, ``EncodedPixels`` that are neither ``-1`` nor start/length pairs, an exact duplicate of an
    earlier row (same image and same encoding, whitespace aside), and an image with both a ``-1`` row and an
    encoded row (contradictory). Several encoded rows of one image are expected: they are merged.

    Args:
        path: the CSV (``.csv``, ``.gz`` or ``.zip``).
        problems: where problems are recorded.

    Returns:
        The images by id (those with problems included; :attr:`ProblemLog.bad_items` names them).
    """
    table = read_csv_table(path, SIIM_COLUMNS, problems)
    if table is None:
        return {}
    source = table.source
    images: dict[str, SiimImage] = {}
    seen: dict[tuple[str, str], int] = {}
    for row, fields in table.rows:
        image_id = table.field(fields, "ImageId")
        reason = _width_problem(table, fields)
        if reason is None and not image_id:
            reason = "malformed row: empty ImageId"
        if reason is not None:
            problems.add(source, reason, row=row, item=image_id or None)
            continue
        encoding = " ".join(table.field(fields, "EncodedPixels").split())
        key = (image_id, encoding)
        if key in seen:
            problems.add(source, f"duplicate of row {seen[key]}", row=row, item=image_id)
            continue
        seen[key] = row
        try:
            runs = parse_rle(encoding, source)
        except RLEError as err:
            problems.add(source, f"malformed EncodedPixels: {err.reason}", row=row, item=image_id)
            continue
        record = images.setdefault(image_id, SiimImage(image_id))
        if runs.empty:
            record.empty_rows.append(row)
        else:
            record.encodings.append((row, runs))
    for image_id, record in images.items():
        if record.encodings and record.empty_rows:
            problems.add(
                source,
                f"contradictory rows for one image: -1 (empty) in row(s) {_rows(record.empty_rows)} but a mask in "
                f"row(s) {_rows([row for row, _ in record.encodings])}",
                row=max(record.empty_rows[0], record.encodings[0][0]),
                item=image_id,
            )
    return images


def _index_files(folder: Path, suffixes: Sequence[str], problems: ProblemLog) -> dict[str, list[Path]]:
    """Files under ``folder`` (recursively) whose suffix is in ``suffixes``, by file stem."""
    if not folder.is_dir():
        problems.add(folder, "image folder not found", fatal=True)
        return {}
    index: dict[str, list[Path]] = defaultdict(list)
    for root, _folders, names in os.walk(folder, followlinks=True):
        for name in names:
            stem, suffix = os.path.splitext(name)
            if suffix.lower() in suffixes:
                index[stem].append(Path(root) / name)
    for paths in index.values():
        paths.sort()
    return index


def _find_file(
    index: Mapping[str, list[Path]],
    item_id: str,
    expected: str,
    folder: Path,
    problems: ProblemLog,
    source: object,
    row: int | None = None,
    item: str | None = None,
) -> Path | None:
    """The one file named ``item_id`` in ``index``; records a problem when there is none or several."""
    paths = index.get(item_id, [])
    if len(paths) == 1:
        return paths[0]
    if not paths:
        problems.add(source, f"image file {expected} not found under {folder}", row=row, item=item or item_id)
    else:
        problems.add(
            source, f"{len(paths)} files named {expected} under {folder}: ambiguous", row=row, item=item or item_id
        )
    return None


def _dicom_header(path: Path, tags: Sequence[str]) -> pydicom.Dataset | str:
    """The DICOM header of ``path`` (no pixel data), or the reason it cannot be read."""
    try:
        return pydicom.dcmread(path, stop_before_pixels=True, force=True, specific_tags=list(tags))
    except Exception as err:  # pydicom raises many types for damaged files; all become a reported problem
        return f"cannot read the DICOM header ({type(err).__name__})"


def _dicom_shape(path: Path) -> tuple[int, int] | str:
    """``(Rows, Columns)`` from the DICOM header, or the reason they are unavailable."""
    header = _dicom_header(path, ["Rows", "Columns"])
    if isinstance(header, str):
        return header
    rows, columns = header.get("Rows"), header.get("Columns")
    if not isinstance(rows, int) or not isinstance(columns, int) or rows <= 0 or columns <= 0:
        return "the DICOM header has no valid Rows and Columns"
    return rows, columns


# ------------------------------------------------------------------------------------------ splitting
def _released_split(
    dataset: str, rows: Mapping[str, int], splits_dir: Path | None, problems: ProblemLog, source: str
) -> DatasetSplit | None:
    """The released split of ``dataset``; records every id of ``rows`` (id -> first CSV row) it lacks."""
    try:
        released = load_split(dataset, splits_dir)
    except SplitError as err:
        problems.add(
            err.source, f"{err.reason} (give --splits DIR, or --split-seed N for a fresh split)", fatal=True
        )
        return None
    known = released.ids
    for item_id, row in sorted(rows.items()):
        if item_id not in known:
            problems.add(
                source,
                f"not in the released {dataset} split (use --split-seed N to split data outside it)",
                row=row,
                item=item_id,
            )
    covered = sum(item_id in known for item_id in rows)
    if covered < len(known):
        logger.info(
            "%s covers %d of the %d ids of the released split: keeping their released assignment",
            source,
            covered,
            len(known),
        )
    return released


def _choose_split(
    released: DatasetSplit | None, strata: Mapping[str, int], split_seed: int | None, dataset: str
) -> DatasetSplit:
    """The released split restricted to ``strata``'s ids, or a fresh seeded split of them."""
    if split_seed is not None:
        return make_split(strata, split_seed, source=f"seeded split (seed {split_seed}) of the {dataset} ids given")
    assert released is not None
    return released.restrict(strata)


def _split_lists(items: Mapping[str, dict[str, Any]], split: DatasetSplit) -> dict[str, list[dict[str, Any]]]:
    """Datalist lists (training, validation, test and label fractions) of ``items``, sorted by id."""
    return {
        DATALIST_KEYS[name]: [items[item_id] for item_id in sorted(split[name]) if item_id in items]
        for name in SPLIT_FILES
        if name in split.subsets
    }


def _split_counts(lists: Mapping[str, list[dict[str, Any]]], positive: Callable[[dict[str, Any]], bool]) -> dict:
    return {key: {"items": len(items), "positives": sum(map(positive, items))} for key, items in lists.items()}


# --------------------------------------------------------------------------------------------- writing
def _datalist(
    lists: Mapping[str, list[dict[str, Any]]], name: str, description: str, reference: str, licence: str, **extra: Any
) -> dict[str, Any]:
    return {
        "name": name,
        "description": description,
        "reference": reference,
        "licence": licence,
        "tensorImageSize": "2D",
        "numTraining": len(lists["training"]),
        "numValidation": len(lists["validation"]),
        "numTest": len(lists["test"]),
        **extra,
        **lists,
    }


def _with_fraction_files(stem: str, task: str, datalist: dict[str, Any]) -> dict[str, tuple[str, dict[str, Any]]]:
    """The datalist and one datalist per label fraction whose ``training`` is that fraction."""
    files = {f"{stem}.json": (task, datalist)}
    base = {key: value for key, value in datalist.items() if key not in FRACTION_KEYS}
    for key, suffix in _FRACTION_FILE_SUFFIX.items():
        if key in datalist:
            subset = datalist[key]
            fraction = {**base, "training": subset, "numTraining": len(subset), "label_fraction": FRACTION_KEYS[key]}
            files[f"{stem}_{suffix}.json"] = (task, fraction)
    return files


def _write_outputs(
    out: Path,
    datalists: Mapping[str, tuple[str, dict[str, Any]]],
    report: dict[str, Any],
    skipped: list[dict[str, Any]],
    on_error: str,
    write_extra: Callable[[Path], None] | None = None,
) -> None:
    """Validate the datalists, then write everything through a staging folder moved into ``out``."""
    for name, (task, datalist) in datalists.items():
        check_datalist(datalist, task, source=name)
    with StagedOutput(out) as staging:
        if write_extra is not None:
            write_extra(staging)
        for name, (_task, datalist) in datalists.items():
            write_json_atomic(staging / name, datalist)
        write_json_atomic(
            staging / "skipped.json",
            {
                "on_error": on_error,
                "items": sorted({record["item"] for record in skipped if "item" in record}),
                "problems": skipped,
            },
        )
        report["files"] = sorted([*datalists, "skipped.json", *(["masks/"] if write_extra else [])])
        write_json_atomic(staging / "prepare_report.json", report)
    logger.info("wrote %s to %s", ", ".join(sorted(datalists)), out)


def _check_on_error(on_error: str) -> None:
    if on_error not in ON_ERROR:
        raise ValueError(f"on_error must be one of {ON_ERROR}, got {on_error!r}")


def _nothing_left(context: str, what: str) -> DatasetPreparationError:
    return DatasetPreparationError(context, f"no usable {what} left; nothing was written")


# ------------------------------------------------------------------------------------------------ RSNA
def prepare_rsna(
    labels: str | os.PathLike,
    images: str | os.PathLike,
    out: str | os.PathLike,
    *,
    splits_dir: str | os.PathLike | None = None,
    split_seed: int | None = None,
    on_error: str = "raise",
) -> dict[str, Any]:
    """Prepare RSNA Pneumonia classification and detection datalists from ONE patient-level split.

    Args:
        labels: ``stage_2_train_labels.csv`` (or ``.zip``/``.gz``), or a subset of its rows.
        images: the folder of ``<patientId>.dcm`` files (searched recursively).
        out: the output folder.
        splits_dir: the released split folder (default ``data/splits`` of the checkout).
        split_seed: draw a fresh stratified split of the CSV's patients with this seed instead.
        on_error: ``"raise"`` or ``"skip"`` (see the module docstring).

    Returns:
        The content of ``prepare_report.json``.

    Raises:
        DatasetPreparationError: listing every problem found (nothing is written).
    """
    _check_on_error(on_error)
    labels, images, out = Path(labels), Path(images), Path(out)
    context = "prepare rsna"
    problems = ProblemLog(context)
    patients = read_rsna_labels(labels, problems)
    index = _index_files(images, _DICOM_SUFFIXES, problems)
    image_paths: dict[str, Path] = {}
    if images.is_dir():
        for patient_id, record in sorted(patients.items()):
            path = _find_file(index, patient_id, f"{patient_id}.dcm", images, problems, labels, row=record.rows[0])
            if path is not None:
                image_paths[patient_id] = path
    released = None
    if split_seed is None:
        first_rows = {patient_id: record.rows[0] for patient_id, record in patients.items()}
        released = _released_split("rsna", first_rows, _opt(splits_dir), problems, str(labels))
    skipped = problems.resolve(on_error)
    kept = {p: patients[p] for p in sorted(patients) if p not in problems.bad_items}
    if not kept:
        raise _nothing_left(context, "patient")
    split = _choose_split(released, {p: r.target for p, r in kept.items()}, split_seed, "rsna")

    classification = {
        p: {"id": p, "image": datalist_path(image_paths[p], out), "label": r.target} for p, r in kept.items()
    }
    detection = {
        p: {
            "id": p,
            "image": datalist_path(image_paths[p], out),
            "boxes": [list(box) for box in r.boxes],
            "labels": [0] * len(r.boxes),
        }
        for p, r in kept.items()
    }
    classification_lists = _split_lists(classification, split)
    detection_lists = _split_lists(detection, split)
    common = {
        "reference": "RSNA Pneumonia Detection Challenge (Kaggle, 2018), stage 2 training labels",
        "licence": "Kaggle competition rules: see data/README.md",
        "split": split.source,
    }
    datalists = {
        **_with_fraction_files(
            "datalist_classification",
            "classification",
            _datalist(
                classification_lists,
                "RSNA Pneumonia classification",
                "Pneumonia-like lung opacity (Target) present (1) or absent (0), one item per patient.",
                labels={"0": "no opacity", "1": "Lung Opacity"},
                **common,
            ),
        ),
        **_with_fraction_files(
            "datalist_detection",
            "detection",
            _datalist(
                detection_lists,
                "RSNA Pneumonia detection",
                "Lung opacity boxes [x, y, width, height] in DICOM pixels (x = column, y = row) as in the CSV.",
                box_mode="xywh",
                labels={"0": "Lung Opacity"},
                **common,
            ),
        ),
    }
    report = {
        "dataset": "rsna",
        "labels_file": labels.name,
        "labels_sha256": sha256_file(labels),
        "patients": len(kept),
        "positives": sum(r.target for r in kept.values()),
        "boxes": sum(len(r.boxes) for r in kept.values()),
        "split": split.source,
        "counts": _split_counts(classification_lists, lambda item: item["label"] == 1),
        "skipped_items": len(problems.bad_items),
    }
    _write_outputs(out, datalists, report, skipped, on_error)
    return report


def _opt(path: str | os.PathLike | None) -> Path | None:
    return Path(path) if path is not None else None


# ------------------------------------------------------------------------------------------------ SIIM
def prepare_siim(
    rle: str | os.PathLike,
    images: str | os.PathLike,
    out: str | os.PathLike,
    *,
    rle_format: str = "auto",
    splits_dir: str | os.PathLike | None = None,
    split_seed: int | None = None,
    on_error: str = "raise",
) -> dict[str, Any]:
    """Prepare the SIIM-ACR pneumothorax segmentation datalist and its masks, split by ImageId.

    Args:
        rle: ``train-rle.csv`` (or ``.zip``/``.gz``), or a subset of its rows.
        images: the folder holding ``<ImageId>.dcm`` files, searched recursively (the Kaggle layout nests
            them in study/series folders).
        out: the output folder; masks go to ``masks/<ImageId>.png``.
        rle_format: ``"stage1"``, ``"stage2"`` or ``"auto"`` (:func:`~sista_monai.data.rle.detect_rle_format`).
        splits_dir: the released split folder (default ``data/splits`` of the checkout).
        split_seed: draw a fresh stratified split of the CSV's images with this seed instead.
        on_error: ``"raise"`` or ``"skip"``.

    Returns:
        The content of ``prepare_report.json``.

    Raises:
        DatasetPreparationError: listing every problem found (nothing is written).
    """
    _check_on_error(on_error)
    if rle_format not in ("auto", *RLE_FORMATS):
        raise ValueError(f"rle_format must be 'auto' or one of {RLE_FORMATS}, got {rle_format!r}")
    rle, images, out = Path(rle), Path(images), Path(out)
    context = "prepare siim"
    problems = ProblemLog(context)
    records = read_siim_rle(rle, problems)
    index = _index_files(images, _DICOM_SUFFIXES, problems)
    image_paths: dict[str, Path] = {}
    shapes: dict[str, tuple[int, int]] = {}
    if images.is_dir():
        for image_id, record in sorted(records.items()):
            path = _find_file(index, image_id, f"{image_id}.dcm", images, problems, rle, row=record.rows[0])
            if path is None:
                continue
            image_paths[image_id] = path
            shape = _dicom_shape(path)
            if isinstance(shape, str):
                problems.add(path, shape, item=image_id)
            else:
                shapes[image_id] = shape

    used_format = rle_format
    encoded = [
        (runs, shapes[image_id][0] * shapes[image_id][1])
        for image_id, record in sorted(records.items())
        if image_id in shapes
        for _, runs in record.encodings
    ]
    if rle_format == "auto":
        try:
            used_format = detect_rle_format([e for e, _ in encoded], [s for _, s in encoded]) if encoded else "stage1"
        except RLEError as err:
            problems.add(rle, f"{err.reason} (--rle-format stage1|stage2)", fatal=True)
    runs_by_image: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    if used_format in RLE_FORMATS:
        for image_id, record in sorted(records.items()):
            if image_id not in shapes:
                continue
            rows, cols = shapes[image_id]
            starts, lengths = [], []
            for row, runs in record.encodings:
                try:
                    absolute = absolute_runs(runs, used_format, rle)
                except RLEError as err:
                    problems.add(rle, err.reason, row=row, item=image_id)
                    continue
                end = int(absolute[-1] + runs.lengths[-1])
                if end > rows * cols:
                    problems.add(
                        rle,
                        f"EncodedPixels run past the image: they need {end} pixels, the DICOM has {rows}x{cols} = "
                        f"{rows * cols} ({used_format} format)",
                        row=row,
                        item=image_id,
                    )
                    continue
                starts.append(absolute)
                lengths.append(runs.lengths)
            empty = np.zeros(0, dtype=np.int64)
            runs_by_image[image_id] = (
                np.concatenate(starts) if starts else empty,
                np.concatenate(lengths) if lengths else empty,
            )
    released = None
    if split_seed is None:
        first_rows = {image_id: record.rows[0] for image_id, record in records.items()}
        released = _released_split("siim", first_rows, _opt(splits_dir), problems, str(rle))
    skipped = problems.resolve(on_error)
    kept = {i: records[i] for i in sorted(records) if i not in problems.bad_items}
    if not kept:
        raise _nothing_left(context, "image")
    split = _choose_split(released, {i: int(r.positive) for i, r in kept.items()}, split_seed, "siim")

    items = {
        i: {"id": i, "image": datalist_path(image_paths[i], out), "mask": f"masks/{i}.png"} for i in kept
    }
    lists = _split_lists(items, split)
    areas: dict[str, int] = {}

    def write_masks(staging: Path) -> None:
        folder = staging / "masks"
        folder.mkdir()
        for image_id in kept:
            starts, lengths = runs_by_image[image_id]
            mask = decode_runs(starts, lengths, shapes[image_id])
            areas[image_id] = int(mask.sum())
            Image.fromarray(mask).save(folder / f"{image_id}.png", format="PNG")

    datalists = _with_fraction_files(
        "datalist_segmentation",
        "segmentation",
        _datalist(
            lists,
            "SIIM-ACR Pneumothorax segmentation",
            "Pneumothorax masks: uint8 PNG, values 0/1, (Rows, Columns) of the DICOM; all RLE rows of an image "
            "merged; empty when absent.",
            reference="SIIM-ACR Pneumothorax Segmentation (Kaggle, 2019), stage 1 train-rle.csv",
            licence="Kaggle competition rules: see data/README.md",
            labels={"0": "background", "1": "Pneumothorax"},
            split=split.source,
            rle_format=used_format,
        ),
    )
    report = {
        "dataset": "siim",
        "rle_file": rle.name,
        "rle_sha256": sha256_file(rle),
        "rle_format": used_format,
        "rle_format_detected": rle_format == "auto",
        "images": len(kept),
        "positives": sum(r.positive for r in kept.values()),
        "images_with_several_rows": sum(len(r.encodings) > 1 for r in kept.values()),
        "split": split.source,
        "counts": _split_counts(lists, lambda item: kept[item["id"]].positive),
        "skipped_items": len(problems.bad_items),
    }
    _write_outputs(out, datalists, report, skipped, on_error, write_masks)
    return report


# ------------------------------------------------------------------------------------------- MIMIC-CXR
@dataclass
class _MimicImage:
    dicom_id: str
    subject_id: str
    study_id: str
    view: str
    row: int | None = None
    path: Path | None = None

    @property
    def study_key(self) -> str:
        return f"s{self.study_id}"


def _files_dir(root: Path) -> Path:
    return root / "files" if (root / "files").is_dir() else root


def _report_path(reports_files: Path, image: _MimicImage) -> Path:
    return reports_files / f"p{image.subject_id[:2]}" / f"p{image.subject_id}" / f"s{image.study_id}.txt"


def _read_mimic_report(path: Path) -> tuple[str | None, str | None]:
    """``(cleaned IMPRESSION + FINDINGS, None)`` or ``(None, reason the study is dropped)``."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None, "report file not found"
    except OSError:
        return None, "report file unreadable"
    try:
        text = decode_report_bytes(data, path)
    except ReportError:
        return None, "report is not valid UTF-8"
    composed = compose_report_text(parse_mimic_report(text))
    if not composed:
        return None, "no IMPRESSION or FINDINGS section"
    cleaned = clean_report_text(composed)
    if not cleaned:
        return None, "IMPRESSION and FINDINGS are empty after cleaning"
    return cleaned, None


def _mimic_candidates_from_metadata(metadata: Path, problems: ProblemLog) -> list[_MimicImage]:
    table = read_csv_table(metadata, ("dicom_id", "subject_id", "study_id", "ViewPosition"), problems)
    if table is None:
        return []
    images: dict[str, _MimicImage] = {}
    seen: dict[str, tuple[int, tuple[str, ...]]] = {}
    for row, fields in table.rows:
        dicom_id = table.field(fields, "dicom_id")
        values = tuple(table.field(fields, name) for name in ("dicom_id", "subject_id", "study_id", "ViewPosition"))
        reason = _width_problem(table, fields)
        if reason is None and not dicom_id:
            reason = "malformed row: empty dicom_id"
        if reason is None and not (values[1].isdigit() and values[2].isdigit()):
            reason = "malformed row: subject_id and study_id must be integers"
        if reason is None and dicom_id in seen:
            first, first_values = seen[dicom_id]
            reason = _repeat_reason(first, first_values == values, "dicom_id")
        if reason is not None:
            problems.add(metadata, reason, row=row, item=dicom_id or None)
            continue
        seen[dicom_id] = (row, values)
        images[dicom_id] = _MimicImage(dicom_id, values[1], values[2], values[3].upper(), row)
    return list(images.values())


def _mimic_candidates_from_files(
    index: Mapping[str, list[Path]], views: tuple[str, ...] | None, problems: ProblemLog
) -> list[_MimicImage]:
    images = []
    unknown_views = 0
    for dicom_id, paths in sorted(index.items()):
        if len(paths) != 1:
            problems.add(paths[0].parent, f"{len(paths)} image files for one dicom_id: ambiguous", item=dicom_id)
            continue
        path = paths[0]
        study, subject = path.parent.name, path.parent.parent.name
        if not (study[:1] == "s" and study[1:].isdigit() and subject[:1] == "p" and subject[1:].isdigit()):
            problems.add(path, "not in the files/pXX/pSUBJECT/sSTUDY/ layout", item=dicom_id)
            continue
        view = ""
        if views is not None:
            if path.suffix.lower() != ".dcm":
                unknown_views += 1
                continue
            header = _dicom_header(path, ["ViewPosition"])
            if isinstance(header, str):
                problems.add(path, header, item=dicom_id)
                continue
            view = str(header.get("ViewPosition", "") or "").upper()
        images.append(_MimicImage(dicom_id, subject[1:], study[1:], view, None, path))
    if unknown_views:
        problems.add(
            "mimic-cxr",
            f"{unknown_views} JPG/PNG images have no view position without --metadata: give --metadata "
            "(mimic-cxr-2.0.0-metadata.csv) or --views all",
            fatal=True,
        )
    return images


def _mimic_splits(split_csv: Path, problems: ProblemLog) -> dict[str, tuple[str, int]]:
    table = read_csv_table(split_csv, ("dicom_id", "split"), problems)
    if table is None:
        return {}
    splits: dict[str, tuple[str, int]] = {}
    for row, fields in table.rows:
        dicom_id, value = table.field(fields, "dicom_id"), table.field(fields, "split")
        reason = _width_problem(table, fields)
        if reason is None and not dicom_id:
            reason = "malformed row: empty dicom_id"
        if reason is None and value not in MIMIC_SPLIT_NAMES:
            reason = f"malformed row: split must be one of {', '.join(MIMIC_SPLIT_NAMES)}"
        if reason is None and dicom_id in splits:
            first, first_row = splits[dicom_id]
            reason = _repeat_reason(first_row, first == value, "dicom_id")
        if reason is not None:
            problems.add(split_csv, reason, row=row, item=dicom_id or None)
            continue
        splits[dicom_id] = (value, row)
    return splits


def _chexpert_labels(
    chexpert: Path, uncertain: str, problems: ProblemLog
) -> tuple[list[str], dict[tuple[str, str], list[int]]]:
    table = read_csv_table(chexpert, ("subject_id", "study_id"), problems)
    if table is None:
        return [], {}
    in_order = sorted(table.columns, key=table.columns.__getitem__)
    names = [name for name in in_order if name not in ("subject_id", "study_id")]
    uncertain_value = 1 if uncertain == "ones" else 0
    labels: dict[tuple[str, str], list[int]] = {}
    first_rows: dict[tuple[str, str], tuple[int, tuple[str, ...]]] = {}
    for row, fields in table.rows:
        subject, study = table.field(fields, "subject_id"), table.field(fields, "study_id")
        values = tuple(table.field(fields, name) for name in names)
        item = f"s{study}" if study else None
        reason = _width_problem(table, fields)
        if reason is None and not (subject.isdigit() and study.isdigit()):
            reason = "malformed row: subject_id and study_id must be integers"
        bad = [name for name, value in zip(names, values) if value not in _CHEXPERT_VALUES]
        if reason is None and bad:
            reason = f"malformed row: {', '.join(bad)} must be 1, 0, -1 or blank"
        key = (subject, study)
        if reason is None and key in first_rows:
            first, first_values = first_rows[key]
            reason = _repeat_reason(first, first_values == values, "study")
        if reason is not None:
            problems.add(chexpert, reason, row=row, item=item)
            continue
        first_rows[key] = (row, values)
        mapped = []
        for value in values:
            label = _CHEXPERT_VALUES[value]
            mapped.append(0 if label is None else uncertain_value if label == -1 else label)
        labels[key] = mapped
    return names, labels


def prepare_mimic_cxr(
    root: str | os.PathLike,
    out: str | os.PathLike,
    *,
    reports: str | os.PathLike | None = None,
    metadata: str | os.PathLike | None = None,
    split: str | os.PathLike | None = None,
    chexpert: str | os.PathLike | None = None,
    views: Sequence[str] | None = ("PA", "AP"),
    uncertain: str = "ones",
    split_seed: int = 0,
    on_error: str = "raise",
) -> dict[str, Any]:
    """Prepare the MIMIC-CXR (DICOM) or MIMIC-CXR-JPG pretraining datalist: frontal images with their reports.

    One item per kept image: ``{"id": dicom_id, "image", "report", "study_id": "s<study>", "labels"?}``.
    The report is IMPRESSION followed by FINDINGS (:func:`~sista_monai.transforms.parse_mimic_report`,
    :func:`~sista_monai.transforms.compose_report_text`), cleaned with
    :func:`~sista_monai.transforms.clean_report_text`. Studies without usable report text are dropped and
    counted per reason in ``prepare_report.json`` (report file not found or unreadable, not valid UTF-8, no
    IMPRESSION or FINDINGS section, empty after cleaning, and, with ``chexpert``, no CheXpert row).

    Args:
        root: the release folder holding ``files/pXX/pSUBJECT/sSTUDY/<dicom_id>.dcm|.jpg`` (or ``files``).
        out: the output folder.
        reports: the folder holding ``files/pXX/pSUBJECT/sSTUDY.txt`` (mimic-cxr-reports); ``root`` when
            ``None`` (the MIMIC-CXR DICOM release carries the reports there).
        metadata: ``mimic-cxr-2.0.0-metadata.csv``: which images exist and their ``ViewPosition``. Without
            it the images are found on disk and the view is read from the DICOM header (JPG/PNG images then
            need ``views=None``).
        split: ``mimic-cxr-2.0.0-split.csv`` (``train``/``validate``/``test`` per ``dicom_id``). Without it
            the subjects are split 98/1/1 with ``split_seed``.
        chexpert: ``mimic-cxr-2.0.0-chexpert.csv``: one ``labels`` vector per study over its 14 columns
            (``label_names``); 1 -> 1, 0 -> 0, blank (not mentioned) -> 0, -1 (uncertain) -> ``uncertain``.
        views: the ``ViewPosition`` values kept; ``None`` keeps every image.
        uncertain: ``"ones"`` (U-Ones, the default, as the demo data labels hedged findings) or ``"zeros"``.
        split_seed: the seed of the subject split used without ``split``.
        on_error: ``"raise"`` or ``"skip"``.

    Returns:
        The content of ``prepare_report.json``.

    Raises:
        DatasetPreparationError: listing every problem found (nothing is written).
    """
    _check_on_error(on_error)
    if uncertain not in ("ones", "zeros"):
        raise ValueError(f"uncertain must be 'ones' or 'zeros', got {uncertain!r}")
    root, out = Path(root), Path(out)
    reports_files = _files_dir(Path(reports) if reports is not None else root)
    kept_views = tuple(view.upper() for view in views) if views is not None else None
    context = "prepare mimic-cxr"
    problems = ProblemLog(context)
    files = _files_dir(root)
    index = _index_files(files, _MIMIC_IMAGE_SUFFIXES, problems)

    if metadata is not None:
        candidates = _mimic_candidates_from_metadata(Path(metadata), problems)
    else:
        candidates = _mimic_candidates_from_files(index, kept_views, problems)
    filtered: Counter[str] = Counter()
    frontal: list[_MimicImage] = []
    for image in candidates:
        if kept_views is not None and image.view not in kept_views:
            filtered[f"view {image.view or 'unknown'} not in {'/'.join(kept_views)}"] += 1
        else:
            frontal.append(image)
    if metadata is not None:
        for image in frontal:
            image.path = _find_file(
                index, image.dicom_id, f"{image.dicom_id}.dcm|.jpg", files, problems, metadata, row=image.row
            )

    official = _mimic_splits(Path(split), problems) if split is not None else None
    if official is not None:
        for image in frontal:
            if image.dicom_id not in official:
                problems.add(split, "image not in the split CSV", item=image.dicom_id)
    label_names, labels = _chexpert_labels(Path(chexpert), uncertain, problems) if chexpert is not None else ([], {})

    skipped = problems.resolve(on_error)
    bad = problems.bad_items
    usable = [image for image in frontal if image.dicom_id not in bad and image.study_key not in bad and image.path]

    dropped: dict[str, dict[str, Any]] = defaultdict(lambda: {"studies": 0, "images": 0, "ids": []})
    texts: dict[str, tuple[str | None, str | None]] = {}
    items: dict[str, dict[str, Any]] = {}
    subjects: dict[str, str] = {}
    for image in sorted(usable, key=lambda i: (i.study_id, i.dicom_id)):
        key = image.study_key
        if key not in texts:
            text, reason = _read_mimic_report(_report_path(reports_files, image))
            if reason is None and chexpert is not None and (image.subject_id, image.study_id) not in labels:
                text, reason = None, "no CheXpert labels for the study"
            texts[key] = (text, reason)
            if reason is not None:
                dropped[reason]["studies"] += 1
                dropped[reason]["ids"].append(key)
        text, reason = texts[key]
        if reason is not None:
            dropped[reason]["images"] += 1
            continue
        item: dict[str, Any] = {
            "id": image.dicom_id,
            "image": datalist_path(image.path, out),
            "report": text,
            "study_id": key,
        }
        if chexpert is not None:
            item["labels"] = labels[(image.subject_id, image.study_id)]
        items[image.dicom_id] = item
        subjects[image.dicom_id] = image.subject_id
    for reason, record in sorted(dropped.items()):
        logger.info("dropped %d studies (%d images): %s", record["studies"], record["images"], reason)
    if not items:
        raise _nothing_left(context, "image with a report")

    if official is not None:
        assignment = {dicom_id: MIMIC_SPLIT_NAMES[official[dicom_id][0]] for dicom_id in items}
        split_source = "official mimic-cxr-2.0.0-split.csv"
    else:
        by_subject = make_split(
            {subject: 0 for subject in set(subjects.values())},
            split_seed,
            _PRETRAIN_SPLIT_FRACTIONS,
            {},
        )
        split_names = {name: DATALIST_KEYS[name] for name in ("train", "validation", "test")}
        assignment = {d: split_names[by_subject.split_of(s)] for d, s in subjects.items()}
        split_source = f"seeded 98/1/1 subject split (seed {split_seed})"
    lists: dict[str, list[dict[str, Any]]] = {"training": [], "validation": [], "test": []}
    for dicom_id in sorted(items):
        lists[assignment[dicom_id]].append(items[dicom_id])

    extra: dict[str, Any] = {"split": split_source, "views": list(kept_views) if kept_views else "all"}
    if chexpert is not None:
        extra["label_names"] = label_names
        extra["label_mapping"] = {"1": 1, "0": 0, "blank": 0, "-1": 1 if uncertain == "ones" else 0}
    datalist = _datalist(
        lists,
        "MIMIC-CXR image-report pairs",
        "Frontal chest radiographs with their report text (IMPRESSION then FINDINGS, cleaned).",
        reference="MIMIC-CXR v2 (Johnson et al., 2019), PhysioNet",
        licence="PhysioNet Credentialed Health Data License 1.5.0: see data/README.md",
        **extra,
    )
    report = {
        "dataset": "mimic-cxr",
        "image_files_found": sum(len(paths) for paths in index.values()),
        "candidates": len(candidates),
        "filtered": dict(filtered),
        "dropped": {reason: {**record, "ids": sorted(record["ids"])} for reason, record in dropped.items()},
        "items": len(items),
        "studies": len({item["study_id"] for item in items.values()}),
        "split": split_source,
        "counts": {key: len(value) for key, value in lists.items()},
        "skipped_items": len(bad),
    }
    _write_outputs(out, {"datalist_pretrain.json": ("pretraining", datalist)}, report, skipped, on_error)
    return report


# ---------------------------------------------------------------------------------------------- IU X-ray
def _mesh_heading(term: str) -> str:
    return term.split("/", 1)[0].strip()


def prepare_iu_xray(
    reports: str | os.PathLike,
    out: str | os.PathLike,
    *,
    images: str | os.PathLike | None = None,
    split_seed: int = 0,
    on_error: str = "raise",
) -> dict[str, Any]:
    """Prepare the Indiana University (OpenI) chest X-ray pretraining datalist.

    With ``images``: one item per image that exists (``<parentImage id>.png``, searched recursively),
    ``{"id": image id, "image", "report", "report_id", "mesh", "labels"}``; referenced images that are absent,
    and reports left without any image, are dropped and counted in ``prepare_report.json``. Without
    ``images``: one text-only item per report (``"image_ids"`` instead of ``"image"``; the datalist says
    ``"text_only": true``). ``mesh`` keeps the report's MeSH major terms as written; ``labels`` is the
    multi-hot vector over ``label_names``, the sorted MeSH headings (a term's text before its first ``/``,
    e.g. ``"Opacity"`` for ``"Opacity/lung/base/left"``) of the kept items. The split is by report, 70/15/15
    with ``split_seed`` (IU has no official split). Reports whose IMPRESSION and FINDINGS are empty after
    cleaning are dropped and counted.

    Args:
        reports: the folder of OpenI report XMLs (``ecgen-radiology``), searched recursively.
        out: the output folder.
        images: the folder of OpenI PNGs, or ``None`` for a text-only datalist.
        split_seed: the split seed.
        on_error: ``"raise"`` or ``"skip"``.

    Returns:
        The content of ``prepare_report.json``.

    Raises:
        DatasetPreparationError: listing every problem found (nothing is written).
    """
    _check_on_error(on_error)
    reports, out = Path(reports), Path(out)
    image_folder = Path(images) if images is not None else None
    context = "prepare iu-xray"
    problems = ProblemLog(context)
    xml_files = sorted(reports.rglob("*.xml")) if reports.is_dir() else []
    if not reports.is_dir():
        problems.add(reports, "report folder not found", fatal=True)
    elif not xml_files:
        problems.add(reports, "no .xml report found", fatal=True)
    index = _index_files(image_folder, (".png",), problems) if image_folder is not None else {}

    parsed = {}
    report_files: dict[str, Path] = {}
    image_owner: dict[str, str] = {}
    for path in xml_files:
        try:
            report = parse_iu_report_xml(path)
        except ReportError as err:
            problems.add(path, err.reason, item=path.stem)
            continue
        if report.report_id in report_files:
            other = report_files[report.report_id].name
            problems.add(path, f"report id {report.report_id} also in {other}", item=report.report_id)
            continue
        report_files[report.report_id] = path
        for image_id in report.image_ids:
            if image_id in image_owner and image_owner[image_id] != report.report_id:
                other = image_owner[image_id]
                problems.add(path, f"image {image_id} also referenced by report {other}", item=report.report_id)
            image_owner.setdefault(image_id, report.report_id)
        parsed[report.report_id] = report
    skipped = problems.resolve(on_error)
    bad = problems.bad_items

    dropped: dict[str, dict[str, Any]] = defaultdict(lambda: {"reports": 0, "images": 0, "ids": []})
    kept_reports = {}
    for report_id, report in sorted(parsed.items()):
        if report_id in bad:
            continue
        text = clean_report_text(report.text())
        if not text:
            record = dropped["IMPRESSION and FINDINGS are empty after cleaning"]
            record["reports"] += 1
            record["images"] += len(report.image_ids)
            record["ids"].append(report_id)
            continue
        kept_reports[report_id] = (report, text)

    items: dict[str, dict[str, Any]] = {}
    item_reports: dict[str, str] = {}
    for report_id, (report, text) in kept_reports.items():
        base = {"report": text, "mesh": list(report.mesh_major)}
        if image_folder is None:
            items[report_id] = {"id": report_id, **base, "image_ids": list(report.image_ids)}
            item_reports[report_id] = report_id
            continue
        found = 0
        for image_id in report.image_ids:
            paths = index.get(image_id, [])
            if len(paths) != 1:
                reason = "image file not found" if not paths else "several image files with this name"
                dropped[reason]["images"] += 1
                dropped[reason]["ids"].append(image_id)
                continue
            found += 1
            items[image_id] = {
                "id": image_id,
                "image": datalist_path(paths[0], out),
                "report_id": report_id,
                **base,
            }
            item_reports[image_id] = report_id
        if not found:
            reason = "no image of the report found" if report.image_ids else "the report references no image"
            dropped[reason]["reports"] += 1
            dropped[reason]["ids"].append(report_id)
    for reason, record in sorted(dropped.items()):
        logger.info("dropped %d reports, %d images: %s", record["reports"], record["images"], reason)
    if not items:
        raise _nothing_left(context, "report" if image_folder is None else "image with a report")

    label_names = sorted({_mesh_heading(term) for item in items.values() for term in item["mesh"]} - {""})
    position = {name: index for index, name in enumerate(label_names)}
    for item in items.values():
        vector = [0] * len(label_names)
        for term in item["mesh"]:
            heading = _mesh_heading(term)
            if heading:
                vector[position[heading]] = 1
        item["labels"] = vector

    by_report = make_split({r: 0 for r in set(item_reports.values())}, split_seed, _IU_SPLIT_FRACTIONS, {})
    lists: dict[str, list[dict[str, Any]]] = {"training": [], "validation": [], "test": []}
    for item_id in sorted(items):
        lists[DATALIST_KEYS[by_report.split_of(item_reports[item_id])]].append(items[item_id])
    extra: dict[str, Any] = {
        "split": f"seeded 70/15/15 report split (seed {split_seed})",
        "label_names": label_names,
        "label_source": "MeSH major headings (text before the first '/')",
    }
    if image_folder is None:
        extra["text_only"] = True
    datalist = _datalist(
        lists,
        "IU X-ray (OpenI) image-report pairs" if image_folder is not None else "IU X-ray (OpenI) reports",
        "Chest radiograph reports (IMPRESSION then FINDINGS, cleaned) with their MeSH major terms.",
        reference="Demner-Fushman et al., Preparing a collection of radiology examinations for distribution "
        "and retrieval, JAMIA 2016 (OpenI)",
        licence="CC BY-NC-ND 4.0",
        **extra,
    )
    report = {
        "dataset": "iu-xray",
        "report_files": len(xml_files),
        "reports_kept": len(set(item_reports.values())),
        "items": len(items),
        "text_only": image_folder is None,
        "dropped": {reason: {**record, "ids": sorted(record["ids"])} for reason, record in dropped.items()},
        "split": extra["split"],
        "counts": {key: len(value) for key, value in lists.items()},
        "skipped_items": len(bad),
    }
    _write_outputs(out, {"datalist_pretrain.json": ("pretraining", datalist)}, report, skipped, on_error)
    return report


# ------------------------------------------------------------------------------------------ command line
def _views(value: str) -> tuple[str, ...] | None:
    if value.strip().lower() == "all":
        return None
    views = tuple(part.strip().upper() for part in value.split(",") if part.strip())
    if not views:
        raise argparse.ArgumentTypeError("give view positions such as PA,AP, or all")
    return views


def build_parser() -> argparse.ArgumentParser:
    """The ``python -m sista_monai.data.prepare`` argument parser."""
    parser = argparse.ArgumentParser(
        prog="python -m sista_monai.data.prepare",
        description="Turn a public chest X-ray dataset into MONAI datalists (see data/README.md).",
    )
    commands = parser.add_subparsers(dest="dataset", required=True, metavar="DATASET")

    def common(sub: argparse.ArgumentParser) -> None:
        sub.add_argument("--out", required=True, type=Path, help="output folder")
        sub.add_argument(
            "--on-error",
            choices=ON_ERROR,
            default="raise",
            help="raise: report every problem and write nothing (default); skip: drop bad items into skipped.json",
        )
        sub.add_argument("-v", "--verbose", action="store_true", help="log progress and counts")

    def split_options(sub: argparse.ArgumentParser) -> None:
        group = sub.add_mutually_exclusive_group()
        group.add_argument("--splits", type=Path, help="released split folder (default: the checkout's data/splits)")
        group.add_argument("--split-seed", type=int, help="draw a fresh stratified 70/15/15 split with this seed")

    rsna = commands.add_parser("rsna", help="RSNA Pneumonia: classification + detection datalists")
    rsna.add_argument("--labels", required=True, type=Path, help="stage_2_train_labels.csv[.zip|.gz]")
    rsna.add_argument("--images", required=True, type=Path, help="folder of <patientId>.dcm")
    split_options(rsna)
    common(rsna)

    siim = commands.add_parser("siim", help="SIIM-ACR Pneumothorax: segmentation datalist + masks")
    siim.add_argument("--rle", required=True, type=Path, help="train-rle.csv[.zip|.gz]")
    siim.add_argument("--images", required=True, type=Path, help="folder searched recursively for <ImageId>.dcm")
    siim.add_argument("--rle-format", choices=("auto", *RLE_FORMATS), default="auto", help="RLE start convention")
    split_options(siim)
    common(siim)

    mimic = commands.add_parser("mimic-cxr", help="MIMIC-CXR / MIMIC-CXR-JPG: pretraining datalist")
    mimic.add_argument("--root", required=True, type=Path, help="release folder holding files/pXX/...")
    mimic.add_argument("--reports", type=Path, help="folder holding files/pXX/pSUBJECT/sSTUDY.txt (default: --root)")
    mimic.add_argument("--metadata", type=Path, help="mimic-cxr-2.0.0-metadata.csv[.gz]")
    mimic.add_argument(
        "--split", type=Path, help="mimic-cxr-2.0.0-split.csv[.gz] (default: seeded 98/1/1 split by subject)"
    )
    mimic.add_argument("--chexpert", type=Path, help="mimic-cxr-2.0.0-chexpert.csv[.gz] for the labels vector")
    mimic.add_argument(
        "--views", type=_views, default=("PA", "AP"), help="ViewPosition values kept (default PA,AP; or 'all')"
    )
    mimic.add_argument("--uncertain", choices=("ones", "zeros"), default="ones", help="CheXpert -1 becomes 1 or 0")
    mimic.add_argument("--split-seed", type=int, default=0, help="seed of the subject split without --split")
    common(mimic)

    iu = commands.add_parser("iu-xray", help="IU X-ray (OpenI): pretraining datalist")
    iu.add_argument("--reports", required=True, type=Path, help="folder of report XMLs (ecgen-radiology)")
    iu.add_argument("--images", type=Path, help="folder of <image id>.png (omit for a text-only datalist)")
    iu.add_argument("--split-seed", type=int, default=0, help="seed of the 70/15/15 report split")
    common(iu)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Command line entry point; returns 2 (after printing every problem) when the inputs are unusable."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(message)s")
    try:
        if args.dataset == "rsna":
            report = prepare_rsna(
                args.labels,
                args.images,
                args.out,
                splits_dir=args.splits,
                split_seed=args.split_seed,
                on_error=args.on_error,
            )
        elif args.dataset == "siim":
            report = prepare_siim(
                args.rle,
                args.images,
                args.out,
                rle_format=args.rle_format,
                splits_dir=args.splits,
                split_seed=args.split_seed,
                on_error=args.on_error,
            )
        elif args.dataset == "mimic-cxr":
            report = prepare_mimic_cxr(
                args.root,
                args.out,
                reports=args.reports,
                metadata=args.metadata,
                split=args.split,
                chexpert=args.chexpert,
                views=args.views,
                uncertain=args.uncertain,
                split_seed=args.split_seed,
                on_error=args.on_error,
            )
        else:
            report = prepare_iu_xray(
                args.reports, args.out, images=args.images, split_seed=args.split_seed, on_error=args.on_error
            )
    except SistaDataError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"{args.dataset}: wrote {', '.join(report['files'])} to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
