"""The inputs of the downstream bundles' inference: a real export folder in, one output per readable image.

A PACS export or DICOMDIR medium holds DICOM files with or without an extension, in study/series subfolders,
beside the ``DICOMDIR`` index and other files. :func:`find_images` walks ``dataset_dir`` recursively and keeps

* files whose content is DICOM: the ``DICM`` marker after the 128-byte preamble, or, for a file without a
  preamble, a header that pydicom reads with a SOP Class UID (the ``DICOMDIR`` index itself is skipped);
* ``.dcm``/``.dicom``/``.dic`` files whatever their content (so that a damaged one is reported, not ignored);
* PNG and JPEG files by their extension.

:func:`output_stem` names each input's outputs after its path relative to ``dataset_dir`` (subfolders kept),
without the extension, or with it when another input of the same folder shares the stem: two inputs never share
an output name (the grounding files add the phrase, :func:`grounding_file_names`). :class:`InferenceInputs` decodes every image once before the run, with the loader the bundles
use; an unreadable file never stops the batch: it is left out, listed in ``<output_dir>/errors.json`` (its path
relative to ``dataset_dir`` and the reason, no header values) and counted in one message, and
:meth:`InferenceInputs.finish` ends the run with exit status 1 when any input failed.
"""

from __future__ import annotations

import logging
import os
import re
import unicodedata
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from sista_monai.errors import ChestXrayReadError
from sista_monai.io.files import write_json

__all__ = [
    "ERRORS_FILE",
    "REPORT_TO_IMAGE_FILE",
    "DICOMDIR_SOP_CLASS",
    "is_dicom_file",
    "find_images",
    "output_stem",
    "phrase_slug",
    "grounding_file_names",
    "OutputNameFormatter",
    "OutputFolderLayout",
    "InferenceInputs",
]

logger = logging.getLogger(__name__)

ERRORS_FILE = "errors.json"
"""The inputs that could not be read, in the output folder: ``[{"file": relative path, "reason": ...}, ...]``."""

REPORT_TO_IMAGE_FILE = "report_to_image.json"
"""The report → image file of the retrieval bundle's retrieve mode, in the output folder."""

DICOMDIR_SOP_CLASS = "1.2.840.10008.1.3.10"
"""Media Storage Directory Storage: the ``DICOMDIR`` index of a DICOM medium, not an image."""

_DICOM_SUFFIXES = (".dcm", ".dicom", ".dic")
_RASTER_SUFFIXES = (".png", ".jpg", ".jpeg")
_UID = re.compile(r"[0-2](\.(0|[1-9][0-9]*))+")
_SLUG_LENGTH = 60


def _header(path: Path) -> Any:
    """The header of a file read as DICOM (also without the preamble), or ``None`` when it is not one.

    Read with ``force=True`` so that files without the 128-byte preamble (older exports) are accepted; anything
    else must then carry a SOP Class UID that looks like a UID, which other files do not produce by chance.
    """
    import pydicom

    try:
        dataset = pydicom.dcmread(path, stop_before_pixels=True, force=True, specific_tags=["SOPClassUID"])
        meta = getattr(dataset, "file_meta", None)
        uid = dataset.get("SOPClassUID") or (meta.get("MediaStorageSOPClassUID") if meta is not None else None)
    except Exception:  # noqa: BLE001 - a file pydicom cannot parse at all is simply not DICOM
        return None
    return dataset if uid is not None and _UID.fullmatch(str(uid)) else None


def is_dicom_file(path: str | os.PathLike) -> bool:
    """Whether a file's content is DICOM: the ``DICM`` marker at byte 128, or a readable header with a SOP Class."""
    path = Path(path)
    try:
        with path.open("rb") as stream:
            start = stream.read(132)
    except OSError:
        return False
    if len(start) == 132 and start[128:132] == b"DICM":
        return True
    dataset = _header(path)
    return dataset is not None and (
        "SOPClassUID" in dataset or "MediaStorageSOPClassUID" in getattr(dataset, "file_meta", {})
    )


def _is_dicomdir(path: Path) -> bool:
    if path.name.upper() == "DICOMDIR":
        return True
    dataset = _header(path)
    meta = getattr(dataset, "file_meta", None)
    return meta is not None and str(getattr(meta, "MediaStorageSOPClassUID", "")) == DICOMDIR_SOP_CLASS


def _walk(folder: Path) -> Iterator[Path]:
    for current, folders, files in os.walk(folder):
        folders[:] = sorted(f for f in folders if not f.startswith("."))
        for name in sorted(files):
            if not name.startswith("."):
                yield Path(current) / name


def find_images(folder: str | os.PathLike) -> list[Path]:
    """The DICOM, PNG and JPEG inputs under ``folder`` (recursively, hidden entries and ``DICOMDIR`` skipped), sorted.

    Raises:
        FileNotFoundError: ``folder`` is not a directory.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"dataset_dir {folder} is not a folder of DICOM/PNG/JPEG images")
    found = []
    for path in _walk(folder):
        suffix = path.suffix.lower()
        if suffix in _RASTER_SUFFIXES:
            found.append(path)
        elif suffix in _DICOM_SUFFIXES or is_dicom_file(path):
            if not _is_dicomdir(path):
                found.append(path)
    return sorted(found, key=lambda p: p.relative_to(folder).as_posix())


def _candidate(path: Path) -> bool:
    """Whether a file could be an input (so that its stem counts when naming outputs)."""
    suffix = path.suffix.lower()
    return suffix in _RASTER_SUFFIXES or suffix in _DICOM_SUFFIXES or suffix == ""


def output_stem(path: str | os.PathLike, root: str | os.PathLike | None = None) -> str:
    """The name of an input's outputs: its path relative to ``root`` without the extension, ``/``-separated.

    The extension is kept (``scan.dcm``, ``scan.png``) when another possible input of the same folder shares the
    stem, so that the outputs of ``scan.dcm`` and ``scan.png`` do not overwrite each other. A file outside
    ``root`` (or with no ``root``) is named by its stem alone.
    """
    path = Path(path)
    siblings = (
        [p for p in path.parent.iterdir() if p != path and p.is_file() and _candidate(p)]
        if path.parent.is_dir()
        else []
    )
    name = path.name if any(p.stem == path.stem for p in siblings) and path.suffix else path.stem
    if root is not None:
        try:
            parent = path.parent.resolve().relative_to(Path(root).resolve())
        except ValueError:
            return name
        return (parent / name).as_posix() if parent.parts else name
    return name


def phrase_slug(phrase: str) -> str:
    """The phrase as a file-name part: ASCII letters and digits, lower case, other runs as ``-`` (at most 60 chars).

    ``"Left pleural effusion"`` → ``"left-pleural-effusion"``; accents are dropped (``"épanchement"`` →
    ``"epanchement"``).

    Raises:
        ValueError: the phrase has no letter or digit.
    """
    ascii_text = unicodedata.normalize("NFKD", str(phrase)).encode("ascii", "ignore").decode("ascii")
    slug = re.sub(r"[^a-z0-9]+", "-", ascii_text.lower()).strip("-")[:_SLUG_LENGTH].rstrip("-")
    if not slug:
        raise ValueError(f"the grounding phrase {phrase!r} has no letter or digit to name its files after")
    return slug


def grounding_file_names(stem: str, phrase: str) -> tuple[str, str]:
    """``(<stem>_grounding_<slug>.png, <stem>_grounding.json)``: the heat map and the JSON of one image."""
    return f"{stem}_grounding_{phrase_slug(phrase)}.png", f"{stem}_grounding.json"


class OutputNameFormatter:
    """``output_name_formatter`` of MONAI's ``SaveImage(d)``: outputs named by :func:`output_stem` under ``root``
    (with ``folder_layout`` :class:`OutputFolderLayout`).

    Args:
        root: the inference input folder (``dataset_dir``).
    """

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root)

    def __call__(self, metadict: dict | None, saver: Any) -> dict[str, Any]:
        source = (metadict or {}).get("filename_or_obj")
        if source is None:
            raise ValueError("the image has no source file name (filename_or_obj) to name its output after")
        return {"subject": output_stem(str(source), self.root), "idx": None}


class OutputFolderLayout:
    """``folder_layout`` of MONAI's ``SaveImage(d)`` for :class:`OutputNameFormatter`: ``<output_dir>/<name><ext>``.

    MONAI's default layout keeps only the base name of the subject and drops everything after its last dot, which
    would lose the subfolders and the kept extension of :func:`output_stem`; this layout writes the name as given
    (creating its subfolders).

    Args:
        output_dir: the output folder.
        extension: the file extension, e.g. ``".png"``.
    """

    def __init__(self, output_dir: str | os.PathLike, extension: str = ".png") -> None:
        self.output_dir = Path(output_dir)
        self.extension = extension if not extension or extension.startswith(".") else f".{extension}"

    def filename(self, subject: str = "subject", idx: Any = None, **kwargs: Any) -> str:
        """``<output_dir>/<subject>[_<idx>]<extension>``, its folder created."""
        name = f"{subject}_{idx}" if idx is not None else str(subject)
        path = self.output_dir / f"{name}{self.extension}"
        path.parent.mkdir(parents=True, exist_ok=True)
        return str(path)


class InferenceInputs:
    """The inputs of one inference run: found, decoded once, the unreadable ones recorded (see the module docstring).

    Args:
        folder: ``dataset_dir``.
        output_dir: where the outputs and ``errors.json`` go.
        image_key: the datalist key of the image.
        name_key: the datalist key of the output name (:func:`output_stem`).

    Attributes:
        items: ``[{image_key: path, name_key: output name}, ...]`` of the readable images.
        errors: ``[{"file": path relative to folder, "reason": ...}, ...]`` of the others.

    Raises:
        FileNotFoundError: ``folder`` is not a directory.
        ValueError: it holds no DICOM, PNG or JPEG file at all.
    """

    def __init__(
        self,
        folder: str | os.PathLike,
        output_dir: str | os.PathLike,
        image_key: str = "image",
        name_key: str = "output_name",
    ) -> None:
        from sista_monai.transforms.io import read_chest_xray

        self.folder, self.output_dir = Path(folder), Path(output_dir)
        files = find_images(self.folder)
        if not files:
            raise ValueError(
                f"dataset_dir {self.folder} holds no DICOM (by content, with or without an extension), PNG or JPEG "
                "file, in it or in its subfolders"
            )
        self.items: list[dict[str, str]] = []
        self.errors: list[dict[str, str]] = []
        for path in files:
            relative = path.relative_to(self.folder).as_posix()
            try:
                read_chest_xray(path)
            except ChestXrayReadError as err:
                self.errors.append({"file": relative, "reason": err.reason})
                continue
            except Exception as err:  # noqa: BLE001 - one unforeseen failure must not stop the other images
                logger.debug("unexpected error reading %s", path, exc_info=True)
                self.errors.append({"file": relative, "reason": f"cannot be read: unexpected {type(err).__name__}"})
                continue
            self.items.append({image_key: str(path), name_key: output_stem(path, self.folder)})
        errors_file = self.output_dir / ERRORS_FILE
        if self.errors:
            write_json(errors_file, self.errors)
            logger.error(
                "%d of %d inputs in %s cannot be read and get no output; each is listed with its reason in %s",
                len(self.errors),
                len(files),
                self.folder,
                errors_file,
            )
        else:
            errors_file.unlink(missing_ok=True)  # a list from an earlier run in the same folder would mislead
        if not self.items:
            raise ValueError(f"none of the {len(files)} inputs in {self.folder} can be read; see {errors_file}")

    def finish(self) -> None:
        """End the run with exit status 1 when any input could not be read (its outputs were written already).

        Raises:
            SystemExit: with status 1 and a one-line message naming ``errors.json``.
        """
        if self.errors:
            raise SystemExit(
                f"inference finished for {len(self.items)} inputs; {len(self.errors)} could not be read "
                f"(see {self.output_dir / ERRORS_FILE})"
            )
