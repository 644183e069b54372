"""Split drawing and the released split files in data/splits."""

from __future__ import annotations

import csv
import gzip
import io
import shutil
import zipfile
from collections import defaultdict
from pathlib import Path

import pytest

from sista_monai.data.splits import (
    CHECKSUM_FILE,
    DATASETS,
    SPLIT_FILES,
    SplitError,
    default_splits_dir,
    generate_released_splits,
    load_split,
    main,
    make_split,
)

RELEASED = Path(__file__).resolve().parents[2] / "data" / "splits"
EXPECTED_IDS = {"rsna": 26684, "siim": 12047}


def check_invariants(split, ids):
    train, validation, test = split["train"], split["validation"], split["test"]
    assert not train & validation and not train & test and not validation & test
    assert train | validation | test == set(ids)
    assert split["train_1"] <= split["train_10"] <= train


def test_make_split_is_stratified_nested_and_seeded():
    strata = {f"id{i:04d}": int(i % 5 == 0) for i in range(1000)}  # 200 positives
    split = make_split(strata, seed=0)
    check_invariants(split, strata)
    assert (len(split["train"]), len(split["validation"]), len(split["test"])) == (700, 150, 150)
    assert sum(strata[i] for i in split["train"]) == 140  # round(0.7 * 200)
    assert sum(strata[i] for i in split["test"]) == 30
    assert len(split["train_1"]) == 7 and len(split["train_10"]) == 70  # 1 % and 10 % of each stratum
    assert {strata[i] for i in split["train_1"]} == {0, 1}

    reordered = dict(reversed(list(strata.items())))
    assert make_split(reordered, seed=0).subsets == split.subsets  # input order does not matter
    other = make_split(strata, seed=1)
    assert other["train"] != split["train"] and other["train_1"] != split["train_1"]


def test_make_split_small_and_custom_fractions():
    strata = {f"p{i}": i % 2 for i in range(6)}
    split = make_split(strata, seed=3)
    check_invariants(split, strata)
    assert all(len(split[name]) >= 1 for name in ("train_1", "train_10"))
    pretraining = make_split({f"s{i}": 0 for i in range(500)}, 0, ("0.98", "0.01", "0.01"), {})
    assert (len(pretraining["train"]), len(pretraining["validation"]), len(pretraining["test"])) == (490, 5, 5)
    assert set(pretraining.subsets) == {"train", "validation", "test"}
    with pytest.raises(ValueError, match="summing to 1"):
        make_split(strata, 0, (0.5, 0.2, 0.2))


@pytest.mark.parametrize("dataset", DATASETS)
def test_released_split_files(dataset):
    assert default_splits_dir() == RELEASED
    split = load_split(dataset)  # verifies SHA256SUMS
    ids = split.ids
    assert len(ids) == EXPECTED_IDS[dataset]
    check_invariants(split, ids)
    for name in SPLIT_FILES:
        lines = (RELEASED / dataset / f"{name}.txt").read_text().splitlines()
        assert lines == sorted(set(lines)) and all(line.strip() == line and line for line in lines)
    assert abs(len(split["train"]) / len(ids) - 0.70) < 0.001
    assert abs(len(split["train_1"]) / len(split["train"]) - 0.01) < 0.001
    assert abs(len(split["train_10"]) / len(split["train"]) - 0.10) < 0.001


def test_damaged_split_files_are_refused(tmp_path):
    copy = tmp_path / "splits"
    shutil.copytree(RELEASED, copy)
    train = copy / "siim" / "train.txt"
    train.write_text(train.read_text().replace("\n", "\n\n", 1))
    with pytest.raises(SplitError, match=r"siim/train.txt does not match its SHA-256"):
        load_split("siim", copy)
    load_split("rsna", copy)  # the other dataset is intact

    sums = copy / CHECKSUM_FILE
    sums.write_text("".join(line + "\n" for line in sums.read_text().splitlines() if "rsna/test.txt" not in line))
    with pytest.raises(SplitError, match=r"rsna/test.txt is not listed"):
        load_split("rsna", copy)
    (copy / CHECKSUM_FILE).unlink()
    with pytest.raises(SplitError, match="cannot read the split checksums"):
        load_split("rsna", copy)


def read_label_ids(realdata):
    """Independent reading of the full label files: id -> positive."""
    with zipfile.ZipFile(realdata / "labels" / "kaggle_stage_2_train_labels.csv.zip") as archive:
        text = archive.read("stage_2_train_labels.csv").decode()
    rsna_rows = list(csv.DictReader(io.StringIO(text)))
    rsna = defaultdict(int)
    for row in rsna_rows:
        rsna[row["patientId"]] |= int(row["Target"])
    with gzip.open(realdata / "labels" / "siim-pneumothorax-train-rle.csv.gz", "rt") as handle:
        siim_rows = list(csv.reader(handle))[1:]
    siim = defaultdict(int)
    for image_id, encoding in siim_rows:
        siim[image_id] |= int(encoding.strip() != "-1")
    assert (len(rsna_rows), len(siim_rows)) == (30227, 12954)
    return {"rsna": dict(rsna), "siim": dict(siim)}


@pytest.mark.realdata
def test_released_splits_match_the_label_files(realdata):
    labels = read_label_ids(realdata)
    for dataset in DATASETS:
        split = load_split(dataset)
        assert len(labels[dataset]) == EXPECTED_IDS[dataset]
        assert split.ids == set(labels[dataset])
        positives = sum(labels[dataset].values())
        train_share = sum(labels[dataset][i] for i in split["train"]) / len(split["train"])
        assert abs(train_share - positives / len(labels[dataset])) < 0.002  # stratified
        assert {labels[dataset][i] for i in split["train_1"]} == {0, 1}


@pytest.mark.realdata
def test_regenerating_gives_the_committed_files(realdata, tmp_path):
    out = tmp_path / "splits"
    code = main(
        [
            "--rsna-labels",
            str(realdata / "labels" / "kaggle_stage_2_train_labels.csv.zip"),
            "--siim-rle",
            str(realdata / "labels" / "siim-pneumothorax-train-rle.csv.gz"),
            "--out",
            str(out),
        ]
    )
    assert code == 0
    # the released files: SHA256SUMS, README.md and every file SHA256SUMS lists (not the package marker
    # __init__.py that installs the folder as sista_monai.data.released_splits)
    listed = [line.split("  ", 1)[1] for line in (RELEASED / CHECKSUM_FILE).read_text().splitlines() if line]
    committed = sorted(Path(name) for name in [CHECKSUM_FILE, "README.md", *listed])
    assert len(committed) == 2 + len(DATASETS) * len(SPLIT_FILES)
    generated = sorted(p.relative_to(out) for p in out.rglob("*") if p.is_file())
    assert generated == committed
    for relative in committed:
        assert (out / relative).read_bytes() == (RELEASED / relative).read_bytes(), relative


@pytest.mark.realdata
def test_plain_csv_gives_the_same_split(realdata, tmp_path):
    plain = tmp_path / "stage_2_train_labels.csv"
    with zipfile.ZipFile(realdata / "labels" / "kaggle_stage_2_train_labels.csv.zip") as archive:
        plain.write_bytes(archive.read("stage_2_train_labels.csv"))
    splits = generate_released_splits(
        plain, realdata / "labels" / "siim-pneumothorax-train-rle.csv.gz", tmp_path / "out", seed=0
    )
    assert splits["rsna"].subsets == load_split("rsna").subsets
    assert (tmp_path / "out" / "README.md").read_bytes() == (RELEASED / "README.md").read_bytes()


def test_cli_reports_bad_label_files(tmp_path, capsys):
    labels = tmp_path / "labels.csv"
    labels.write_text("patientId,x,y,width,height,Target\na,,,,,0\na,,,,,0\nb,1,2,3,4,1\nb,,,,,0\n")
    rle = tmp_path / "rle.csv"
    rle.write_text("ImageId, EncodedPixels\nimg,-1\n")
    out = tmp_path / "out"
    assert main(["--rsna-labels", str(labels), "--siim-rle", str(rle), "--out", str(out)]) == 2
    message = capsys.readouterr().err
    assert "row 3 [a]: duplicate of row 2" in message
    assert "row 5 [b]: contradictory rows" in message
    assert not out.exists()
