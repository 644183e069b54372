"""Inference inputs from a real export folder: DICOM found by content in nested folders, collision-free output
names, unreadable files recorded in errors.json without stopping the others, and the exit status."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from sista_monai.data.inference import (
    ERRORS_FILE,
    InferenceInputs,
    OutputFolderLayout,
    OutputNameFormatter,
    find_images,
    is_dicom_file,
    output_stem,
)

PIXELS = (np.arange(64 * 48, dtype=np.uint16).reshape(48, 64) * 7) % 4096


def _export(root: Path, write_dicom: Callable[..., Path]) -> Path:
    """A PACS-like export: extensionless DICOMs in study/series folders, a DICOMDIR, other files."""
    series = root / "STUDY1" / "SERIES1"
    series.mkdir(parents=True)
    (root / ".hidden").mkdir()
    write_dicom("in/STUDY1/SERIES1/IM0001", PIXELS, BitsStored=12, PatientName="Doe^Jane")
    write_dicom("in/STUDY1/SERIES1/IM0002", PIXELS[::-1], BitsStored=12, preamble=False)  # no preamble/extension
    write_dicom("in/scan.dcm", PIXELS, BitsStored=12)
    write_dicom("in/.hidden/IM9", PIXELS)
    shutil.copy(series / "IM0001", root / "DICOMDIR")  # the index of a medium is skipped by its name
    (root / "scan.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")  # same stem as scan.dcm, unreadable
    (root / "notes.txt").write_text("not an image")
    (root / "README").write_text("extensionless, not DICOM")
    return root


def test_dicom_is_recognised_by_content(tmp_path: Path, dicom_writer: Callable[..., Path]) -> None:
    with_preamble = dicom_writer("a", PIXELS)
    without = dicom_writer("b", PIXELS, preamble=False)
    (tmp_path / "c").write_bytes(b"\0" * 200)
    assert is_dicom_file(with_preamble) and is_dicom_file(without)
    assert not is_dicom_file(tmp_path / "c") and not is_dicom_file(tmp_path / "absent")


def test_find_images_walks_an_export(tmp_path: Path, dicom_writer: Callable[..., Path]) -> None:
    root = _export(tmp_path / "in", dicom_writer)
    found = [p.relative_to(root).as_posix() for p in find_images(root)]
    assert found == ["STUDY1/SERIES1/IM0001", "STUDY1/SERIES1/IM0002", "scan.dcm", "scan.png"]
    with pytest.raises(FileNotFoundError, match="is not a folder"):
        find_images(tmp_path / "absent")


def test_output_names_keep_subfolders_and_never_collide(tmp_path: Path, dicom_writer: Callable[..., Path]) -> None:
    root = _export(tmp_path / "in", dicom_writer)
    names = [output_stem(p, root) for p in find_images(root)]
    assert names == ["STUDY1/SERIES1/IM0001", "STUDY1/SERIES1/IM0002", "scan.dcm", "scan.png"]
    assert len(set(names)) == len(names)
    assert output_stem(root / "STUDY1" / "SERIES1" / "IM0001") == "IM0001"  # no root: the stem
    formatter = OutputNameFormatter(root)
    assert formatter({"filename_or_obj": str(root / "scan.dcm")}, None) == {"subject": "scan.dcm", "idx": None}
    with pytest.raises(ValueError, match="no source file name"):
        formatter({}, None)


def test_unreadable_inputs_are_recorded_and_the_others_kept(tmp_path: Path, dicom_writer: Callable[..., Path]) -> None:
    root, out = _export(tmp_path / "in", dicom_writer), tmp_path / "out"
    inputs = InferenceInputs(root, out)
    assert [Path(i["image"]).relative_to(root).as_posix() for i in inputs.items] == [
        "STUDY1/SERIES1/IM0001",
        "STUDY1/SERIES1/IM0002",
        "scan.dcm",
    ]
    errors = json.loads((out / ERRORS_FILE).read_text())
    assert [e["file"] for e in errors] == ["scan.png"] and errors == inputs.errors
    assert errors[0]["reason"] and "Doe" not in (out / ERRORS_FILE).read_text()
    with pytest.raises(SystemExit, match="finished for 3 inputs; 1 could not be read"):
        inputs.finish()

    (root / "scan.png").unlink()
    clean = InferenceInputs(root, out)
    assert len(clean.items) == 3 and clean.errors == [] and not (out / ERRORS_FILE).exists()  # stale list removed
    clean.finish()


def test_a_folder_with_nothing_readable_is_refused(tmp_path: Path) -> None:
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.png").write_bytes(b"junk")
    with pytest.raises(ValueError, match="none of the 1 inputs"):
        InferenceInputs(tmp_path / "in", tmp_path / "out")
    (tmp_path / "in" / "a.png").unlink()
    with pytest.raises(ValueError, match="holds no DICOM"):
        InferenceInputs(tmp_path / "in", tmp_path / "out")


def test_output_folder_layout_keeps_the_name_as_given(tmp_path: Path) -> None:
    layout = OutputFolderLayout(tmp_path / "out", "png")
    assert layout.filename("STUDY1/SERIES1/scan.dcm") == str(tmp_path / "out" / "STUDY1" / "SERIES1" / "scan.dcm.png")
    assert (tmp_path / "out" / "STUDY1" / "SERIES1").is_dir()
    assert layout.filename("a", idx=2) == str(tmp_path / "out" / "a_2.png")
