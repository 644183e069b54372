"""SIIM-ACR Pneumothorax Segmentation: the segmentation datalist and its masks, split by ImageId.

``python -m sista_monai.data.prepare siim --rle train-rle.csv --images dicom-images-train --out data/siim``
(see ``data/README.md``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from sista_monai.io.files import sha256_file

from ..datalist import ProblemLog, datalist_path
from ..rle import RLE_FORMATS, RLEError, absolute_runs, decode_runs, detect_rle_format
from .common import (
    DICOM_SUFFIXES,
    build_datalist,
    check_on_error,
    choose_split,
    dicom_shape,
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
from .kaggle import read_siim_rle

__all__ = ["prepare_siim"]


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
    check_on_error(on_error)
    if rle_format not in ("auto", *RLE_FORMATS):
        raise ValueError(f"rle_format must be 'auto' or one of {RLE_FORMATS}, got {rle_format!r}")
    rle, images, out = Path(rle), Path(images), Path(out)
    context = "prepare siim"
    problems = ProblemLog(context)
    records = read_siim_rle(rle, problems)
    index = index_files(images, DICOM_SUFFIXES, problems)
    image_paths: dict[str, Path] = {}
    shapes: dict[str, tuple[int, int]] = {}
    if images.is_dir():
        for image_id, record in sorted(records.items()):
            path = find_file(index, image_id, f"{image_id}.dcm", images, problems, rle, row=record.rows[0])
            if path is None:
                continue
            image_paths[image_id] = path
            shape = dicom_shape(path)
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
        released = released_split("siim", first_rows, optional_path(splits_dir), problems, str(rle))
    skipped = problems.resolve(on_error)
    kept = {i: records[i] for i in sorted(records) if i not in problems.bad_items}
    if not kept:
        raise nothing_left(context, "image")
    split = choose_split(released, {i: int(r.positive) for i, r in kept.items()}, split_seed, "siim")

    items = {i: {"id": i, "image": datalist_path(image_paths[i], out), "mask": f"masks/{i}.png"} for i in kept}
    lists = split_lists(items, split)
    areas: dict[str, int] = {}

    def write_masks(staging: Path) -> None:
        folder = staging / "masks"
        folder.mkdir()
        for image_id in kept:
            starts, lengths = runs_by_image[image_id]
            mask = decode_runs(starts, lengths, shapes[image_id])
            areas[image_id] = int(mask.sum())
            Image.fromarray(mask).save(folder / f"{image_id}.png", format="PNG")

    datalists = with_fraction_files(
        "datalist_segmentation",
        "segmentation",
        build_datalist(
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
        "counts": split_counts(lists, lambda item: kept[item["id"]].positive),
        "skipped_items": len(problems.bad_items),
    }
    write_outputs(out, datalists, report, skipped, on_error, write_masks)
    return report
