"""MIMIC-CXR (DICOM) and MIMIC-CXR-JPG: the pretraining datalist of frontal images with their reports.

``python -m sista_monai.data.prepare mimic-cxr --root mimic-cxr-jpg/2.1.0 ... --out data/mimic`` (see
``data/README.md``). Reports are sectioned and cleaned with the project's report transforms
(:func:`~sista_monai.transforms.parse_mimic_report`, :func:`~sista_monai.transforms.clean_report_text`), so
the datalist holds the text the pretraining pipeline would compose.
"""

from __future__ import annotations

import logging
import os
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sista_monai.errors import ReportError
from sista_monai.transforms.cleaning import clean_report_text
from sista_monai.transforms.sections import compose_report_text, decode_report_bytes, parse_mimic_report

from ..datalist import ProblemLog, datalist_path
from ..splits import DATALIST_KEYS, make_split
from .common import build_datalist, check_on_error, dicom_header, find_file, index_files, nothing_left, write_outputs
from .tables import read_csv_table, repeat_reason, width_problem

__all__ = ["MIMIC_SPLIT_NAMES", "prepare_mimic_cxr"]

logger = logging.getLogger(__name__)

MIMIC_SPLIT_NAMES: dict[str, str] = {"train": "training", "validate": "validation", "test": "test"}
"""Values of the official ``split`` column -> datalist key."""

_CHEXPERT_VALUES: dict[str, int | None] = {"1.0": 1, "1": 1, "0.0": 0, "0": 0, "-1.0": -1, "-1": -1, "": None}
_PRETRAIN_SPLIT_FRACTIONS = ("0.98", "0.01", "0.01")
_MIMIC_IMAGE_SUFFIXES = (".dcm", ".jpg", ".jpeg", ".png")


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
        reason = width_problem(table, fields)
        if reason is None and not dicom_id:
            reason = "malformed row: empty dicom_id"
        if reason is None and not (values[1].isdigit() and values[2].isdigit()):
            reason = "malformed row: subject_id and study_id must be integers"
        if reason is None and dicom_id in seen:
            first, first_values = seen[dicom_id]
            reason = repeat_reason(first, first_values == values, "dicom_id")
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
            header = dicom_header(path, ["ViewPosition"])
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
        reason = width_problem(table, fields)
        if reason is None and not dicom_id:
            reason = "malformed row: empty dicom_id"
        if reason is None and value not in MIMIC_SPLIT_NAMES:
            reason = f"malformed row: split must be one of {', '.join(MIMIC_SPLIT_NAMES)}"
        if reason is None and dicom_id in splits:
            first, first_row = splits[dicom_id]
            reason = repeat_reason(first_row, first == value, "dicom_id")
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
        reason = width_problem(table, fields)
        if reason is None and not (subject.isdigit() and study.isdigit()):
            reason = "malformed row: subject_id and study_id must be integers"
        bad = [name for name, value in zip(names, values, strict=True) if value not in _CHEXPERT_VALUES]
        if reason is None and bad:
            reason = f"malformed row: {', '.join(bad)} must be 1, 0, -1 or blank"
        key = (subject, study)
        if reason is None and key in first_rows:
            first, first_values = first_rows[key]
            reason = repeat_reason(first, first_values == values, "study")
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
    check_on_error(on_error)
    if uncertain not in ("ones", "zeros"):
        raise ValueError(f"uncertain must be 'ones' or 'zeros', got {uncertain!r}")
    root, out = Path(root), Path(out)
    reports_files = _files_dir(Path(reports) if reports is not None else root)
    kept_views = tuple(view.upper() for view in views) if views is not None else None
    context = "prepare mimic-cxr"
    problems = ProblemLog(context)
    files = _files_dir(root)
    index = index_files(files, _MIMIC_IMAGE_SUFFIXES, problems)

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
            image.path = find_file(
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
        assert image.path is not None  # usable images have their file
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
        raise nothing_left(context, "image with a report")

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
        split_of_subject = by_subject.assignment()
        assignment = {d: DATALIST_KEYS[split_of_subject[s]] for d, s in subjects.items()}
        split_source = f"seeded 98/1/1 subject split (seed {split_seed})"
    lists: dict[str, list[dict[str, Any]]] = {"training": [], "validation": [], "test": []}
    for dicom_id in sorted(items):
        lists[assignment[dicom_id]].append(items[dicom_id])

    extra: dict[str, Any] = {"split": split_source, "views": list(kept_views) if kept_views else "all"}
    if chexpert is not None:
        extra["label_names"] = label_names
        extra["label_mapping"] = {"1": 1, "0": 0, "blank": 0, "-1": 1 if uncertain == "ones" else 0}
    datalist = build_datalist(
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
    write_outputs(out, {"datalist_pretrain.json": ("pretraining", datalist)}, report, skipped, on_error)
    return report
