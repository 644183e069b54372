"""Dataset preparation: RSNA, SIIM, MIMIC-CXR and IU X-ray datalists, problem reporting, atomic output."""

from __future__ import annotations

import csv
import json
import os
import shutil
from collections import defaultdict
from pathlib import Path

import numpy as np
import pydicom
import pytest
from monai.data import load_decathlon_datalist
from PIL import Image

from sista_monai.data.datalist import DatasetPreparationError, validate_datalist
from sista_monai.data.prepare import main, prepare_mimic_cxr, prepare_rsna, prepare_siim
from sista_monai.data.splits import load_split
from sista_monai.transforms import clean_report_text

RELEASED_SPLITS = Path(__file__).resolve().parents[2] / "data" / "splits"
RSNA_FILES = [
    "datalist_classification.json",
    "datalist_classification_10pct.json",
    "datalist_classification_1pct.json",
    "datalist_detection.json",
    "datalist_detection_10pct.json",
    "datalist_detection_1pct.json",
    "prepare_report.json",
    "skipped.json",
]


def load(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def by_id(datalist: dict, key: str) -> dict[str, dict]:
    return {item["id"]: item for item in datalist[key]}


def split_of(datalist: dict) -> dict[str, str]:
    return {item["id"]: key for key in ("training", "validation", "test") for item in datalist[key]}


def run(argv: list[str], capsys) -> tuple[int, str]:
    code = main([str(arg) for arg in argv])
    return code, capsys.readouterr().err


def leftovers(folder: Path) -> list[str]:
    return [p.name for p in folder.iterdir() if ".staging-" in p.name or p.name.endswith(".tmp")]


# --------------------------------------------------------------------------------------------- synthetic
def write_rsna_sample(folder: Path, dicom_writer) -> tuple[Path, Path]:
    """Four tiny patients (two positive, one with two boxes) as DICOMs plus their label CSV."""
    images = folder / "images"
    (images / "nested").mkdir(parents=True)
    for index, patient in enumerate(("pa", "pb", "pc", "pd")):
        path = dicom_writer(f"{patient}.dcm", np.full((16, 12), index * 40, np.uint8))
        shutil.move(path, images / ("nested" if patient == "pd" else "") / f"{patient}.dcm")
    labels = folder / "labels.csv"
    labels.write_text(
        "patientId,x,y,width,height,Target\n"
        "pa,,,,,0\n"
        "pb,1.0,2.0,3.0,4.0,1\n"
        "pb,5.5,6.0,2.0,3.0,1\n"
        "pc,,,,,0\n"
        "pd,0,0,12,16,1\n"
    )
    return labels, images


def test_rsna_seeded_split_synthetic(tmp_path, dicom_writer, capsys):
    labels, images = write_rsna_sample(tmp_path, dicom_writer)
    out = tmp_path / "out"
    code, err = run(["rsna", "--labels", labels, "--images", images, "--out", out, "--split-seed", "5"], capsys)
    assert code == 0, err
    assert sorted(p.name for p in out.iterdir()) == RSNA_FILES
    classification = load(out / "datalist_classification.json")
    detection = load(out / "datalist_detection.json")
    assert detection["box_mode"] == "xywh"
    assert split_of(classification) == split_of(detection)
    assert set(split_of(classification)) == {"pa", "pb", "pc", "pd"}
    everything = {**by_id(detection, "training"), **by_id(detection, "validation"), **by_id(detection, "test")}
    assert everything["pb"]["boxes"] == [[1.0, 2.0, 3.0, 4.0], [5.5, 6.0, 2.0, 3.0]]
    assert everything["pb"]["labels"] == [0, 0]
    assert everything["pa"]["boxes"] == [] and everything["pa"]["labels"] == []
    assert everything["pd"]["image"] == os.path.abspath(images / "nested" / "pd.dcm")
    labels_of = {i["id"]: i["label"] for k in ("training", "validation", "test") for i in classification[k]}
    assert labels_of == {"pa": 0, "pb": 1, "pc": 0, "pd": 1}
    for name, task in (("classification", "classification"), ("detection", "detection")):
        main_list = load(out / f"datalist_{name}.json")
        assert validate_datalist(main_list, task, out, check_files=True) == []
        for suffix, key in (("1pct", "training_1"), ("10pct", "training_10")):
            fraction = load(out / f"datalist_{name}_{suffix}.json")
            assert fraction["training"] == main_list[key]
            assert fraction["validation"] == main_list["validation"] and fraction["test"] == main_list["test"]
            assert "training_1" not in fraction
    assert load(out / "skipped.json")["problems"] == []
    assert "seed 5" in load(out / "prepare_report.json")["split"]


def test_rsna_problems_reported_at_once_synthetic(tmp_path, dicom_writer, capsys):
    labels, images = write_rsna_sample(tmp_path, dicom_writer)
    labels.write_text(
        "patientId,x,y,width,height,Target\n"
        "pa,,,,,0\n"
        "pb,1.0,2.0,3.0,4.0,1\n"
        "pb,1.0,2.0,3.0,4.0,1\n"
        "pc,,,,,0\n"
        "pc,1,1,1,1,1\n"
        "px,,,,,yes\n"
        "py,,,,,0\n"
        "pd,1,2,-3,4,1\n"
        "pd,1,2\n"
    )
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("untouched")
    code, err = run(["rsna", "--labels", labels, "--images", images, "--out", out, "--split-seed", "0"], capsys)
    assert code == 2
    assert "Traceback" not in err
    for expected in (
        "row 4 [pb]: duplicate of row 3",
        "row 6 [pc]: contradictory rows for one patient: Target 0 in row(s) 5 but Target 1 in row(s) 6",
        "row 7 [px]: malformed row: Target must be 0 or 1",
        "row 8 [py]: image file py.dcm not found",
        "row 9 [pd]: malformed row: the box needs",
        "row 10 [pd]: malformed row: 3 fields, the header has 6",
    ):
        assert expected in err, expected
    assert "6 problems found; nothing was written" in err
    assert sorted(p.name for p in out.iterdir()) == ["keep.txt"]
    assert leftovers(tmp_path) == []

    code, err = run(
        ["rsna", "--labels", labels, "--images", images, "--out", out, "--split-seed", "0", "--on-error", "skip"],
        capsys,
    )
    assert code == 0, err
    skipped = load(out / "skipped.json")
    assert skipped["items"] == ["pb", "pc", "pd", "px", "py"]
    assert {(p["row"], p["item"]) for p in skipped["problems"]} == {
        (4, "pb"),
        (6, "pc"),
        (7, "px"),
        (8, "py"),
        (9, "pd"),
        (10, "pd"),
    }
    kept = load(out / "datalist_classification.json")
    assert set(split_of(kept)) == {"pa"}
    assert (out / "keep.txt").read_text() == "untouched"


def test_rsna_fatal_problems(tmp_path, dicom_writer):
    labels, images = write_rsna_sample(tmp_path, dicom_writer)
    labels.write_text("patientId,x,y,w,h,Target\npa,,,,,0\n")
    with pytest.raises(DatasetPreparationError) as caught:
        prepare_rsna(labels, tmp_path / "nowhere", tmp_path / "out", split_seed=0, on_error="skip")
    message = str(caught.value)
    assert "row 1: the header lacks the column(s) width, height" in message
    assert "image folder not found" in message
    assert not (tmp_path / "out").exists()


def test_datalist_validation_finds_every_violation():
    item = {"id": "a", "image": "a.dcm", "boxes": [[1, 2, 3, 4]], "labels": [0]}
    datalist = {
        "box_mode": "xywh",
        "training": [item, {"id": "b", "image": "b.dcm", "boxes": [[1, 2, 0, 4]], "labels": []}],
        "validation": [{"id": "a", "image": "a.dcm", "boxes": [], "labels": []}],
        "test": [{"id": "c", "image": "c.dcm", "boxes": [[1, 2, 3]], "labels": [0]}],
        "training_1": [{**item, "labels": [1]}],
        "training_10": [],
    }
    errors = validate_datalist(datalist, "detection")
    assert any("test[0].boxes[0]" in error for error in errors)  # schema errors come first, alone
    datalist["test"] = []
    errors = validate_datalist(datalist, "detection")
    assert any("id 'a' already used in training" in error for error in errors)
    assert any("training_1[0]: id 'a' is not the same item" in error for error in errors)
    assert any("training_10: does not contain every item" in error for error in errors)
    assert any("1 boxes but 0 labels" in error for error in errors)
    assert any("no positive width and height" in error for error in errors)
    pretrain = {"training": [{"id": "x", "report": "text", "labels": [1, 0]}], "validation": [], "test": []}
    errors = validate_datalist({**pretrain, "label_names": ["A"]}, "pretraining")
    assert any("no 'image'" in error for error in errors)
    assert any("2 labels but 1 label_names" in error for error in errors)
    assert validate_datalist({**pretrain, "label_names": ["A", "B"], "text_only": True}, "pretraining") == []


# ------------------------------------------------------------------------------------------- real RSNA
def rsna_rows(realdata: Path) -> list[dict[str, str]]:
    with open(realdata / "rsna" / "stage_2_train_labels_subset.csv", newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.mark.realdata
def test_rsna_real_sample(realdata, tmp_path, capsys):
    out = tmp_path / "rsna"
    labels = realdata / "rsna" / "stage_2_train_labels_subset.csv"
    code, err = run(["rsna", "--labels", labels, "--images", realdata / "rsna" / "dicoms", "--out", out], capsys)
    assert code == 0, err
    classification = load(out / "datalist_classification.json")
    detection = load(out / "datalist_detection.json")
    boxes, targets = defaultdict(list), {}
    for row in rsna_rows(realdata):
        targets[row["patientId"]] = int(row["Target"])
        if row["Target"] == "1":
            boxes[row["patientId"]].append([float(row[k]) for k in ("x", "y", "width", "height")])
    assignment = split_of(classification)
    assert assignment == split_of(detection)
    assert set(assignment) == set(targets)
    released = load_split("rsna")
    names = {"training": "train", "validation": "validation", "test": "test"}
    for key in ("training", "validation", "test"):
        for item in classification[key]:
            assert item["label"] == targets[item["id"]]
            assert item["id"] in released[names[key]]  # keeps the released assignment
            assert Path(item["image"]).is_file()
        for item in detection[key]:
            assert item["boxes"] == boxes.get(item["id"], [])
            assert item["labels"] == [0] * len(item["boxes"])
    for key, name in (("training_1", "train_1"), ("training_10", "train_10")):
        assert {item["id"] for item in classification[key]} == set(targets) & released[name]
    loaded = load_decathlon_datalist(out / "datalist_detection.json", data_list_key="training")
    assert [item["id"] for item in loaded] == [item["id"] for item in detection["training"]]


@pytest.mark.realdata
def test_rsna_real_bad_input(realdata, tmp_path, capsys):
    images = tmp_path / "dicoms"
    images.mkdir()
    for path in sorted((realdata / "rsna" / "dicoms").glob("*.dcm")):
        if not path.name.startswith("00313ee0"):
            (images / path.name).symlink_to(path)
    rows = (realdata / "rsna" / "stage_2_train_labels_subset.csv").read_text().splitlines()
    # rows 1-4: header, two negatives (one without its DICOM), a positive; 5: duplicate of 4; 6: Target 2;
    # 7 + 8: Target 0 and a box for one patient; 9: a truncated row
    broken = rows[:4] + [rows[3], rows[5].replace(",,,,,0", ",,,,,2"), "00704310-78a8-4b38-8475-49f4573b2dbb,,,,,0"]
    broken += [rows[6], rows[8].rsplit(",", 3)[0]]
    labels = tmp_path / "labels.csv"
    labels.write_text("\n".join(broken) + "\n")
    out = tmp_path / "out"
    code, err = run(["rsna", "--labels", labels, "--images", images, "--out", out], capsys)
    assert code == 2
    for expected in (
        "row 3 [00313ee0-9eaa-42f4-b0ab-c148ed3241cd]: image file 00313ee0-9eaa-42f4-b0ab-c148ed3241cd.dcm not found",
        "row 5 [00436515-870c-4b36-a041-de91049b9ab4]: duplicate of row 4",
        "row 6 [00569f44-917d-4c86-a842-81832af98c30]: malformed row: Target must be 0 or 1",
        "row 8 [00704310-78a8-4b38-8475-49f4573b2dbb]: contradictory rows",
        "row 9 [00aecb01-a116-45a2-956c-08d2fa55433f]: malformed row: 3 fields, the header has 6",
    ):
        assert expected in err, expected
    assert not out.exists() and leftovers(tmp_path) == []


@pytest.mark.realdata
def test_damaged_released_split_is_refused(realdata, tmp_path, capsys):
    splits = tmp_path / "splits"
    shutil.copytree(RELEASED_SPLITS, splits)
    with open(splits / "rsna" / "train.txt", "a") as handle:
        handle.write("00313ee0-9eaa-42f4-b0ab-c148ed3241cd\n")
    out = tmp_path / "out"
    code, err = run(
        [
            "rsna",
            "--labels",
            realdata / "rsna" / "stage_2_train_labels_subset.csv",
            "--images",
            realdata / "rsna" / "dicoms",
            "--out",
            out,
            "--splits",
            splits,
        ],
        capsys,
    )
    assert code == 2
    assert "rsna/train.txt does not match its SHA-256" in err
    assert not out.exists()


# ------------------------------------------------------------------------------------------- real SIIM
def independent_decode(encodings: list[str], rows: int, cols: int) -> np.ndarray:
    """Stage-1 SIIM decoding written out plainly: relative starts, column-major, rows of an image merged."""
    mask = np.zeros((rows, cols), np.uint8)
    for encoding in encodings:
        if encoding.strip() == "-1":
            continue
        values = [int(v) for v in encoding.split()]
        position = 0
        for start, length in zip(values[0::2], values[1::2], strict=True):
            position += start
            for pixel in range(position, position + length):
                mask[pixel % rows, pixel // rows] = 1
            position += length
    return mask


@pytest.mark.realdata
def test_siim_real_sample(realdata, tmp_path, capsys):
    out = tmp_path / "siim"
    rle = realdata / "siim" / "train-rle_subset.csv"
    code, err = run(["siim", "--rle", rle, "--images", realdata / "siim", "--out", out], capsys)
    assert code == 0, err
    datalist = load(out / "datalist_segmentation.json")
    assert datalist["rle_format"] == "stage1"
    with open(rle, newline="") as handle:
        rows = list(csv.reader(handle))[1:]
    encodings = defaultdict(list)
    for image_id, encoding in rows:
        encodings[image_id].append(encoding)
    items = {i["id"]: i for k in ("training", "validation", "test") for i in datalist[k]}
    assert set(items) == set(encodings)
    positives = 0
    for image_id, item in items.items():
        header = pydicom.dcmread(item["image"], stop_before_pixels=True)
        assert item["mask"] == f"masks/{image_id}.png"
        with Image.open(out / item["mask"]) as png:
            assert png.mode == "L"
            mask = np.array(png)
        assert mask.shape == (header.Rows, header.Columns)
        assert set(np.unique(mask)) <= {0, 1}
        expected = independent_decode(encodings[image_id], header.Rows, header.Columns)
        assert int(mask.sum()) == int(expected.sum())
        np.testing.assert_array_equal(mask, expected)
        is_positive = any(e.strip() != "-1" for e in encodings[image_id])
        assert (mask.sum() > 0) == is_positive
        positives += is_positive
    assert positives == 2
    assert validate_datalist(datalist, "segmentation", out, check_files=True) == []
    first = {p.name: p.read_bytes() for p in (out / "masks").iterdir()}
    assert run(["siim", "--rle", rle, "--images", realdata / "siim", "--out", out], capsys)[0] == 0
    assert {p.name: p.read_bytes() for p in (out / "masks").iterdir()} == first  # re-running replaces, same bytes


@pytest.mark.realdata
def test_siim_real_bad_input(realdata, tmp_path, capsys):
    rows = (realdata / "siim" / "train-rle_subset.csv").read_text().splitlines()
    negative, positive_a, positive_b, other_negative = rows[1:5]
    other_id = other_negative.split(",")[0]
    broken = [
        rows[0],
        negative,
        positive_a,
        positive_b,
        positive_b,
        f"{other_id},1048000 1000",
        "1.2.3.404,-1",
        "1.2.3.405,12 x",
    ]
    rle = tmp_path / "rle.csv"
    rle.write_text("\n".join(broken) + "\n")
    out = tmp_path / "out"
    code, err = run(["siim", "--rle", rle, "--images", realdata / "siim" / "dicoms", "--out", out], capsys)
    assert code == 2
    for expected in (
        "row 5 [1.2.276.0.7230010.3.1.4.8323329.4904.1517875185.355709]: duplicate of row 4",
        f"row 6 [{other_id}]: EncodedPixels run past the image: they need 1049000 pixels, the DICOM has 1024x1024",
        "row 7 [1.2.3.404]: image file 1.2.3.404.dcm not found",
        "row 7 [1.2.3.404]: not in the released siim split",
        "row 8 [1.2.3.405]: malformed EncodedPixels",
    ):
        assert expected in err, expected
    assert not out.exists() and leftovers(tmp_path) == []

    code, err = run(["siim", "--rle", rle, "--images", realdata / "siim", "--out", out, "--on-error", "skip"], capsys)
    assert code == 0, err
    datalist = load(out / "datalist_segmentation.json")
    kept = {i["id"] for k in ("training", "validation", "test") for i in datalist[k]}
    assert kept == {negative.split(",")[0], positive_a.split(",")[0]}
    assert len(list((out / "masks").iterdir())) == 2
    assert set(load(out / "skipped.json")["items"]) == {
        "1.2.276.0.7230010.3.1.4.8323329.4904.1517875185.355709",
        other_id,
        "1.2.3.404",
        "1.2.3.405",
    }


def test_siim_write_failure_leaves_nothing(tmp_path, dicom_writer, monkeypatch):
    images = tmp_path / "images"
    images.mkdir()
    for name in ("a", "b"):
        shutil.move(dicom_writer(f"{name}.dcm", np.zeros((6, 4), np.uint8)), images / f"{name}.dcm")
    rle = tmp_path / "rle.csv"
    rle.write_text("ImageId, EncodedPixels\na,2 3 4 1\nb, -1\n")
    out = tmp_path / "out"
    out.mkdir()
    (out / "datalist_segmentation.json").write_text("old")
    real_save = Image.Image.save
    calls = []

    def failing_save(self, *args, **kwargs):
        calls.append(1)
        if len(calls) > 1:
            raise OSError("disk full")
        return real_save(self, *args, **kwargs)

    monkeypatch.setattr(Image.Image, "save", failing_save)
    with pytest.raises(OSError, match="disk full"):
        prepare_siim(rle, images, out, split_seed=0)
    assert sorted(p.name for p in out.iterdir()) == ["datalist_segmentation.json"]
    assert (out / "datalist_segmentation.json").read_text() == "old"
    assert leftovers(tmp_path) == []

    monkeypatch.setattr(Image.Image, "save", real_save)
    report = prepare_siim(rle, images, out, split_seed=0, rle_format="stage1")
    assert report["positives"] == 1
    with Image.open(out / "masks" / "a.png") as png:
        mask = np.array(png)
    expected = np.zeros((6, 4), np.uint8)
    expected[2:5, 0] = 1  # pixels 2, 3, 4 of column 0
    expected[3, 1] = 1  # pixel 9 = row 3 of column 1
    np.testing.assert_array_equal(mask, expected)


# -------------------------------------------------------------------------------------------- MIMIC-CXR
CHEXPERT_NAMES = [
    "Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Enlarged Cardiomediastinum", "Fracture",
    "Lung Lesion", "Lung Opacity", "No Finding", "Pleural Effusion", "Pleural Other", "Pneumonia",
    "Pneumothorax", "Support Devices",
]  # fmt: skip

GOOD_REPORT = (
    "                                 FINAL REPORT\n EXAMINATION:  CHEST (PA AND LAT)\n\n INDICATION:  ___F with"
    " cough\n\n FINDINGS:\n \n Heart size is normal.  No pneumothorax.\n\n IMPRESSION:\n \n 1. No acute"
    " cardiopulmonary process.\n"
)
# (subject, study, dicom_id, view, suffix, split, report or None)
MIMIC_IMAGES = [
    ("10000001", "50000001", "aaaa-1", "PA", ".dcm", "train", GOOD_REPORT),
    ("10000001", "50000001", "aaaa-2", "LATERAL", ".dcm", "train", GOOD_REPORT),
    ("10000001", "50000002", "bbbb-1", "AP", ".jpg", "validate", "IMPRESSION: Small left effusion."),
    ("10000002", "50000003", "cccc-1", "PA", ".jpg", "test", "Heart normal, no effusion."),
    ("11000003", "50000004", "dddd-1", "PA", ".jpg", "train", None),
    ("11000003", "50000005", "eeee-1", "PA", ".jpg", "train", "IMPRESSION: ___\nFINDINGS: ___"),
    ("11000004", "50000006", "ffff-1", "AP", ".png", "train", "FINDINGS: Clear lungs."),
]


def build_mimic(root: Path, dicom_writer) -> dict[str, Path]:
    """A tiny MIMIC-CXR layout: images under root/files, reports under a separate folder, the three CSVs."""
    reports = root / "reports"
    metadata = ["dicom_id,subject_id,study_id,PerformedProcedureStepDescription,ViewPosition,Rows,Columns"]
    split = ["dicom_id,study_id,subject_id,split"]
    for subject, study, dicom_id, view, suffix, split_name, report in MIMIC_IMAGES:
        folder = root / "images" / "files" / f"p{subject[:2]}" / f"p{subject}" / f"s{study}"
        folder.mkdir(parents=True, exist_ok=True)
        pixels = np.full((10, 8), 100, np.uint8)
        if suffix == ".dcm":
            shutil.move(dicom_writer(f"{dicom_id}.dcm", pixels, ViewPosition=view), folder / f"{dicom_id}.dcm")
        else:
            Image.fromarray(pixels).save(folder / f"{dicom_id}{suffix}")
        if report is not None:
            text_folder = reports / "files" / f"p{subject[:2]}" / f"p{subject}"
            text_folder.mkdir(parents=True, exist_ok=True)
            (text_folder / f"s{study}.txt").write_text(report)
        metadata.append(f"{dicom_id},{subject},{study},CHEST,{view},10,8")
        split.append(f"{dicom_id},{study},{subject},{split_name}")
    chexpert = ["subject_id,study_id," + ",".join(CHEXPERT_NAMES)]
    values = {"50000001": ["1.0", "-1.0"] + [""] * 6 + ["0.0"] + [""] * 5, "50000002": [""] * 9 + ["1.0"] + [""] * 4}
    for study in ("50000003", "50000004", "50000005"):
        values[study] = [""] * 8 + ["1.0"] + [""] * 5
    for subject, study, *_ in MIMIC_IMAGES:
        if study in values:
            chexpert.append(f"{subject},{study}," + ",".join(values.pop(study)))
    files = {"metadata": metadata, "split": split, "chexpert": chexpert}
    paths = {}
    for name, lines in files.items():
        paths[name] = root / f"{name}.csv"
        paths[name].write_text("\n".join(lines) + "\n")
    return {"root": root / "images", "reports": reports, **paths}


def test_mimic_cxr_synthetic(tmp_path, dicom_writer, capsys):
    paths = build_mimic(tmp_path / "mimic", dicom_writer)
    out = tmp_path / "out"
    argv = ["mimic-cxr", "--root", paths["root"], "--reports", paths["reports"], "--metadata", paths["metadata"]]
    argv += ["--split", paths["split"], "--chexpert", paths["chexpert"], "--out", out]
    code, err = run(argv, capsys)
    assert code == 0, err
    datalist = load(out / "datalist_pretrain.json")
    assert validate_datalist(datalist, "pretraining", out, check_files=True) == []
    assert datalist["label_names"] == CHEXPERT_NAMES
    assert datalist["label_mapping"] == {"1": 1, "0": 0, "blank": 0, "-1": 1}
    assert split_of(datalist) == {"aaaa-1": "training", "bbbb-1": "validation"}
    first = datalist["training"][0]
    assert first["report"] == "No acute cardiopulmonary process. Heart size is normal. No pneumothorax."
    assert first["study_id"] == "s50000001"
    assert first["labels"] == [1, 1] + [0] * 12  # -1 (uncertain) -> 1, blank -> 0, 0.0 -> 0
    assert datalist["validation"][0]["labels"][CHEXPERT_NAMES.index("Pleural Effusion")] == 1
    report = load(out / "prepare_report.json")
    assert report["filtered"] == {"view LATERAL not in PA/AP": 1}
    dropped = {reason: (r["studies"], r["images"], r["ids"]) for reason, r in report["dropped"].items()}
    assert dropped == {
        "no IMPRESSION or FINDINGS section": (1, 1, ["s50000003"]),
        "report file not found": (1, 1, ["s50000004"]),
        "IMPRESSION and FINDINGS are empty after cleaning": (1, 1, ["s50000005"]),
        "no CheXpert labels for the study": (1, 1, ["s50000006"]),
    }
    assert "___" not in json.dumps(datalist) and "cough" not in json.dumps(datalist)

    code, err = run(["mimic-cxr", "--root", paths["root"], "--reports", paths["reports"], "--out", out], capsys)
    assert code == 2 and "JPG/PNG images have no view position without --metadata" in err
    zeros = prepare_mimic_cxr(
        paths["root"], tmp_path / "all", reports=paths["reports"], views=None, uncertain="zeros", split_seed=0
    )
    assert zeros["items"] == 4 and zeros["counts"]["training"] + zeros["counts"]["validation"] >= 1
    everything = load(tmp_path / "all" / "datalist_pretrain.json")
    ids = {i["id"] for k in ("training", "validation", "test") for i in everything[k]}
    assert ids == {"aaaa-1", "aaaa-2", "bbbb-1", "ffff-1"}
    assert "label_names" not in everything


def test_mimic_cxr_problems(tmp_path, dicom_writer, capsys):
    paths = build_mimic(tmp_path / "mimic", dicom_writer)
    with open(paths["metadata"], "a") as handle:
        handle.write("gone-1,10000009,50000009,CHEST,PA,10,8\naaaa-1,10000001,50000001,CHEST,PA,10,8\n")
    with open(paths["split"], "a") as handle:
        handle.write("zzzz-1,50000001,10000001,holdout\n")
    out = tmp_path / "out"
    argv = ["mimic-cxr", "--root", paths["root"], "--reports", paths["reports"], "--metadata", paths["metadata"]]
    code, err = run(argv + ["--split", paths["split"], "--out", out], capsys)
    assert code == 2
    assert "metadata.csv, row 9 [gone-1]: image file gone-1.dcm|.jpg not found" in err
    assert "metadata.csv, row 10 [aaaa-1]: duplicate of row 2" in err
    assert "split.csv, row 9 [zzzz-1]: malformed row: split must be one of train, validate, test" in err
    assert "[gone-1]: image not in the split CSV" in err
    assert not out.exists()


# --------------------------------------------------------------------------------------------- IU X-ray
@pytest.mark.realdata
def test_iu_xray_real(realdata, tmp_path, capsys):
    out = tmp_path / "iu"
    iu = realdata / "iu_xray"
    code, err = run(["iu-xray", "--reports", iu / "reports", "--images", iu / "images", "--out", out], capsys)
    assert code == 0, err
    datalist = load(out / "datalist_pretrain.json")
    assert validate_datalist(datalist, "pretraining", out, check_files=True) == []
    with open(iu / "pairs.csv", newline="") as handle:
        pairs = [row for row in csv.DictReader(handle) if row["present"] == "True"]
    items = {i["id"]: i for k in ("training", "validation", "test") for i in datalist[k]}
    assert set(items) == {row["image_id"] for row in pairs}
    names = datalist["label_names"]
    for row in pairs:
        item = items[row["image_id"]]
        assert item["mesh"] == row["mesh_major"].split(";")
        headings = {term.split("/")[0] for term in item["mesh"]}
        assert {names[i] for i, value in enumerate(item["labels"]) if value} == headings
        assert item["report_id"] == "CXR" + row["report_xml"].removesuffix(".xml")
        assert item["report"] == clean_report_text(f"{row['impression']} {row['findings']}")  # IMPRESSION first
        assert "XXXX" not in item["report"] and item["report"]
    assignment = split_of(datalist)
    assert assignment["CXR7_IM-2263-1001"] == assignment["CXR7_IM-2263-2001"]  # split by report
    report = load(out / "prepare_report.json")
    assert report["report_files"] == 1979 and report["reports_kept"] == 3
    assert report["dropped"]["image file not found"]["images"] > 0
    loaded = load_decathlon_datalist(out / "datalist_pretrain.json", data_list_key="training")
    assert all(Path(item["image"]).is_file() for item in loaded)

    text_only = tmp_path / "iu_text"
    code, err = run(["iu-xray", "--reports", iu / "reports", "--out", text_only], capsys)
    assert code == 0, err
    reports = load(text_only / "datalist_pretrain.json")
    assert reports["text_only"] is True
    count = sum(len(reports[k]) for k in ("training", "validation", "test"))
    dropped = load(text_only / "prepare_report.json")["dropped"]
    assert count + dropped["IMPRESSION and FINDINGS are empty after cleaning"]["reports"] == 1979
    assert all("image" not in item for item in reports["training"])


def test_iu_xray_bad_xml(tmp_path, capsys):
    reports = tmp_path / "reports"
    reports.mkdir()
    (reports / "1.xml").write_text("<eCitation><broken></eCitation>")
    (reports / "2.xml").write_text(
        '<eCitation><uId id="CXR2"/><MedlineCitation><Article><Abstract>'
        '<AbstractText Label="FINDINGS">Clear lungs.</AbstractText>'
        '<AbstractText Label="IMPRESSION">Normal chest.</AbstractText>'
        "</Abstract></Article></MedlineCitation><MeSH><major>normal</major></MeSH>"
        '<parentImage id="CXR2_IM-1"/></eCitation>'
    )
    code, err = run(["iu-xray", "--reports", reports, "--out", tmp_path / "out"], capsys)
    assert code == 2 and "1.xml [1]: malformed XML" in err
    code, err = run(["iu-xray", "--reports", reports, "--out", tmp_path / "out", "--on-error", "skip"], capsys)
    assert code == 0, err
    datalist = load(tmp_path / "out" / "datalist_pretrain.json")
    items = [i for k in ("training", "validation", "test") for i in datalist[k]]
    expected = {"id": "CXR2", "image_ids": ["CXR2_IM-1"], "labels": [1], "mesh": ["normal"]}
    assert items == [{**expected, "report": "Normal chest. Clear lungs."}]
    assert load(tmp_path / "out" / "skipped.json")["items"] == ["1"]
