"""The Kaggle label files: RSNA Pneumonia ``stage_2_train_labels.csv`` and SIIM-ACR ``train-rle.csv``.

Both readers check every row and record each problem (file, 1-based row, item) in a
:class:`~sista_monai.data.datalist.ProblemLog` instead of stopping at the first one. They are used by the
``rsna`` and ``siim`` preparations (:mod:`.rsna`, :mod:`.siim`) and by the released-split generator
(:func:`sista_monai.data.splits.generate_released_splits`).
"""

from __future__ import annotations

import math
import os
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field

from ..datalist import ProblemLog
from ..rle import RLEError, RunLengths, parse_rle
from .tables import format_rows, read_csv_table, width_problem

__all__ = ["RSNA_COLUMNS", "SIIM_COLUMNS", "RsnaPatient", "SiimImage", "read_rsna_labels", "read_siim_rle"]

RSNA_COLUMNS: tuple[str, ...] = ("patientId", "x", "y", "width", "height", "Target")
SIIM_COLUMNS: tuple[str, ...] = ("ImageId", "EncodedPixels")


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
        reason = width_problem(table, fields)
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
                f"contradictory rows for one patient: Target 0 in row(s) {format_rows(by_target[0])} but Target 1 in "
                f"row(s) {format_rows(by_target[1])}",
                row=max(by_target[0][0], by_target[1][0]),
                item=patient_id,
            )
    return patients


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
        reason = width_problem(table, fields)
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
                f"contradictory rows for one image: -1 (empty) in row(s) {format_rows(record.empty_rows)} but a mask in "
                f"row(s) {format_rows([row for row, _ in record.encodings])}",
                row=max(record.empty_rows[0], record.encodings[0][0]),
                item=image_id,
            )
    return images
