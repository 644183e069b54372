"""Pre-flight check of a bundle's datalists: every bad item is found before training and reported at once.

Hospitals feed the bundles whatever their archives hold. Without a check, the first unreadable file stops a
run in the middle of an epoch (or, in the test split, after days of training) with one file named. Every
training bundle therefore passes its split datalists through :func:`check_items` before it builds a dataset:

* each image is decoded with the project's loader (:func:`~sista_monai.transforms.read_chest_xray`): missing,
  empty, truncated or random files, DICOM without pixel data, colour or multi-frame DICOM, a transfer syntax
  without an installed decoder, implausible size headers and malformed header values are all caught;
* each mask (segmentation) is decoded and must be one channel of 0/1 values with the image's rows and columns;
* each report (pretraining) goes through the same section extraction and cleaning as the training pipeline
  (empty, only de-identification masks, undecodable bytes, unreadable file); reports longer than
  ``max_length`` tokens are counted and the count is logged (they are truncated in training, not an error);
* across items: an id used twice (within a split or in two splits), the same image file in two items, and
  one patient in two splits (the patient is read from the item's ``patient_id`` or ``subject_id``, never
  written to a message or a log).

What happens then is the user's choice, through one config key of every bundle, ``skip_bad_items``:

* ``false`` (default): the run stops before training with one :class:`BadItemsError` whose message lists
  every bad item (split, position, id, file and reason);
* ``true``: the bad items are left out, the run trains on the rest, and every skipped item with its reason is
  written to ``skipped_file`` (the bundles use ``<output_dir>/eval/skipped_items.json``). That file is also
  written (with an empty list) when nothing was bad, so it always describes the current run.

For a duplicated id or a patient in two splits, the occurrence in the later split is kept (test before
validation before training, so that a released test split stays fixed); within one split the first is kept.

Cost: one full decode per image and mask on the first run (about 2 ms for a 256-pixel demo DICOM, 18 ms for a
1024x1024 RSNA JPEG DICOM on one core: the 600 demo studies take about 3 s, the 26,684 RSNA images about
8 minutes on one core, spread over ``workers`` threads), one section parse per report and one batched
tokenisation of the reports. Results are remembered in ``<cache_dir>/preflight_checks.json`` keyed by each
file's path, size and modification time (and each report's SHA-256), and invalidated when this check, pydicom
or the set of installed pixel decoders changes; a re-run costs one ``stat`` per file (under a second for
RSNA). Messages and the record name items by id and file path only: no header value, no patient identifier
and no report text.

This module runs the checks, finds the problems across items and writes the record; the files are decoded and
remembered in :mod:`.file_checks`, the reports read in :mod:`.report_checks`.
"""

from __future__ import annotations

import logging
import os
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from sista_monai.config import as_flag
from sista_monai.distributed import is_main_process
from sista_monai.errors import BadItemsError
from sista_monai.transforms.sections import DEFAULT_SECTION_ORDER

from .datalist import write_json_atomic
from .file_checks import CHECK_VERSION, MEMO_FILE, _check_files, _Memo, _paths, _read_image, _read_mask
from .report_checks import _report_file, _Reports

__all__ = ["CHECK_VERSION", "MEMO_FILE", "BadItem", "BadItemsError", "check_items"]

logger = logging.getLogger(__name__)

_SINGLE = "items"
_Problem = tuple[int, int, str, str | None]
"""A problem before it becomes a :class:`BadItem`: (split position, item index, reason, file)."""


@dataclass(frozen=True)
class BadItem:
    """One problem found in one datalist item.

    Attributes:
        split: the datalist split (``"training"``, ``"validation"``, ``"test"``).
        index: the 0-based position of the item in the split as given to :func:`check_items`.
        item: the item's id (its first image path when it has no id).
        reason: a short, PHI-free explanation.
        file: the file the problem is about, when there is one.
    """

    split: str
    index: int
    item: str
    reason: str
    file: str | None = None

    def __str__(self) -> str:
        where = f"{self.split}[{self.index}] {self.item}"
        if self.file is not None:
            where = f"{where} ({self.file})"
        return f"{where}: {self.reason}"

    def to_record(self) -> dict[str, Any]:
        """The JSON record of the problem (``skipped_items.json``)."""
        record: dict[str, Any] = {"split": self.split, "index": self.index, "id": self.item, "reason": self.reason}
        if self.file is not None:
            record["file"] = self.file
        return record


def _keeper(positions: Sequence[tuple[int, int]]) -> tuple[int, int]:
    """The occurrence kept: the first one in the latest split."""
    latest = max(split for split, _ in positions)
    return min((split, index) for split, index in positions if split == latest)


def check_items(
    splits: Mapping[str, Sequence[Mapping[str, Any]]] | Sequence[Mapping[str, Any]],
    *,
    image_keys: str | Sequence[str] = ("image",),
    mask_keys: str | Sequence[str] = (),
    report_key: str | None = None,
    report_parser: str = "auto",
    report_sections: Sequence[str] = DEFAULT_SECTION_ORDER,
    tokenizer: Any = None,
    max_length: int | None = None,
    id_key: str = "id",
    patient_keys: Sequence[str] = ("patient_id", "subject_id"),
    skip: bool | str = False,
    skipped_file: str | os.PathLike | None = None,
    cache_dir: str | os.PathLike | None = None,
    workers: int | None = None,
    source: object = "datalist",
    skip_option: str = "skip_bad_items",
) -> dict[str, list[dict[str, Any]]] | list[dict[str, Any]]:
    """Check every item of a bundle's datalists before training (see the module docstring).

    Args:
        splits: the items of each split (``{"training": [...], "validation": [...], "test": [...]}``, with
            paths as the dataset will open them), or one list of items.
        image_keys: item keys holding radiograph paths (decoded with the project's loader).
        mask_keys: item keys holding segmentation mask paths (PNG; 0/1, the image's size).
        report_key: the item key holding the report (text, bytes or a ``.txt``/``.xml`` path), when the
            bundle reads reports.
        report_parser: the pipeline's :class:`~sista_monai.transforms.ExtractReportSections` parser.
        report_sections: the sections the pipeline composes.
        tokenizer: the pipeline's tokenizer (folder, hub id or the loaded object), to count reports longer than
            ``max_length``.
        max_length: the pipeline's token length.
        id_key: the key of an item's id.
        patient_keys: keys that may name an item's patient (the first present is used).
        skip: ``False`` raises on any bad item; ``True`` leaves bad items out (``"true"``/``"false"`` accepted).
        skipped_file: where the record of the check is written (JSON) when the run goes on.
        cache_dir: where per-file results are remembered between runs (``None``: not remembered).
        workers: threads decoding files; ``None`` uses up to 8, one per CPU.
        source: how the error names the datalist (its path).
        skip_option: the config key named in the error as the way to skip bad items.

    Returns:
        The items of each split without the bad ones (all of them when nothing is bad), in the shape of
        ``splits``.

    Raises:
        BadItemsError: listing every bad item, when ``skip`` is false and some item is bad, or when skipping
            would leave a split that had items empty.
    """
    skip = as_flag(skip, skip_option)
    single = not isinstance(splits, Mapping)
    named: dict[str, list[Any]] = (
        {_SINGLE: list(splits)}
        if single
        else {name: list(items) for name, items in cast(Mapping[str, Sequence[Mapping[str, Any]]], splits).items()}
    )
    image_keys = [image_keys] if isinstance(image_keys, str) else list(image_keys)
    mask_keys = [mask_keys] if isinstance(mask_keys, str) else list(mask_keys)
    workers = min(8, os.cpu_count() or 1) if workers is None else int(workers)
    names = list(named)
    entries = [(s, i, item) for s, name in enumerate(names) for i, item in enumerate(named[name])]
    checked = len(entries)

    memo = _Memo(cache_dir)
    problems = _file_problems(entries, image_keys, mask_keys, memo, workers)
    truncated = None
    if report_key is not None:
        reports = _Reports(report_parser, report_sections, tokenizer, max_length, memo)
        report_problems, truncated = _report_problems(entries, report_key, reports, id_key, image_keys)
        problems += report_problems
    memo.save()
    problems += _duplicate_problems(entries, names, id_key, image_keys)
    problems += _patient_problems(entries, names, patient_keys)

    bad = {(s, i) for s, i, _, _ in problems}
    records = sorted(
        (BadItem(names[s], i, _item_label(named[names[s]][i], id_key, image_keys), reason, file)
         for s, i, reason, file in problems),
        key=lambda record: (names.index(record.split), record.index),
    )  # fmt: skip
    kept = {name: [item for i, item in enumerate(named[name]) if (s, i) not in bad] for s, name in enumerate(names)}
    if records and not skip:
        error = BadItemsError(source, records, checked, skip_option, skipped_file)
        logger.error("pre-flight check of %s: %s", source, error.reason)
        raise error
    emptied = [name for name in names if named[name] and not kept[name]]
    if emptied:
        raise BadItemsError(
            source,
            f"every item of {', '.join(emptied)} is bad; nothing left to train or evaluate on:\n"
            + "\n".join(f"  - {record}" for record in records),
            checked,
            skip_option,
            skipped_file,
        )
    if records:
        logger.warning(
            "pre-flight check of %s: skipping %d of %d items (%d problems)%s",
            source,
            len(bad),
            checked,
            len(records),
            f"; listed in {skipped_file}" if skipped_file is not None else "",
        )
        for record in records:
            logger.warning("  skipped %s", record)
    else:
        logger.info("pre-flight check of %s: all %d items are usable", source, checked)
    if skipped_file is not None and is_main_process():
        _write_record(skipped_file, source, skip, checked, kept, len(bad), truncated, max_length, records)
    return kept[_SINGLE] if single else kept


def _item_label(item: Mapping[str, Any], id_key: str, image_keys: Sequence[str]) -> str:
    """How messages name an item: its id, else its first image path."""
    if item.get(id_key) is not None:
        return str(item[id_key])
    for key in image_keys:
        paths = _paths(item.get(key))
        if paths:
            return paths[0]
    return "<item without id>"


def _file_problems(
    entries: Sequence[tuple[int, int, Mapping[str, Any]]],
    image_keys: Sequence[str],
    mask_keys: Sequence[str],
    memo: _Memo,
    workers: int,
) -> list[_Problem]:
    """Unreadable images and masks, and masks whose size is not their image's."""
    problems: list[_Problem] = []
    shapes: dict[tuple[int, int], tuple[int, int]] = {}
    kinds = ((image_keys, "images", _read_image, "file"), (mask_keys, "masks", _read_mask, "mask"))
    for keys, table, reader, what in kinds:
        paths = {(s, i): {key: _paths(item.get(key)) for key in keys} for s, i, item in entries}
        every = [path for by_key in paths.values() for values in by_key.values() for path in values or []]
        results = _check_files(every, table, reader, memo, workers)
        for (s, i), by_key in paths.items():
            for key, values in by_key.items():
                if values is None:
                    problems.append((s, i, f"no {key!r} {what} path in the item", None))
                    continue
                for path in values:
                    reason, rows, columns = results[path]
                    if reason is not None:
                        problems.append((s, i, reason, path))
                    elif table == "images":
                        shapes.setdefault((s, i), (rows, columns))
                    elif (s, i) in shapes and shapes[(s, i)] != (rows, columns):
                        image_rows, image_columns = shapes[(s, i)]
                        reason = f"the mask is {rows}x{columns} but the image is {image_rows}x{image_columns}"
                        problems.append((s, i, reason, path))
    return problems


def _report_problems(
    entries: Sequence[tuple[int, int, Mapping[str, Any]]],
    report_key: str,
    reports: _Reports,
    id_key: str,
    image_keys: Sequence[str],
) -> tuple[list[_Problem], int | None]:
    """Unusable reports, and how many usable ones the tokenizer will truncate (``None`` without a tokenizer)."""
    problems: list[_Problem] = [
        (s, i, f"no {report_key!r} in the item", None) for s, i, item in entries if item.get(report_key) is None
    ]
    with_report = [(s, i, item) for s, i, item in entries if item.get(report_key) is not None]
    results = reports.check([(_item_label(item, id_key, image_keys), item[report_key]) for _, _, item in with_report])
    for (s, i, item), (reason, _) in zip(with_report, results, strict=True):
        if reason is not None:
            problems.append((s, i, reason, _report_file(item[report_key])))
    if reports.tokenizer is None:
        return problems, None
    counts = [tokens for reason, tokens in results if reason is None and tokens is not None]
    truncated = sum(tokens > int(cast(int, reports.max_length)) for tokens in counts)
    if truncated:
        logger.info(
            "pre-flight: %d of %d reports are longer than max_length=%d tokens and will be truncated (not an error)",
            truncated,
            len(counts),
            int(cast(int, reports.max_length)),
        )
    return problems, truncated


def _write_record(
    path: str | os.PathLike,
    source: object,
    skip: bool,
    checked: int,
    kept: Mapping[str, list[Any]],
    skipped: int,
    truncated: int | None,
    max_length: int | None,
    records: Sequence[BadItem],
) -> None:
    """Write ``skipped_items.json``: what was checked, kept and skipped (with reasons), and truncations."""
    destination = Path(path)
    destination.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(
        destination,
        {
            "source": str(source),
            "skip_bad_items": skip,
            "checked_items": checked,
            "kept_items": {name: len(items) for name, items in kept.items()},
            "skipped_items": skipped,
            "reports_truncated": truncated,
            "max_length": int(cast(int, max_length)) if truncated is not None else None,
            "skipped": [record.to_record() for record in records],
        },
    )


def _duplicate_problems(
    entries: Sequence[tuple[int, int, Mapping[str, Any]]],
    names: Sequence[str],
    id_key: str,
    image_keys: Sequence[str],
) -> list[_Problem]:
    """Items whose id, or whose image file, another item already has (see the module docstring)."""
    problems: list[_Problem] = []
    by_id: dict[str, list[tuple[int, int]]] = defaultdict(list)
    by_image: dict[str, list[tuple[int, int]]] = defaultdict(list)
    for s, i, item in entries:
        if item.get(id_key) is not None:
            by_id[str(item[id_key])].append((s, i))
        paths = _paths(item.get(image_keys[0])) if image_keys else None
        if paths:
            by_image[os.path.abspath(paths[0])].append((s, i))
    flagged: set[tuple[tuple[int, int], tuple[int, int]]] = set()
    for item_id, positions in by_id.items():
        if len(positions) < 2:
            continue
        keep = _keeper(positions)
        for position in positions:
            if position == keep:
                continue
            flagged.add((position, keep))
            where = f"{names[keep[0]]}[{keep[1]}]"
            if position[0] == keep[0]:
                reason = f"duplicate id {item_id!r}: {where} has it too (the first is kept)"
            else:
                reason = (
                    f"id {item_id!r} is also in {where}: an item may be in one split only (kept in {names[keep[0]]})"
                )
            problems.append((*position, reason, None))
    for path, positions in by_image.items():
        if len(positions) < 2:
            continue
        keep = _keeper(positions)
        for position in positions:
            if position == keep or (position, keep) in flagged:
                continue
            problems.append((*position, f"the same image file as {names[keep[0]]}[{keep[1]}]", path))
    return problems


def _patient_problems(
    entries: Sequence[tuple[int, int, Mapping[str, Any]]],
    names: Sequence[str],
    patient_keys: Sequence[str],
) -> list[_Problem]:
    """Items of a patient who also has items in a later split (the patient's value is never reported)."""
    by_patient: dict[str, list[tuple[int, int]]] = defaultdict(list)
    for s, i, item in entries:
        for key in patient_keys:
            value = item.get(key)
            if value is not None and str(value).strip():
                by_patient[str(value).strip()].append((s, i))
                break
    problems: list[_Problem] = []
    for positions in by_patient.values():
        splits = {s for s, _ in positions}
        if len(splits) < 2:
            continue
        latest = max(splits)
        kept = [index for s, index in positions if s == latest]
        shown = ", ".join(f"{names[latest]}[{index}]" for index in kept[:3]) + (" ..." if len(kept) > 3 else "")
        for s, i in positions:
            if s != latest:
                problems.append(
                    (
                        s,
                        i,
                        f"its patient also has items in {names[latest]} ({shown}): a patient may be in one "
                        f"split only (kept in {names[latest]})",
                        None,
                    )
                )
    return problems
