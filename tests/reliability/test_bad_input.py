"""Bad input through the whole pipeline: the real bundle runs and the real ``prepare`` command.

Each bundle test copies the tiny demo dataset (real DICOM files with planted fake PHI), damages it the way
hospital archives are damaged (empty, truncated and random files, a structured report, colour and multi-frame
images, a transfer syntax without a decoder, absurd size headers; empty, masked-only and non-UTF-8 reports;
a missing image, a duplicated id, one patient in two splits; wrong masks) and runs the bundle:

* by default the run stops before training with ONE message listing every bad item and its reason;
* with ``skip_bad_items`` true it trains on the rest and writes ``eval/skipped_items.json``;
* a DICOM with non-ASCII header text (UTF-8, ``ISO_IR 192``) and a very long report are not bad: they train,
  the long report is truncated with a logged count, and no header value or report text reaches a message.
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
from bundle_helpers import REPO_ROOT, as_cli, run_cli, tiny_pretrain_overrides, tiny_pretrained_encoder
from monai.bundle import run as bundle_run
from PIL import Image
from pydicom.encaps import encapsulate
from pydicom.uid import JPEG2000MC, BasicTextSRStorage, ExplicitVRLittleEndian
from tiny_models import TINY_ENCODER

from sista_monai.data.prepare import main as prepare_main
from sista_monai.data.validate import BadItemsError, check_items

NON_ASCII_NAME = "Müller^Jürgen"
NON_ASCII_INSTITUTION = "Klinikum Süd – Zürich"
LONG_SENTENCE = "Stable appearance of the chest with no focal consolidation."
MASKED_ONLY_REPORT = "FINDINGS: XXXX XXXX.\n\nIMPRESSION: ___ ___\n"
LEAKED_PATIENT = "PATIENT-IN-TWO-SPLITS"
DATALISTS = {
    "pretrain": "datalist_pretrain.json",
    "classification": "datalist_classification.json",
    "segmentation": "datalist_segmentation.json",
    "detection": "datalist_detection.json",
}
BUNDLES = {
    "pretrain": "pretrain",
    "classification": "rsna_pneumonia_classification",
    "segmentation": "siim_pneumothorax_segmentation",
    "detection": "rsna_pneumonia_detection",
}
DOWNSTREAM_OVERRIDES = {
    "classification": {},
    "segmentation": {"feature_size": 4},
    "detection": {"fpn_channels": 16},
}


# ------------------------------------------------------------------------------------------ bad input
@dataclass
class BadData:
    """A damaged copy of the tiny demo and what the pre-flight check must say about it.

    Attributes:
        root: the copied dataset folder (``--dataset_dir``).
        datalist: the datalist the bundle reads.
        expected: ``(split, index) -> (item id, reason fragment)`` of every planted bad item.
        good: ``(split, index) -> what`` of planted items that must NOT be refused.
        sizes: the number of items of each split in the damaged datalist.
    """

    root: Path
    datalist: Path
    expected: dict[tuple[str, int], tuple[str, str]] = field(default_factory=dict)
    good: dict[tuple[str, int], str] = field(default_factory=dict)
    sizes: dict[str, int] = field(default_factory=dict)

    def kept(self, split: str) -> int:
        return self.sizes[split] - sum(1 for s, _ in self.expected if s == split)


def _template(path: Path) -> pydicom.Dataset:
    """A demo DICOM (with its planted fake PHI), decompressed, to derive damaged files from."""
    ds = pydicom.dcmread(path)
    if ds.file_meta.TransferSyntaxUID.is_compressed:
        ds.decompress()
    return ds


def _save(ds: pydicom.Dataset, path: Path) -> None:
    ds.save_as(path, enforce_file_format=True)


def _truncated(template: pydicom.Dataset, path: Path) -> None:
    _save(template, path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - len(data) // 3])


def _structured_report(template: pydicom.Dataset, path: Path) -> None:
    ds = pydicom.Dataset()
    ds.file_meta = pydicom.dataset.FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = BasicTextSRStorage
    ds.file_meta.MediaStorageSOPInstanceUID = template.SOPInstanceUID
    ds.SOPClassUID, ds.SOPInstanceUID, ds.Modality = BasicTextSRStorage, template.SOPInstanceUID, "SR"
    ds.PatientName = template.PatientName
    _save(ds, path)


def _rgb(template: pydicom.Dataset, path: Path) -> None:
    ds = copy.deepcopy(template)
    ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PlanarConfiguration = 3, "RGB", 0
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.PixelData = np.zeros((ds.Rows, ds.Columns, 3), np.uint8).tobytes()
    _save(ds, path)


def _multiframe(template: pydicom.Dataset, path: Path) -> None:
    ds = copy.deepcopy(template)
    ds.NumberOfFrames = 3
    ds.PixelData = template.PixelData * 3
    _save(ds, path)


def _no_decoder(template: pydicom.Dataset, path: Path) -> None:
    ds = copy.deepcopy(template)
    ds.PixelData = encapsulate([b"\xff\x4f\xff\x51" + bytes(60)])  # a JPEG 2000 Part 2 codestream start
    ds["PixelData"].VR = "OB"
    ds.file_meta.TransferSyntaxUID = JPEG2000MC  # pydicom has no decoder for it
    _save(ds, path)


def _resized_header(rows: int, columns: int) -> Callable[[pydicom.Dataset, Path], None]:
    def write(template: pydicom.Dataset, path: Path) -> None:
        ds = copy.deepcopy(template)
        ds.Rows, ds.Columns = rows, columns  # the pixel data stays 64 x 64
        _save(ds, path)

    return write


def _non_ascii_header(template: pydicom.Dataset, path: Path) -> None:
    ds = copy.deepcopy(template)
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.PatientName = NON_ASCII_NAME
    ds.InstitutionName = NON_ASCII_INSTITUTION
    _save(ds, path)


DICOM_CASES: list[tuple[str, str, Callable[[pydicom.Dataset, Path], None] | None]] = [
    ("training", "empty file", None),
    ("training", "(truncated file or wrong size header)", _truncated),
    ("training", "not a DICOM file", None),
    ("training", "DICOM has no pixel data (SOP Class: Basic Text SR Storage)", _structured_report),
    ("training", "colour DICOM (RGB, 3 samples per pixel)", _rgb),
    ("training", "multi-frame DICOM (3 frames)", _multiframe),
    ("training", "no decoder exists for transfer syntax JPEG 2000 Part 2 Multi-component", _no_decoder),
    ("training", "implausible image size 60000x60000 in the header", _resized_header(60000, 60000)),
    ("validation", "but Rows x Columns x BitsAllocated need", _resized_header(4000, 4000)),
]
"""(split, reason fragment, writer) of each damaged image; the first free item of the split gets it."""


def plant_bad_input(demo: Path, destination: Path, task: str) -> BadData:
    """Copy ``demo`` to ``destination`` and damage it for ``task``'s bundle (see the module docstring)."""
    root = destination / "data"
    shutil.copytree(demo, root, ignore=shutil.ignore_patterns(".cache"))
    datalist_path = root / DATALISTS[task]
    datalist = json.loads(datalist_path.read_text())
    bad = BadData(root=root, datalist=datalist_path)
    template = _template(root / datalist["training"][0]["image"])
    position = {"training": 0, "validation": 0, "test": 1}  # test[0] is the patient kept in test

    def next_item(split: str) -> tuple[int, dict[str, Any]]:
        index = position[split]
        position[split] += 1
        return index, datalist[split][index]

    def expect(split: str, index: int, fragment: str) -> None:
        bad.expected[(split, index)] = (datalist[split][index]["id"], fragment)

    for split, fragment, writer in DICOM_CASES:
        index, item = next_item(split)
        path = root / item["image"]
        if fragment == "empty file":
            path.write_bytes(b"")
        elif fragment == "not a DICOM file":
            path.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
        else:
            writer(template, path)
        expect(split, index, fragment)

    index, item = next_item("training")
    _non_ascii_header(template, root / item["image"])
    bad.good[("training", index)] = "non-ASCII header text"

    index, item = next_item("training")
    item["image"] = "images/no_such_image.dcm"
    expect("training", index, "file not found")

    index, item = next_item("training")
    datalist["training"].append(copy.deepcopy(item))
    expect("training", len(datalist["training"]) - 1, f"duplicate id {item['id']!r}")

    index, item = next_item("training")
    item["patient_id"] = datalist["test"][0]["patient_id"] = LEAKED_PATIENT
    expect("training", index, "its patient also has items in test (test[0])")

    if task == "pretrain":
        index, item = next_item("training")
        item["report"] = ""
        expect("training", index, "report is empty after cleaning")
        index, item = next_item("training")
        item["report"] = MASKED_ONLY_REPORT
        expect("training", index, "report is empty after cleaning")
        index, item = next_item("training")
        latin1 = root / "reports" / f"{item['id']}_latin1.txt"
        latin1.write_bytes(
            "FINDINGS: Heart size normal, café-au-lait spots.\nIMPRESSION: No acute process.\n".encode("latin-1")
        )
        item["report"] = str(latin1)  # report files are read by path; relative paths resolve from the run folder
        expect("training", index, "not valid utf-8: undecodable byte 0xe9")
        index, item = next_item("training")
        item["report"] = "IMPRESSION: " + " ".join([LONG_SENTENCE] * 60)
        bad.good[("training", index)] = "report far longer than max_length"
    if task == "segmentation":
        index, item = next_item("training")
        Image.fromarray(np.zeros((32, 32), np.uint8)).save(root / item["mask"])
        expect("training", index, "the mask is 32x32 but the image is 64x64")
        index, item = next_item("training")
        Image.fromarray(np.full((64, 64), 255, np.uint8)).save(root / item["mask"])
        expect("training", index, "mask values must be 0 and 1 (found values from 255 to 255)")
        index, item = next_item("training")
        item["mask"] = "masks/no_such_mask.png"
        expect("training", index, "file not found")

    datalist_path.write_text(json.dumps(datalist, indent=1))
    bad.sizes = {split: len(datalist[split]) for split in ("training", "validation", "test")}
    return bad


def phi_strings(demo: Path) -> list[str]:
    """The planted fake PHI of the demo data plus the non-ASCII header values planted here."""
    manifest = json.loads((demo / "phi_manifest.json").read_text())
    planted = [s for s in manifest["strings"] + manifest.get("name_parts", []) if len(s) >= 5]
    return planted + [NON_ASCII_NAME, "Jürgen", "Müller", NON_ASCII_INSTITUTION, "Zürich"]


def assert_no_phi_or_report_text(text: str, demo: Path) -> None:
    for value in phi_strings(demo):
        assert value not in text, f"planted PHI {value!r} leaked"
    assert LONG_SENTENCE not in text and "XXXX XXXX" not in text and "café" not in text


def problem_lines(console: str) -> dict[tuple[str, int], str]:
    """``(split, index) -> line`` of the listed items: the error's ``  - training[3] demo_0004 (...): reason``
    lines, or the ``  skipped training[3] ...`` log lines of a skipping run."""
    lines: dict[tuple[str, int], str] = {}
    for line in console.splitlines():
        match = re.search(r"(?:^\s+- |  skipped )(training|validation|test)\[(\d+)\] (\S+)", line)
        if match:
            lines.setdefault((match.group(1), int(match.group(2))), line)
    return lines


def assert_lists_exactly_the_bad_items(problems: dict[tuple[str, int], str], bad: BadData) -> None:
    assert set(problems) == set(bad.expected), (sorted(problems), sorted(bad.expected))
    for position, (item_id, fragment) in bad.expected.items():
        assert f"{position[0]}[{position[1]}] {item_id}" in problems[position]
        assert fragment in problems[position], (fragment, problems[position])
    for position in bad.good:
        assert position not in problems


def assert_skipped_record(bundle_root: Path, bad: BadData) -> dict[str, Any]:
    record = json.loads((bundle_root / "eval" / "skipped_items.json").read_text(encoding="utf-8"))
    assert record["skip_bad_items"] is True and record["source"] == str(bad.datalist)
    assert record["checked_items"] == sum(bad.sizes.values())
    assert record["skipped_items"] == len(bad.expected)
    assert record["kept_items"] == {split: bad.kept(split) for split in bad.sizes}
    listed = {(entry["split"], entry["index"]): entry for entry in record["skipped"]}
    assert set(listed) == set(bad.expected)
    for position, (item_id, fragment) in bad.expected.items():
        assert listed[position]["id"] == item_id and fragment in listed[position]["reason"]
    return record


def bundle_copy(task: str, destination: Path) -> Path:
    bundle_root = destination / BUNDLES[task]
    shutil.copytree(
        REPO_ROOT / "bundles" / BUNDLES[task], bundle_root, ignore=shutil.ignore_patterns("models", "logs", "eval")
    )
    return bundle_root


# ------------------------------------------------------------------------------------------ pretraining
@pytest.fixture(scope="module")
def pretrain_bad(tiny_demo: Path, tmp_path_factory: pytest.TempPathFactory) -> BadData:
    return plant_bad_input(tiny_demo, tmp_path_factory.mktemp("pretrain_bad"), "pretrain")


def pretrain_command(bundle_root: Path, bad: BadData, **extra: Any) -> list[str]:
    overrides = {**tiny_pretrain_overrides(bad.root), "bundle_root": str(bundle_root), "demo_data": False, **extra}
    return [
        "python",
        "-m",
        "monai.bundle",
        "run",
        "--config_file",
        "bundles/pretrain/configs/train.json",
        *as_cli(overrides),
    ]


@pytest.mark.slow
def test_pretrain_stops_before_training_with_one_message_listing_every_bad_item(
    pretrain_bad: BadData, tiny_demo: Path, tmp_path: Path
) -> None:
    bundle_root = bundle_copy("pretrain", tmp_path)
    result = run_cli(pretrain_command(bundle_root, pretrain_bad))
    console = result.stdout + result.stderr
    assert result.returncode != 0
    total = sum(pretrain_bad.sizes.values())
    header = f"{len(pretrain_bad.expected)} of {total} items are bad"
    assert header in console and "BadItemsError" in console
    assert console.count(f"{header} ({len(pretrain_bad.expected)} problems); the run stopped before training") >= 1
    assert_lists_exactly_the_bad_items(problem_lines(console), pretrain_bad)
    assert f"set skip_bad_items to true to train on the other {total - len(pretrain_bad.expected)} items" in console
    assert str(bundle_root / "eval" / "skipped_items.json") in console
    # stopped before training: no epoch, no checkpoint, no TensorBoard events, no skip record
    assert "Epoch" not in console
    assert not (bundle_root / "models").exists() and not (bundle_root / "logs").exists()
    assert not (bundle_root / "eval" / "skipped_items.json").exists()
    assert_no_phi_or_report_text(console, tiny_demo)


@pytest.mark.slow
def test_pretrain_skip_option_trains_on_the_rest_and_records_the_skipped(
    pretrain_bad: BadData, tiny_demo: Path, tmp_path: Path
) -> None:
    bundle_root = bundle_copy("pretrain", tmp_path)
    result = run_cli(pretrain_command(bundle_root, pretrain_bad, skip_bad_items=True, epochs=1))
    console = result.stdout + result.stderr
    assert result.returncode == 0, console[-4000:]
    record = assert_skipped_record(bundle_root, pretrain_bad)
    # every skipped item is also in the console, and training ran on exactly the kept items (batch 8, drop_last)
    assert f"skipping {len(pretrain_bad.expected)} of {sum(pretrain_bad.sizes.values())} items" in console
    assert_lists_exactly_the_bad_items(problem_lines(console), pretrain_bad)
    assert f"Epoch: 1/1, {pretrain_bad.kept('training') // 8} iterations -- " in console
    assert (bundle_root / "models" / "image_encoder.pt").is_file()
    metrics = json.loads((bundle_root / "eval" / "metrics.json").read_text())
    assert metrics  # the test split (all of it kept) was evaluated
    # the very long report is truncated (a count is logged), not refused; the non-ASCII DICOM trains
    assert record["reports_truncated"] >= 1 and record["max_length"] == 64
    assert re.search(
        r"pre-flight: \d+ of \d+ reports are longer than max_length=64 tokens and will be truncated", console
    )
    assert_no_phi_or_report_text(console, tiny_demo)
    for path in [p for p in bundle_root.rglob("*") if p.is_file() and "configs" not in p.parts]:
        data = path.read_bytes()
        for value in phi_strings(tiny_demo):
            assert value.encode() not in data, f"{value!r} in {path}"


# ------------------------------------------------------------------------------------------ downstream
@pytest.fixture(scope="module")
def encoder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    config = REPO_ROOT / "bundles" / BUNDLES["classification"] / "configs" / "train.json"
    return tiny_pretrained_encoder(tmp_path_factory.mktemp("encoder"), config, TINY_ENCODER)


def downstream_overrides(task: str, bundle_root: Path, bad: BadData, encoder: Path) -> dict[str, Any]:
    return {
        "bundle_root": str(bundle_root), "dataset_dir": str(bad.root), "demo_data": False, "pretrained_encoder": str(encoder),
        "epochs": 1, "min_iterations_per_epoch": 1, "batch_size": 8, "val_batch_size": 8,
        **{f"image_encoder#{key}": value for key, value in TINY_ENCODER.items()}, **DOWNSTREAM_OVERRIDES[task],
    }  # fmt: skip


def bad_items_error(error: BaseException) -> BadItemsError:
    """The :class:`BadItemsError` a bundle run failed on (MONAI wraps it in its config-evaluation errors)."""
    seen = error
    while seen is not None and not isinstance(seen, BadItemsError):
        seen = seen.__cause__ or seen.__context__
    assert seen is not None, f"the run failed on something else: {error!r}"
    return seen


@pytest.mark.slow
@pytest.mark.parametrize("task", ["classification", "segmentation", "detection"])
def test_downstream_bundle_stops_then_skips(
    task: str, tiny_demo: Path, encoder: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    bad = plant_bad_input(tiny_demo, tmp_path, task)
    bundle_root = bundle_copy(task, tmp_path)
    config = str(bundle_root / "configs" / "train.json")
    overrides = downstream_overrides(task, bundle_root, bad, encoder)

    with pytest.raises(Exception) as info:
        bundle_run(config_file=config, **overrides)
    error = bad_items_error(info.value)
    assert error.source == str(bad.datalist) and error.checked == sum(bad.sizes.values())
    listed = {(p.split, p.index): str(p) for p in error.problems}
    assert_lists_exactly_the_bad_items(listed, bad)
    assert problem_lines(str(error)) == {position: f"  - {line}" for position, line in listed.items()}
    assert not (bundle_root / "models").exists() and not (bundle_root / "eval").exists()
    console = capsys.readouterr()
    assert str(error) in console.out  # the bundle's console log shows the whole list once, before the traceback
    assert_no_phi_or_report_text(str(error) + console.out + console.err, tiny_demo)

    bundle_run(config_file=config, **{**overrides, "skip_bad_items": "true"})
    assert_skipped_record(bundle_root, bad)
    metrics = json.loads((bundle_root / "eval" / "metrics.json").read_text())
    assert metrics["training_images"] == bad.kept("training")
    assert (bundle_root / "models" / "model.pt").is_file()
    console = capsys.readouterr()
    assert_lists_exactly_the_bad_items(problem_lines(console.out), bad)
    assert_no_phi_or_report_text(console.out + console.err, tiny_demo)


@pytest.mark.slow
def test_rerun_uses_remembered_results_and_notices_a_changed_file(
    tiny_demo: Path, encoder: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    bad = plant_bad_input(tiny_demo, tmp_path, "classification")
    bundle_root = bundle_copy("classification", tmp_path)
    config = str(bundle_root / "configs" / "train.json")
    overrides = downstream_overrides("classification", bundle_root, bad, encoder)
    datalist = json.loads(bad.datalist.read_text())
    images = {bad.root / i["image"] for split in ("training", "validation", "test") for i in datalist[split]}
    readable = len([path for path in images if path.is_file()])
    with pytest.raises(Exception) as info:
        bundle_run(config_file=config, **overrides)
    assert len(bad_items_error(info.value).problems) == len(bad.expected)
    assert f"pre-flight: reading {readable} images (0 remembered)" in capsys.readouterr().out
    # repair one damaged file: only that file is read again, and it is no longer reported
    (split, index), (item_id, _) = next(iter(bad.expected.items()))
    shutil.copy(tiny_demo / "images" / f"{item_id}.dcm", bad.root / "images" / f"{item_id}.dcm")
    with pytest.raises(Exception) as info:
        bundle_run(config_file=config, **overrides)
    assert f"pre-flight: reading 1 images ({readable - 1} remembered)" in capsys.readouterr().out
    problems = bad_items_error(info.value).problems
    assert (split, index) not in {(p.split, p.index) for p in problems}
    assert len(problems) == len(bad.expected) - 1


def test_skipping_every_item_of_a_split_is_refused(tmp_path: Path, dicom_writer) -> None:
    good = dicom_writer("good.dcm", np.arange(64, dtype=np.uint8).reshape(8, 8))
    (tmp_path / "empty.dcm").write_bytes(b"")
    splits = {
        "training": [{"id": "a", "image": str(tmp_path / "empty.dcm")}],
        "validation": [{"id": "b", "image": str(good)}],
    }
    record = tmp_path / "eval" / "skipped_items.json"
    with pytest.raises(BadItemsError) as info:
        check_items(splits, skip=True, skipped_file=record, workers=1)
    assert "every item of training is bad" in str(info.value) and "training[0] a" in str(info.value)
    assert not record.exists()
    kept = check_items({"validation": splits["validation"]}, skip="false", skipped_file=record, workers=1)
    assert kept == {"validation": splits["validation"]}
    assert json.loads(record.read_text())["skipped"] == []  # a clean run records that nothing was skipped


# ------------------------------------------------------------------------------------------ prepare
PREPARE = ["python", "-m", "sista_monai.data.prepare"]


def write_patients(folder: Path, dicom_writer, ids: list[str]) -> Path:
    images = folder / "images"
    images.mkdir(parents=True)
    for number, patient in enumerate(ids):
        shutil.move(dicom_writer(f"{patient}.dcm", np.full((16, 12), 10 * number, np.uint8)), images / f"{patient}.dcm")
    return images


@pytest.mark.slow
def test_prepare_rsna_lists_every_bad_row_then_skips_with_a_record(tmp_path: Path, dicom_writer) -> None:
    images = write_patients(tmp_path, dicom_writer, ["p1", "p2", "p3", "p4", "p6", "p7", "p8", "p9"])
    labels = tmp_path / "labels.csv"
    labels.write_text(
        "patientId,x,y,width,height,Target\n"  # row 1
        "p1,,,,,0\n"
        "p2,1,2,3,4,1\n"
        "p3,1,2\n"  # row 4: malformed (3 fields)
        "p4,,,,,0\n"
        "p4,,,,,0\n"  # row 6: the same patient again
        "p5,,,,,0\n"  # row 7: no p5.dcm
        "p6,1,2,-3,4,1\n"  # row 8: a negative width
        "p7,,,,,maybe\n"  # row 9: Target not 0/1
        "p8,,,,,1\n"  # row 10: Target 1 without a box
        "p9,,,,,0\n"
    )
    out = tmp_path / "out"
    args = [*PREPARE, "rsna", "--labels", str(labels), "--images", str(images), "--out", str(out), "--split-seed", "0"]
    result = run_cli(args)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    expected = {
        "row 4 [p3]": "malformed row: 3 fields, the header has 6",
        "row 6 [p4]": "duplicate of row 5",
        "row 7 [p5]": "image file p5.dcm not found",
        "row 8 [p6]": "the box needs x, y >= 0 and width, height > 0",
        "row 9 [p7]": "Target must be 0 or 1",
        "row 10 [p8]": "Target 1 needs x, y, width and height",
    }
    assert "6 problems found; nothing was written" in result.stderr
    for where, reason in expected.items():
        assert re.search(re.escape(f"labels.csv, {where}: ") + r".*" + re.escape(reason), result.stderr), where
    assert not out.exists()

    assert prepare_main([*args[3:], "--on-error", "skip"]) == 0  # the command's entry point, in process
    skipped = json.loads((out / "skipped.json").read_text())["problems"]
    assert {(p["row"], p["item"]) for p in skipped} == {
        (4, "p3"),
        (6, "p4"),
        (7, "p5"),
        (8, "p6"),
        (9, "p7"),
        (10, "p8"),
    }
    datalist = json.loads((out / "datalist_classification.json").read_text())
    assert {i["id"] for split in ("training", "validation", "test") for i in datalist[split]} == {"p1", "p2", "p9"}


def write_released_split(folder: Path, subsets: dict[str, list[str]]) -> Path:
    (folder / "rsna").mkdir(parents=True)
    sums = []
    for name, ids in subsets.items():
        path = folder / "rsna" / f"{name}.txt"
        path.write_text("".join(f"{i}\n" for i in sorted(ids)))
        sums.append(f"{hashlib.sha256(path.read_bytes()).hexdigest()}  rsna/{name}.txt")
    (folder / "SHA256SUMS").write_text("\n".join(sums) + "\n")
    return folder


@pytest.mark.slow
def test_prepare_rsna_refuses_a_patient_in_two_splits(tmp_path: Path, dicom_writer) -> None:
    images = write_patients(tmp_path, dicom_writer, ["p1", "p2", "p3", "p4"])
    labels = tmp_path / "labels.csv"
    labels.write_text("patientId,x,y,width,height,Target\np1,,,,,0\np2,1,2,3,4,1\np3,,,,,0\np4,,,,,0\n")
    splits = write_released_split(
        tmp_path / "splits",
        {"train": ["p1", "p2", "p4"], "validation": ["p3"], "test": ["p4"], "train_1": ["p1"], "train_10": ["p1"]},
    )
    out = tmp_path / "out"
    result = run_cli(
        [*PREPARE, "rsna", "--labels", str(labels), "--images", str(images), "--out", str(out), "--splits", str(splits)]
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert f"{splits / 'rsna'}: inconsistent split files: 1 ids are in both train and test: p4" in result.stderr
    assert not out.exists()


@pytest.mark.slow
def test_prepare_siim_rle_running_past_the_image(tmp_path: Path, dicom_writer) -> None:
    images = tmp_path / "images"
    images.mkdir()
    for image_id in ("a", "b", "c"):
        shutil.move(dicom_writer(f"{image_id}.dcm", np.zeros((6, 4), np.uint8)), images / f"{image_id}.dcm")
    rle = tmp_path / "train-rle.csv"
    rle.write_text("ImageId, EncodedPixels\na, 2 3 4 1\nb, -1\nc, 20 3 5 10\n")  # c: 20+3, then +5+10 > 24 pixels
    out = tmp_path / "out"
    args = [
        *PREPARE,
        "siim",
        "--rle",
        str(rle),
        "--images",
        str(images),
        "--out",
        str(out),
        "--split-seed",
        "0",
        "--rle-format",
        "stage1",
    ]
    result = run_cli(args)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert (
        "train-rle.csv, row 4 [c]: EncodedPixels run past the image: they need 38 pixels, the DICOM has 6x4 = 24"
        in result.stderr
    )
    assert not out.exists()
    assert prepare_main([*args[3:], "--on-error", "skip"]) == 0  # the command's entry point, in process
    datalist = json.loads((out / "datalist_segmentation.json").read_text())
    assert {i["id"] for split in ("training", "validation", "test") for i in datalist[split]} == {"a", "b"}
    assert [(p["row"], p["item"]) for p in json.loads((out / "skipped.json").read_text())["problems"]] == [(4, "c")]
