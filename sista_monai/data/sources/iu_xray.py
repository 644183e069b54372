"""Indiana University chest X-rays (OpenI): the pretraining datalist (or a text-only one) from the report XMLs.

``python -m sista_monai.data.prepare iu-xray --reports ecgen-radiology [--images png] --out data/iu_xray``
(see ``data/README.md``). Reports are parsed and cleaned with the project's report transforms
(:func:`~sista_monai.transforms.parse_iu_report_xml`, :func:`~sista_monai.transforms.clean_report_text`).
"""

from __future__ import annotations

import logging
import os
from collections import defaultdict
from pathlib import Path
from typing import Any

from sista_monai.errors import ReportError
from sista_monai.transforms.cleaning import clean_report_text
from sista_monai.transforms.sections import parse_iu_report_xml

from ..datalist import ProblemLog, datalist_path
from ..splits import DATALIST_KEYS, make_split
from .common import build_datalist, check_on_error, index_files, nothing_left, write_outputs

__all__ = ["prepare_iu_xray"]

logger = logging.getLogger(__name__)

_IU_SPLIT_FRACTIONS = ("0.70", "0.15", "0.15")


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
    check_on_error(on_error)
    reports, out = Path(reports), Path(out)
    image_folder = Path(images) if images is not None else None
    context = "prepare iu-xray"
    problems = ProblemLog(context)
    xml_files = sorted(reports.rglob("*.xml")) if reports.is_dir() else []
    if not reports.is_dir():
        problems.add(reports, "report folder not found", fatal=True)
    elif not xml_files:
        problems.add(reports, "no .xml report found", fatal=True)
    index = index_files(image_folder, (".png",), problems) if image_folder is not None else {}

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
        raise nothing_left(context, "report" if image_folder is None else "image with a report")

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
    split_of_report = by_report.assignment()
    lists: dict[str, list[dict[str, Any]]] = {"training": [], "validation": [], "test": []}
    for item_id in sorted(items):
        lists[DATALIST_KEYS[split_of_report[item_reports[item_id]]]].append(items[item_id])
    extra: dict[str, Any] = {
        "split": f"seeded 70/15/15 report split (seed {split_seed})",
        "label_names": label_names,
        "label_source": "MeSH major headings (text before the first '/')",
    }
    if image_folder is None:
        extra["text_only"] = True
    datalist = build_datalist(
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
    write_outputs(out, {"datalist_pretrain.json": ("pretraining", datalist)}, report, skipped, on_error)
    return report
