"""Steps shared by the dataset preparations: finding image files, choosing the split, assembling and writing.

Every ``prepare_<dataset>`` function collects problems in a :class:`~sista_monai.data.datalist.ProblemLog`,
splits with :mod:`sista_monai.data.splits` (the released split restricted to the ids given, or a fresh seeded
split), validates its datalists and writes them with ``prepare_report.json`` and ``skipped.json`` through a
staging folder (:func:`write_outputs`), so a failure never leaves a half-written output.
"""

from __future__ import annotations

import logging
import os
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pydicom

from sista_monai.io.files import StagedFolder

from ..datalist import (
    FRACTION_KEYS,
    DatasetPreparationError,
    ProblemLog,
    check_datalist,
    write_json_atomic,
)
from ..splits import DATALIST_KEYS, SPLIT_FILES, DatasetSplit, SplitError, load_split, make_split

__all__ = [
    "ON_ERROR",
    "DICOM_SUFFIXES",
    "index_files",
    "find_file",
    "dicom_header",
    "dicom_shape",
    "released_split",
    "choose_split",
    "split_lists",
    "split_counts",
    "build_datalist",
    "with_fraction_files",
    "write_outputs",
    "check_on_error",
    "nothing_left",
    "optional_path",
]

logger = logging.getLogger(__name__)

ON_ERROR: tuple[str, ...] = ("raise", "skip")
"""What preparation does with bad items: report them all and write nothing, or drop them (``skipped.json``)."""
DICOM_SUFFIXES = (".dcm",)
_FRACTION_FILE_SUFFIX = {"training_1": "1pct", "training_10": "10pct"}


def index_files(folder: Path, suffixes: Sequence[str], problems: ProblemLog) -> dict[str, list[Path]]:
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


def find_file(
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


def dicom_header(path: Path, tags: Sequence[str]) -> pydicom.Dataset | str:
    """The DICOM header of ``path`` (no pixel data), or the reason it cannot be read."""
    try:
        return pydicom.dcmread(path, stop_before_pixels=True, force=True, specific_tags=list(tags))
    except Exception as err:  # pydicom raises many types for damaged files; all become a reported problem
        return f"cannot read the DICOM header ({type(err).__name__})"


def dicom_shape(path: Path) -> tuple[int, int] | str:
    """``(Rows, Columns)`` from the DICOM header, or the reason they are unavailable."""
    header = dicom_header(path, ["Rows", "Columns"])
    if isinstance(header, str):
        return header
    rows, columns = header.get("Rows"), header.get("Columns")
    if not isinstance(rows, int) or not isinstance(columns, int) or rows <= 0 or columns <= 0:
        return "the DICOM header has no valid Rows and Columns"
    return rows, columns


# ------------------------------------------------------------------------------------------ splitting
def released_split(
    dataset: str, rows: Mapping[str, int], splits_dir: Path | None, problems: ProblemLog, source: str
) -> DatasetSplit | None:
    """The released split of ``dataset``; records every id of ``rows`` (id -> first CSV row) it lacks."""
    try:
        released = load_split(dataset, splits_dir)
    except SplitError as err:
        problems.add(err.source, f"{err.reason} (give --splits DIR, or --split-seed N for a fresh split)", fatal=True)
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


def choose_split(
    released: DatasetSplit | None, strata: Mapping[str, int], split_seed: int | None, dataset: str
) -> DatasetSplit:
    """The released split restricted to ``strata``'s ids, or a fresh seeded split of them."""
    if split_seed is not None:
        return make_split(strata, split_seed, source=f"seeded split (seed {split_seed}) of the {dataset} ids given")
    assert released is not None
    return released.restrict(strata)


def split_lists(items: Mapping[str, dict[str, Any]], split: DatasetSplit) -> dict[str, list[dict[str, Any]]]:
    """Datalist lists (training, validation, test and label fractions) of ``items``, sorted by id."""
    return {
        DATALIST_KEYS[name]: [items[item_id] for item_id in sorted(split[name]) if item_id in items]
        for name in SPLIT_FILES
        if name in split.subsets
    }


def split_counts(lists: Mapping[str, list[dict[str, Any]]], positive: Callable[[dict[str, Any]], bool]) -> dict:
    return {key: {"items": len(items), "positives": sum(map(positive, items))} for key, items in lists.items()}


# --------------------------------------------------------------------------------------------- writing
def build_datalist(
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


def with_fraction_files(stem: str, task: str, datalist: dict[str, Any]) -> dict[str, tuple[str, dict[str, Any]]]:
    """The datalist and one datalist per label fraction whose ``training`` is that fraction."""
    files = {f"{stem}.json": (task, datalist)}
    base = {key: value for key, value in datalist.items() if key not in FRACTION_KEYS}
    for key, suffix in _FRACTION_FILE_SUFFIX.items():
        if key in datalist:
            subset = datalist[key]
            fraction = {**base, "training": subset, "numTraining": len(subset), "label_fraction": FRACTION_KEYS[key]}
            files[f"{stem}_{suffix}.json"] = (task, fraction)
    return files


def write_outputs(
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
    with StagedFolder(out, merge=True) as staging:
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


def check_on_error(on_error: str) -> None:
    if on_error not in ON_ERROR:
        raise ValueError(f"on_error must be one of {ON_ERROR}, got {on_error!r}")


def nothing_left(context: str, what: str) -> DatasetPreparationError:
    return DatasetPreparationError(context, f"no usable {what} left; nothing was written")


def optional_path(path: str | os.PathLike | None) -> Path | None:
    return Path(path) if path is not None else None
