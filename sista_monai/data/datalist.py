"""Shared helpers for datalists: the schemas, their validation, problem collection and atomic writing.

A *datalist* is a MONAI decathlon-style JSON object ``{"training": [...], "validation": [...], "test": [...],
...}`` readable by :func:`monai.data.load_decathlon_datalist`. Four item schemas exist (:data:`TASKS`):

* ``classification``: ``{"id", "image", "label": 0|1}``;
* ``detection``: ``{"id", "image", "boxes": [[x, y, w, h], ...], "labels": [0, ...]}`` with the top-level
  ``"box_mode": "xywh"``; boxes in DICOM pixels (``x`` = column, ``y`` = row); negatives have empty lists;
* ``segmentation``: ``{"id", "image", "mask"}``; the mask is a single-channel ``uint8`` PNG of 0/1 in the
  DICOM's ``(rows, cols)`` orientation;
* ``pretraining``: ``{"id", "image", "report", "labels"?}`` with the top-level ``"label_names"`` when items
  carry ``labels``; a text-only datalist (top-level ``"text_only": true``) has no ``image``.

Downstream datalists may also hold the nested label-fraction subsets ``"training_1"`` and ``"training_10"``
(1 % within 10 % within the training split), whose items are copies of training items.

Preparing a dataset finds *all* problems of its inputs before writing anything: :class:`ProblemLog` collects
them (file, CSV row, item, reason) and raises one :class:`DatasetPreparationError` listing every one of them.
Output goes through :class:`sista_monai.io.files.StagedFolder` (a temporary folder next to the destination, moved
into place only when complete) or :func:`write_json_atomic` (:mod:`sista_monai.io.files`), so a failure never leaves a half-written file behind.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator

from sista_monai.errors import DatalistSchemaError, DatasetPreparationError
from sista_monai.io.files import json_text, write_json

__all__ = [
    "TASKS",
    "SPLIT_KEYS",
    "FRACTION_KEYS",
    "DATALIST_SCHEMAS",
    "Problem",
    "ProblemLog",
    "DatasetPreparationError",
    "DatalistSchemaError",
    "validate_datalist",
    "check_datalist",
    "datalist_path",
    "load_datalist_split",
    "dump_json",
    "write_json_atomic",
]

logger = logging.getLogger(__name__)

TASKS: tuple[str, ...] = ("classification", "detection", "segmentation", "pretraining")
"""The datalist item schemas."""

SPLIT_KEYS: tuple[str, ...] = ("training", "validation", "test")
"""The split lists every datalist has (possibly empty)."""

FRACTION_KEYS: dict[str, float] = {"training_1": 0.01, "training_10": 0.10}
"""Nested label-fraction subsets of the training split, and the fraction each stands for."""

_ID = {"type": "string", "minLength": 1}
_PATH = {"type": "string", "minLength": 1}
_BINARY = {"type": "integer", "enum": [0, 1]}
_BOX = {
    "type": "array",
    "minItems": 4,
    "maxItems": 4,
    "items": {"type": "number", "minimum": 0},
}
_ITEM_SCHEMAS: dict[str, dict[str, Any]] = {
    "classification": {
        "type": "object",
        "required": ["id", "image", "label"],
        "properties": {"id": _ID, "image": _PATH, "label": _BINARY},
    },
    "detection": {
        "type": "object",
        "required": ["id", "image", "boxes", "labels"],
        "properties": {
            "id": _ID,
            "image": _PATH,
            "boxes": {"type": "array", "items": _BOX},
            "labels": {"type": "array", "items": {"type": "integer", "minimum": 0}},
        },
    },
    "segmentation": {
        "type": "object",
        "required": ["id", "image", "mask"],
        "properties": {"id": _ID, "image": _PATH, "mask": _PATH},
    },
    "pretraining": {
        "type": "object",
        "required": ["id", "report"],
        "properties": {
            "id": _ID,
            "image": _PATH,
            "report": {"type": "string", "minLength": 1},
            "labels": {"type": "array", "items": _BINARY},
        },
    },
}


def _datalist_schema(task: str) -> dict[str, Any]:
    item = _ITEM_SCHEMAS[task]
    split = {"type": "array", "items": item}
    properties: dict[str, Any] = {key: split for key in (*SPLIT_KEYS, *FRACTION_KEYS)}
    if task == "detection":
        properties["box_mode"] = {"const": "xywh"}
    if task == "pretraining":
        properties["label_names"] = {"type": "array", "items": {"type": "string", "minLength": 1}}
        properties["text_only"] = {"type": "boolean"}
    required = [*SPLIT_KEYS, "box_mode"] if task == "detection" else list(SPLIT_KEYS)
    return {"type": "object", "required": required, "properties": properties}


DATALIST_SCHEMAS: dict[str, dict[str, Any]] = {task: _datalist_schema(task) for task in TASKS}
"""JSON Schema (draft 2020-12) of each datalist kind; :func:`validate_datalist` adds the checks JSON Schema
cannot express (unique ids, nested fractions, one label per box, label vector length, files)."""


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a dataset's inputs.

    Attributes:
        source: the file the problem is in (or the dataset when no file applies).
        reason: a short, PHI-free explanation (never report text or patient attributes).
        row: the 1-based CSV row number, counting the header as row 1, when the problem is a CSV row.
        item: the item (patient, image, study) the problem makes unusable; ``None`` when it is not tied to
            one item.
        fatal: whether the problem stops preparation even with ``on_error="skip"`` (e.g. a missing column).
    """

    source: str
    reason: str
    row: int | None = None
    item: str | None = None
    fatal: bool = False

    def __str__(self) -> str:
        where = self.source if self.row is None else f"{self.source}, row {self.row}"
        if self.item is not None:
            where = f"{where} [{self.item}]"
        return f"{where}: {self.reason}"

    def to_record(self) -> dict[str, Any]:
        """The JSON record of the problem (``skipped.json``)."""
        record: dict[str, Any] = {"source": self.source, "reason": self.reason}
        if self.row is not None:
            record["row"] = self.row
        if self.item is not None:
            record["item"] = self.item
        return record


class ProblemLog:
    """Collects problems while inputs are checked, so that all of them are reported at once.

    Args:
        context: what is being prepared, used as the source of the raised error.
    """

    def __init__(self, context: str) -> None:
        self.context = context
        self.problems: list[Problem] = []

    def add(
        self,
        source: object,
        reason: str,
        *,
        row: int | None = None,
        item: str | None = None,
        fatal: bool = False,
    ) -> None:
        """Record a problem (see :class:`Problem` for the arguments)."""
        problem = Problem(str(source), reason, row, item, fatal)
        self.problems.append(problem)
        logger.debug("%s: %s", self.context, problem)

    def __len__(self) -> int:
        return len(self.problems)

    def ordered(self) -> list[Problem]:
        """The problems ordered by file, then row (problems without a row last), then item."""
        return sorted(
            self.problems,
            key=lambda p: (p.source, p.row is None, p.row or 0, p.item or ""),
        )

    @property
    def bad_items(self) -> set[str]:
        """The items some problem makes unusable."""
        return {problem.item for problem in self.problems if problem.item is not None}

    def error(self) -> DatasetPreparationError:
        """The error listing every collected problem."""
        return DatasetPreparationError(self.context, self.ordered())

    def resolve(self, on_error: str) -> list[dict[str, Any]]:
        """Raise on the collected problems, or return the skip records under ``on_error="skip"``.

        Args:
            on_error: ``"raise"`` raises when any problem was found; ``"skip"`` raises only for fatal
                problems and otherwise returns one record per problem, for ``skipped.json``.

        Returns:
            The skip records (empty when there was no problem).

        Raises:
            DatasetPreparationError: listing every problem (``"raise"``) or every fatal one (``"skip"``).
            ValueError: for an unknown ``on_error``.
        """
        if on_error not in ("raise", "skip"):
            raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
        if on_error == "raise" and self.problems:
            raise self.error()
        fatal = [problem for problem in self.ordered() if problem.fatal]
        if fatal:
            raise DatasetPreparationError(self.context, fatal)
        if self.problems:
            logger.warning(
                "%s: skipping %d items (%d problems); see skipped.json",
                self.context,
                len(self.bad_items),
                len(self.problems),
            )
        return [problem.to_record() for problem in self.ordered()]


def _location(path: Iterable[Any]) -> str:
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "<datalist>"


def validate_datalist(
    datalist: Mapping[str, Any],
    task: str,
    base_dir: str | os.PathLike | None = None,
    check_files: bool = False,
) -> list[str]:
    """Check a datalist against its schema and return every violation found.

    Besides :data:`DATALIST_SCHEMAS`: ids are unique within and across the splits; ``training_1`` ⊂
    ``training_10`` ⊂ ``training`` with items equal to the training items of the same id; each detection
    item has one label per box and boxes of positive width and height; pretraining ``labels`` have the length
    of the top-level ``label_names``; pretraining items have an ``image`` unless ``text_only`` is true.

    Args:
        datalist: the parsed JSON object.
        task: one of :data:`TASKS`.
        base_dir: the folder relative paths are resolved against (the JSON file's folder).
        check_files: also check that every ``image`` and ``mask`` file exists.

    Returns:
        Human-readable violations (``"training[3].boxes[0]: ..."``); empty when the datalist is valid.

    Raises:
        ValueError: for an unknown ``task``.
    """
    if task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}, got {task!r}")
    validator = Draft202012Validator(DATALIST_SCHEMAS[task])
    errors = [f"{_location(error.absolute_path)}: {error.message}" for error in validator.iter_errors(datalist)]
    if errors or not isinstance(datalist, Mapping):
        return errors

    seen: dict[str, str] = {}
    for split in SPLIT_KEYS:
        for index, item in enumerate(datalist[split]):
            item_id = item["id"]
            if item_id in seen:
                errors.append(f"{split}[{index}]: id {item_id!r} already used in {seen[item_id]}")
            else:
                seen[item_id] = split
    training = {item["id"]: item for item in datalist["training"]}
    previous: set[str] | None = None
    for key in sorted(FRACTION_KEYS, key=FRACTION_KEYS.get):
        if key not in datalist:
            continue
        ids = [item["id"] for item in datalist[key]]
        if len(set(ids)) != len(ids):
            errors.append(f"{key}: repeated ids")
        for index, item in enumerate(datalist[key]):
            if training.get(item["id"]) != item:
                errors.append(f"{key}[{index}]: id {item['id']!r} is not the same item in 'training'")
        if previous is not None and not previous <= set(ids):
            errors.append(f"{key}: does not contain every item of the smaller label fraction")
        previous = set(ids)

    base = Path(base_dir) if base_dir is not None else None
    text_only = bool(datalist.get("text_only", False))
    label_names = datalist.get("label_names")
    for split in (*SPLIT_KEYS, *(key for key in FRACTION_KEYS if key in datalist)):
        for index, item in enumerate(datalist[split]):
            where = f"{split}[{index}]"
            if task == "detection":
                if len(item["boxes"]) != len(item["labels"]):
                    errors.append(f"{where}: {len(item['boxes'])} boxes but {len(item['labels'])} labels")
                if any(box[2] <= 0 or box[3] <= 0 for box in item["boxes"]):
                    errors.append(f"{where}: a box has no positive width and height")
            if task == "pretraining":
                if "image" not in item and not text_only:
                    errors.append(f"{where}: no 'image' (only a 'text_only' datalist may omit it)")
                if "labels" in item and label_names is not None and len(item["labels"]) != len(label_names):
                    errors.append(f"{where}: {len(item['labels'])} labels but {len(label_names)} label_names")
                if "labels" in item and label_names is None:
                    errors.append(f"{where}: item has 'labels' but the datalist has no 'label_names'")
            if check_files:
                for key in ("image", "mask"):
                    if key in item:
                        path = Path(item[key])
                        if base is not None and not path.is_absolute():
                            path = base / path
                        if not path.is_file():
                            errors.append(f"{where}: {key} file not found: {item[key]}")
    return errors


def check_datalist(
    datalist: Mapping[str, Any],
    task: str,
    source: object = "datalist",
    base_dir: str | os.PathLike | None = None,
    check_files: bool = False,
) -> None:
    """Raise when :func:`validate_datalist` finds any violation.

    Args:
        datalist: the parsed JSON object.
        task: one of :data:`TASKS`.
        source: how the error names the datalist (its path).
        base_dir: the folder relative paths are resolved against.
        check_files: also check that every ``image`` and ``mask`` file exists.

    Raises:
        DatalistSchemaError: listing every violation.
    """
    errors = validate_datalist(datalist, task, base_dir, check_files)
    if errors:
        lines = "\n".join(f"  - {error}" for error in errors)
        raise DatalistSchemaError(source, f"not a valid {task} datalist ({len(errors)} problems):\n{lines}")


def datalist_path(path: str | os.PathLike, json_dir: str | os.PathLike) -> str:
    """How a datalist written into ``json_dir`` refers to ``path``.

    Args:
        path: the file (an image or a mask).
        json_dir: the folder the datalist JSON is written to (its final location).

    Returns:
        The POSIX path relative to ``json_dir`` when the file lies under it, else the absolute path
        (normalised; symbolic links are kept as given, not resolved).
    """
    absolute = Path(os.path.abspath(path))
    folder = Path(os.path.abspath(json_dir))
    try:
        return absolute.relative_to(folder).as_posix()
    except ValueError:
        return absolute.as_posix()


def _resolved(value: Any, base: Path) -> Any:
    if isinstance(value, str) and value:
        return value if os.path.isabs(value) else os.path.normpath(base / value)
    if isinstance(value, list) and value and all(isinstance(v, str) and v for v in value):
        return [_resolved(v, base) for v in value]
    return value


def load_datalist_split(
    datalist: str | os.PathLike,
    key: str,
    path_keys: Sequence[str] = ("image", "label", "mask"),
    report_keys: Sequence[str] = ("report",),
) -> list[dict[str, Any]]:
    """The items of one split of a datalist, with relative file paths made absolute (against its folder).

    :func:`monai.data.load_decathlon_datalist` rewrites *any* string value that happens to name an existing
    path: an empty report becomes the datalist's folder, a one-word report such as ``images`` becomes a folder
    path, and the pipeline then trains on that path as text. Here only ``path_keys`` are resolved, and a
    report only when it names a report file (one line ending in ``.txt`` or ``.xml``).

    Args:
        datalist: the datalist JSON file.
        key: the split (``"training"``, ``"validation"``, ``"test"``, ``"training_1"``, ...).
        path_keys: keys holding a path or a list of paths.
        report_keys: keys holding report text or a report file name.

    Returns:
        Copies of the split's items.

    Raises:
        KeyError: the datalist has no ``key`` split.
    """
    path = Path(datalist)
    content = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(content.get(key), list):
        splits = sorted(k for k, v in content.items() if isinstance(v, list))
        raise KeyError(f"{path.name} has no {key!r} split (has {splits})")
    base = path.parent
    items = []
    for item in content[key]:
        entry = dict(item)
        for name in path_keys:
            if name in entry:
                entry[name] = _resolved(entry[name], base)
        for name in report_keys:
            value = entry.get(name)
            if isinstance(value, str) and "\n" not in value and value.strip().lower().endswith((".txt", ".xml")):
                entry[name] = _resolved(value.strip(), base)
        items.append(entry)
    return items


def dump_json(obj: Any) -> str:
    """The datalist JSON text: :func:`sista_monai.io.files.json_text` with a one-space indent (sorted keys, UTF-8
    text, final newline: reproducible)."""
    return json_text(obj, indent=1)


def write_json_atomic(path: str | os.PathLike, obj: Any) -> Path:
    """Write ``obj`` as datalist JSON (:func:`dump_json`) atomically (:func:`sista_monai.io.files.write_json`)."""
    return write_json(path, obj, indent=1)
