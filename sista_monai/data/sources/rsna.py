"""RSNA Pneumonia Detection Challenge: classification and detection datalists from ONE patient-level split.

``python -m sista_monai.data.prepare rsna --labels stage_2_train_labels.csv --images stage_2_train_images
--out data/rsna`` (see ``data/README.md``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from sista_monai.io.files import sha256_file

from ..datalist import ProblemLog, datalist_path
from .common import (
    DICOM_SUFFIXES,
    build_datalist,
    check_on_error,
    choose_split,
    find_file,
    index_files,
    nothing_left,
    optional_path,
    released_split,
    split_counts,
    split_lists,
    with_fraction_files,
    write_outputs,
)
from .kaggle import read_rsna_labels

__all__ = ["prepare_rsna"]


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
    check_on_error(on_error)
    labels, images, out = Path(labels), Path(images), Path(out)
    context = "prepare rsna"
    problems = ProblemLog(context)
    patients = read_rsna_labels(labels, problems)
    index = index_files(images, DICOM_SUFFIXES, problems)
    image_paths: dict[str, Path] = {}
    if images.is_dir():
        for patient_id, record in sorted(patients.items()):
            path = find_file(index, patient_id, f"{patient_id}.dcm", images, problems, labels, row=record.rows[0])
            if path is not None:
                image_paths[patient_id] = path
    released = None
    if split_seed is None:
        first_rows = {patient_id: record.rows[0] for patient_id, record in patients.items()}
        released = released_split("rsna", first_rows, optional_path(splits_dir), problems, str(labels))
    skipped = problems.resolve(on_error)
    kept = {p: patients[p] for p in sorted(patients) if p not in problems.bad_items}
    if not kept:
        raise nothing_left(context, "patient")
    split = choose_split(released, {p: r.target for p, r in kept.items()}, split_seed, "rsna")

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
    classification_lists = split_lists(classification, split)
    detection_lists = split_lists(detection, split)
    common = {
        "reference": "RSNA Pneumonia Detection Challenge (Kaggle, 2018), stage 2 training labels",
        "licence": "Kaggle competition rules: see data/README.md",
        "split": split.source,
    }
    datalists = {
        **with_fraction_files(
            "datalist_classification",
            "classification",
            build_datalist(
                classification_lists,
                "RSNA Pneumonia classification",
                "Pneumonia-like lung opacity (Target) present (1) or absent (0), one item per patient.",
                labels={"0": "no opacity", "1": "Lung Opacity"},
                **common,
            ),
        ),
        **with_fraction_files(
            "datalist_detection",
            "detection",
            build_datalist(
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
        "counts": split_counts(classification_lists, lambda item: item["label"] == 1),
        "skipped_items": len(problems.bad_items),
    }
    write_outputs(out, datalists, report, skipped, on_error)
    return report
