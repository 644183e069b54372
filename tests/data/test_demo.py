"""Tests of the synthetic demo data: reproducibility, DICOM encodings, ground truth, reports, datalists, PHI."""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pydicom
import pytest
import torch
from monai.data import load_decathlon_datalist
from monai.transforms import LoadImage
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian, JPEG2000Lossless, RLELossless
from scipy import ndimage

import sista_monai.data.demo as demo
from sista_monai.data.datalist import dump_json, validate_datalist
from sista_monai.data.demo import LABEL_NAMES, ZONE_NAMES, ensure_demo_data, main, plan_studies, render_study
from sista_monai.data.demo.reports import ReportFinding, compose_report
from sista_monai.data.tokenizer import SPECIAL_TOKENS, learn_wordpiece_vocab
from sista_monai.transforms import LoadChestXray

N, SIZE, SEED = 24, 128, 0
SPLITS = ("training", "validation", "test")
DATALISTS = ("pretrain", "classification", "segmentation", "detection")

# the test's own reading of a report (independent of the grammar module's word lists)
WORDS = {
    "Lung Opacity": ("opacit", "consolidation", "pneumonia", "infiltrate", "airspace disease"),
    "Pneumothorax": ("pneumothorax",),
    "Pleural Effusion": ("effusion",),
    "Cardiomegaly": ("cardiomegaly", "enlarged", "enlargement"),
}
NEGATION = re.compile(r"\b(no|not|without)\b")


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return ensure_demo_data(tmp_path_factory.mktemp("a") / "demo", n=N, size=SIZE, seed=SEED)


@pytest.fixture(scope="module")
def phi_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return ensure_demo_data(tmp_path_factory.mktemp("phi") / "demo", n=N, size=SIZE, seed=SEED, plant_phi=True)


@pytest.fixture(scope="module")
def items(demo_dir: Path) -> list[dict]:
    datalist = json.loads((demo_dir / "datalist_pretrain.json").read_text())
    return sorted((i for s in SPLITS for i in datalist[s]), key=lambda i: i["id"])


@pytest.fixture(scope="module")
def loaded(demo_dir: Path, items: list[dict]) -> dict[str, np.ndarray]:
    """Every image through the project's loader: ``(W, H)`` arrays indexed ``[x, y]``."""
    load = LoadChestXray()
    out = {}
    for item in items:
        image = load(str(demo_dir / item["image"]))
        assert tuple(image.shape) == (1, SIZE, SIZE) and image.dtype == torch.float32
        out[item["id"]] = image[0].numpy()
    return out


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _region(image_wh: np.ndarray, box: list[int]) -> np.ndarray:
    x, y, w, h = box
    return image_wh[x : x + w, y : y + h]


# ------------------------------------------------------------------------------------ reproducibility
def test_same_seed_same_bytes_other_seed_other_data(demo_dir: Path, tmp_path: Path) -> None:
    again = ensure_demo_data(tmp_path / "again", n=N, size=SIZE, seed=SEED)
    first, second = _files(demo_dir), _files(again)
    assert sorted(first) == sorted(second)
    assert len([k for k in first if k.startswith("images/")]) == N
    assert [k for k in first if first[k] != second[k]] == []

    other = _files(ensure_demo_data(tmp_path / "other", n=N, size=SIZE, seed=SEED + 1))
    changed = [k for k in first if k.startswith("images/") and first[k] != other.get(k)]
    assert len(changed) == N
    assert first["datalist_pretrain.json"] != other["datalist_pretrain.json"]


def test_manifest_lists_parameters_labels_and_hashes(demo_dir: Path, items: list[dict]) -> None:
    manifest = json.loads((demo_dir / "manifest.json").read_text())
    assert manifest["parameters"] == {"n": N, "size": SIZE, "seed": SEED, "plant_phi": False}
    assert manifest["label_names"] == list(LABEL_NAMES)
    assert set(manifest["files"]) == set(_files(demo_dir)) - {"manifest.json"}
    counts = np.array([i["labels"] for i in items]).sum(axis=0)
    assert manifest["counts"]["labels"] == {name: int(c) for name, c in zip(LABEL_NAMES, counts, strict=True)}
    assert sum(manifest["counts"]["splits"].values()) == N
    # a sensible mixture: normal studies and every finding present
    assert 0.15 * N <= counts[0] <= 0.6 * N and (counts[1:] > 0).all()


def test_ensure_is_idempotent_repairs_and_refuses_foreign_folders(demo_dir: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "demo"
    shutil.copytree(demo_dir, out)
    stamps = {p: p.stat().st_mtime_ns for p in out.rglob("*")}
    assert ensure_demo_data(out, n=N, size=SIZE, seed=SEED) == out
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*")} == stamps

    (out / "reports" / "demo_0003.txt").write_text("damaged")
    ensure_demo_data(out, n=N, size=SIZE, seed=SEED)
    assert _files(out) == _files(demo_dir)

    assert main(["--out", str(out), "--n", "20", "--size", "64", "--seed", "3"]) == 0
    assert "20 studies" in capsys.readouterr().out
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["parameters"] == {"n": 20, "size": 64, "seed": 3, "plant_phi": False}
    assert pydicom.dcmread(out / "images" / "demo_0000.dcm").Rows == 64
    assert sorted(p.name for p in tmp_path.iterdir()) == ["demo"]  # no staging folder left behind

    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "mine.txt").write_text("mine")
    with pytest.raises(FileExistsError):
        ensure_demo_data(foreign, n=20, size=64)
    assert (foreign / "mine.txt").read_text() == "mine"


def test_interrupted_generation_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(demo.generate, "train_wordpiece_tokenizer", interrupted)
    with pytest.raises(KeyboardInterrupt):
        ensure_demo_data(tmp_path / "demo", n=20, size=64)
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------------------------------- DICOM
def test_dicom_encodings_vary_and_every_file_loads_as_drawn(demo_dir: Path, items: list[dict], loaded: dict) -> None:
    plans = {p.study_id: p for p in plan_studies(N, SEED)}
    kinds = ("pi", "bits", "ts", "rescale", "window", "spacing", "view", "modality")
    seen: dict[str, Counter] = {k: Counter() for k in kinds}
    for item in items:
        path = demo_dir / item["image"]
        assert path.read_bytes()[128:132] == b"DICM"
        ds = pydicom.dcmread(path)
        assert ds.SOPClassUID == ds.file_meta.MediaStorageSOPClassUID == demo.dicom._SOP_CLASS[ds.Modality]
        assert ds.SOPInstanceUID == ds.file_meta.MediaStorageSOPInstanceUID
        assert (ds.Rows, ds.Columns) == (SIZE, SIZE) and list(ds.PatientOrientation) == ["L", "F"]
        assert ds.PatientName == "" and "InstitutionName" not in ds and ds.PatientID.startswith("DEMO")
        seen["pi"][ds.PhotometricInterpretation] += 1
        seen["bits"][(ds.BitsAllocated, ds.BitsStored)] += 1
        seen["ts"][ds.file_meta.TransferSyntaxUID] += 1
        seen["rescale"]["RescaleSlope" in ds] += 1
        seen["window"]["WindowCenter" in ds] += 1
        seen["spacing"]["PixelSpacing" if "PixelSpacing" in ds else "ImagerPixelSpacing"] += 1
        seen["view"][ds.ViewPosition] += 1
        seen["modality"][ds.Modality] += 1
        if ds.Modality == "DX":
            assert "RescaleSlope" in ds  # type 1 in the DX image module
        if "WindowCenter" in ds:  # the window covers the data
            values = ds.pixel_array * float(ds.get("RescaleSlope", 1)) + float(ds.get("RescaleIntercept", 0))
            centre, width = float(ds.WindowCenter), float(ds.WindowWidth)
            low, high = centre - width / 2, centre + width / 2
            assert low <= values.min() and values.max() <= high

        # the loader (modality LUT, VOI, MONOCHROME1 inversion) gives back the drawn image, transposed to (W, H)
        drawn = render_study(plans[item["id"]], SIZE, SEED).image
        image = loaded[item["id"]]
        assert 0.0 <= image.min() and image.max() <= 1.0
        assert np.corrcoef(image.ravel(), drawn.T.ravel())[0, 1] > 0.98, (item["id"], ds.PhotometricInterpretation)

    assert min(seen["pi"].values()) >= 6 and set(seen["pi"]) == {"MONOCHROME1", "MONOCHROME2"}
    assert {(8, 8), (16, 12), (16, 16)} <= set(seen["bits"]) and len(seen["bits"]) >= 5
    assert set(seen["ts"]) == {ExplicitVRLittleEndian, ImplicitVRLittleEndian, RLELossless, JPEG2000Lossless}
    for key in ("rescale", "window", "spacing", "view", "modality"):
        assert len(seen[key]) == 2 and min(seen[key].values()) >= 2, (key, seen[key])


# -------------------------------------------------------------------------------------- ground truth
def test_sides_follow_the_patient(items: list[dict], loaded: dict) -> None:
    for item in items:
        for zone, (x, _y, w, _h) in item["zones"].items():
            centre = x + w / 2
            assert (centre < SIZE / 2) if zone.startswith("right") else (centre > SIZE / 2), (item["id"], zone)
        right, left = item["zones"]["right upper"], item["zones"]["left upper"]
        thorax = left[0] + left[2] - right[0]
        for finding in item["findings"]:
            x, _, w, _ = finding["box"]
            if finding["zone"]:
                assert (x + w / 2 < SIZE / 2) == finding["zone"].startswith("right")
            else:  # cardiomegaly: the heart is wider than half the thorax and lies towards the patient's left
                assert finding["name"] == "Cardiomegaly" and w / thorax > 0.5 and x + w / 2 > SIZE / 2
    # the heart bulges towards the image's right (the patient's left) in every normal study
    normal = [i for i in items if i["labels"][0] == 1]
    assert len(normal) >= 4
    rows = slice(int(0.50 * SIZE), int(0.68 * SIZE))
    for item in normal:
        image = loaded[item["id"]]
        image_right = image[int(0.56 * SIZE) : int(0.68 * SIZE), rows].mean()
        image_left = image[int(0.32 * SIZE) : int(0.44 * SIZE), rows].mean()
        assert image_right > image_left + 0.03, item["id"]


def test_zones_are_six_thirds_of_the_lungs(items: list[dict]) -> None:
    for item in items:
        zones = item["zones"]
        assert sorted(zones) == sorted(ZONE_NAMES)
        for side in ("right", "left"):
            upper, middle, lower = (zones[f"{side} {lv}"] for lv in ("upper", "middle", "lower"))
            assert upper[0] == middle[0] == lower[0] and upper[2] == middle[2] == lower[2]
            assert upper[1] + upper[3] == middle[1] and middle[1] + middle[3] == lower[1]
            assert max(z[3] for z in (upper, middle, lower)) - min(z[3] for z in (upper, middle, lower)) <= 1


def test_each_finding_changes_the_image_inside_its_box_or_mask() -> None:
    """Render each study with and without one finding (identical otherwise) and locate the difference."""
    checked = Counter()
    for plan in plan_studies(N, SEED):
        with_all = render_study(plan, SIZE, SEED)
        for finding, truth in zip(plan.findings, with_all.findings, strict=True):
            assert truth["name"] == finding.name
            others = tuple(f for f in plan.findings if f is not finding)
            without = render_study(dataclasses.replace(plan, findings=others), SIZE, SEED)
            effect = with_all.image - without.image
            x, y, w, h = truth["box"]
            box = np.zeros(effect.shape, dtype=bool)
            box[y : y + h, x : x + w] = True
            if finding.name == "Pneumothorax":
                mask = with_all.pneumothorax_mask.astype(bool)
                assert _bbox_of(mask) == truth["box"]
                assert effect[mask].mean() < -0.02  # dark, without lung markings
                line = ndimage.binary_dilation(mask, iterations=2) & ~mask & box
                assert effect[line].mean() > effect[mask].mean() + 0.03  # the pleural line is brighter
            else:
                assert effect[box].mean() > 0.05, (plan.study_id, finding.name)
                near = ndimage.binary_dilation(box, iterations=3)
                assert np.abs(effect)[near].sum() > 0.8 * np.abs(effect).sum(), (plan.study_id, finding.name)
            checked[finding.name] += 1
        if not any(f.name == "Pneumothorax" for f in plan.findings):
            assert not with_all.pneumothorax_mask.any()
        ratio = with_all.cardiothoracic_ratio
        assert (ratio > 0.5) == any(f.name == "Cardiomegaly" for f in plan.findings)
    assert set(checked) == set(LABEL_NAMES[1:])


def _bbox_of(mask: np.ndarray) -> list[int]:
    ys, xs = np.nonzero(mask)
    return [int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1)]


def test_loaded_images_show_findings_where_the_ground_truth_says(
    demo_dir: Path, items: list[dict], loaded: dict
) -> None:
    """Across studies (different patients and scanners): findings brighten their box / darken their mask."""
    opacity_margins, effusion_margins = [], []
    for item in items:
        for finding in item["findings"]:
            if finding["name"] not in ("Lung Opacity", "Consolidation", "Pleural Effusion"):
                continue
            side = finding["zone"].split()[0]
            clean = [o for o in items if not any((g["zone"] or "").startswith(side) for g in o["findings"])]
            baseline = np.median([_region(loaded[o["id"]], finding["box"]).mean() for o in clean])
            margin = _region(loaded[item["id"]], finding["box"]).mean() - baseline
            (effusion_margins if finding["name"] == "Pleural Effusion" else opacity_margins).append(margin)
    assert np.mean(opacity_margins) > 0.08 and np.mean(np.array(opacity_margins) > 0) >= 0.8
    assert np.mean(effusion_margins) > 0.05

    reader = LoadImage(reader="PILReader", image_only=True)
    normal = [i for i in items if i["labels"][0] == 1]
    for item in items:
        mask = reader(str(demo_dir / "masks" / f"{item['id']}.png")).numpy()
        assert mask.shape == (SIZE, SIZE) and set(np.unique(mask)) <= {0, 1}
        ptx = [f for f in item["findings"] if f["name"] == "Pneumothorax"]
        assert bool(mask.any()) == bool(ptx) == bool(item["labels"][3])
        if ptx:
            xs, ys = np.nonzero(mask)  # (W, H) layout: first index is x
            assert [int(xs.min()), int(ys.min()), int(np.ptp(xs) + 1), int(np.ptp(ys) + 1)] == ptx[0]["box"]
            inside = loaded[item["id"]][mask > 0].mean()
            elsewhere = np.median([loaded[o["id"]][mask > 0].mean() for o in normal])
            assert inside < elsewhere, item["id"]


# ------------------------------------------------------------------------------------------- reports
def _sentences(report: str) -> list[str]:
    text = " ".join(report.split())
    findings = re.search(r"FINDINGS:(.*?)IMPRESSION:", text)
    impression = re.search(r"IMPRESSION:(.*)$", text)
    assert impression, "every report has an IMPRESSION"
    body = (findings.group(1) if findings else "") + " " + impression.group(1)
    return [s.strip().lower() for s in re.split(r"(?<=[.;])\s+", body) if s.strip()]


def _mentions(report: str) -> dict[str, set[bool]]:
    """label -> {True if mentioned positively, False if negated}."""
    out: dict[str, set[bool]] = {name: set() for name in WORDS}
    for sentence in _sentences(report):
        negated = bool(NEGATION.search(sentence))
        for name, words in WORDS.items():
            if any(word in sentence for word in words):
                out[name].add(not negated)
    return out


def test_reports_agree_with_labels_and_sides(demo_dir: Path, items: list[dict]) -> None:
    for item in items:
        report = item["report"]
        assert (demo_dir / "reports" / f"{item['id']}.txt").read_text() == report
        for section in ("FINAL REPORT", "EXAMINATION:", "INDICATION:", "IMPRESSION:"):
            assert section in report
        labels = dict(zip(LABEL_NAMES, item["labels"], strict=True))
        mentions = _mentions(report)
        for name in WORDS:
            assert (True in mentions[name]) == bool(labels[name]), (item["id"], name, report)
        if labels["No Finding"]:
            assert not any(True in m for m in mentions.values())
        positive = " ".join(s for s in _sentences(report) if not NEGATION.search(s))
        for finding in item["findings"]:
            if finding["zone"]:
                side = finding["zone"].split()[0]
                assert side in positive or (finding["zone"] == "left middle" and "lingula" in positive), item["id"]
            if finding["name"] == "Consolidation":
                assert "consolidation" in positive or "pneumonia" in positive


def test_report_grammar_negates_hedges_and_repeats_normal_wordings() -> None:
    rng = np.random.default_rng(7)
    normal = [compose_report((), "PA", "F", rng) for _ in range(200)]
    bodies = Counter(" ".join(r.split("FINDINGS:")[-1].split()) for r in normal)
    assert bodies.most_common(1)[0][1] >= 0.15 * len(normal)  # many normal studies share a report
    assert 3 <= len({" ".join(r.split("IMPRESSION:")[-1].split()) for r in normal}) <= 6

    hedged = ReportFinding("Lung Opacity", "right", "lower", "", True)
    texts = [compose_report((hedged,), "AP", "M", np.random.default_rng(k)) for k in range(40)]
    assert any("cannot be excluded" in t for t in texts) and all(_mentions(t)["Lung Opacity"] == {True} for t in texts)
    corpus = " ".join(" ".join(t.split()) for t in texts + normal)
    for phrase in ("no pneumothorax", "without focal consolidation, effusion", "no acute cardiopulmonary process"):
        assert phrase in corpus.lower()
    # a planted name changes only the notification sentence
    finding = ReportFinding("Pneumothorax", "left", "upper", "small")
    plain = compose_report((finding,), "PA", "F", np.random.default_rng(3))
    named = compose_report((finding,), "PA", "F", np.random.default_rng(3), notify_name="Ludmila Quenby")
    assert "Ludmila Quenby" in " ".join(named.split()) and "Quenby" not in plain
    assert plain.split("IMPRESSION:")[0] == named.split("IMPRESSION:")[0]


# ------------------------------------------------------------------------------------------ datalists
def test_datalists_load_split_by_patient_and_nest_label_fractions(demo_dir: Path, items: list[dict]) -> None:
    by_id = {i["id"]: i for i in items}
    patient = {i["id"]: pydicom.dcmread(demo_dir / i["image"], stop_before_pixels=True).PatientID for i in items}
    split_ids = {}
    for name in DATALISTS:
        path = demo_dir / f"datalist_{name}.json"
        keys = SPLITS + (("training_1", "training_10") if name != "pretrain" else ())
        lists = {key: load_decathlon_datalist(path, data_list_key=key) for key in keys}
        for _key, entries in lists.items():
            for entry in entries:
                assert Path(entry["image"]).is_file() and Path(entry["image"]).is_absolute()
                if name == "segmentation":
                    assert Path(entry["mask"]).is_file()
        ids = {key: [e["id"] for e in entries] for key, entries in lists.items()}
        split_ids[name] = {s: sorted(ids[s]) for s in SPLITS}
        assert sorted(sum((ids[s] for s in SPLITS), [])) == sorted(by_id)
        for a, b in (("training", "validation"), ("training", "test"), ("validation", "test")):
            assert not set(ids[a]) & set(ids[b])
            assert not {patient[i] for i in ids[a]} & {patient[i] for i in ids[b]}
        if name == "pretrain":
            continue
        assert set(ids["training_1"]) <= set(ids["training_10"]) <= set(ids["training"])
        assert len(ids["training_1"]) >= min(8, len(ids["training"]))
        subset = [by_id[i]["labels"] for i in ids["training_1"]]
        assert {labels[1] for labels in subset} == {0, 1} and {labels[3] for labels in subset} == {0, 1}
        if name == "classification":
            assert all(e["label"] == by_id[e["id"]]["labels"][1] for e in lists["training"])
        if name == "detection":
            assert json.loads(path.read_text())["box_mode"] == "xywh"
            for entry in lists["training"] + lists["test"]:
                findings = by_id[entry["id"]]["findings"]
                expected = [f["box"] for f in findings if f["name"] in ("Lung Opacity", "Consolidation")]
                assert entry["boxes"] == expected and entry["labels"] == [0] * len(expected)
                assert all(x >= 0 and y >= 0 and x + w <= SIZE and y + h <= SIZE for x, y, w, h in expected)
    assert all(split_ids[name] == split_ids["pretrain"] for name in DATALISTS)
    for name, task in zip(DATALISTS, ("pretraining", "classification", "segmentation", "detection"), strict=True):
        datalist = json.loads((demo_dir / f"datalist_{name}.json").read_text())
        assert validate_datalist(datalist, task, base_dir=demo_dir, check_files=True) == []
        assert (demo_dir / f"datalist_{name}.json").read_text() == dump_json(datalist)  # the project's JSON form
    counts = {s: len(v) for s, v in split_ids["pretrain"].items()}
    assert counts["training"] >= 0.6 * N and min(counts["validation"], counts["test"]) >= 2


# ------------------------------------------------------------------------------------------- privacy
def test_plant_phi_puts_distinctive_strings_in_headers_and_reports(demo_dir: Path, phi_dir: Path) -> None:
    manifest = json.loads((phi_dir / "phi_manifest.json").read_text())
    assert len(manifest["items"]) == N and manifest["strings"]
    report_names = 0
    for study_id, planted in manifest["items"].items():
        ds = pydicom.dcmread(phi_dir / "images" / f"{study_id}.dcm", stop_before_pixels=True)
        for keyword in demo.dicom._PHI_KEYWORDS:
            assert str(ds.get(keyword)) == planted[keyword]
        report = " ".join((phi_dir / "reports" / f"{study_id}.txt").read_text().split())
        for name in planted["names_in_report"]:
            assert f"Dr. {name}" in report
            report_names += 1
    assert report_names >= 2

    phi_bytes = b"".join(p.read_bytes() for p in sorted(phi_dir.rglob("*")) if p.suffix in (".dcm", ".txt"))
    assert all(s.encode() in phi_bytes for s in manifest["strings"])
    # none of it exists without the flag, nor in the tokenizer (trained without the planted names)
    clean = b"\n".join(_files(demo_dir).values()).lower()
    for value in manifest["strings"] + manifest["name_parts"]:
        assert value.lower().encode() not in clean, value
    assert _files(phi_dir / "tokenizer") == _files(demo_dir / "tokenizer")
    assert not (demo_dir / "phi_manifest.json").exists()
    # images, labels and geometry do not depend on the flag
    plain_list = json.loads((demo_dir / "datalist_detection.json").read_text())
    assert json.loads((phi_dir / "datalist_detection.json").read_text()) == plain_list


# ----------------------------------------------------------------------------------------- tokenizer
def test_demo_tokenizer_loads_with_auto_tokenizer(demo_dir: Path, items: list[dict]) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(demo_dir / "tokenizer"), local_files_only=True)
    assert tokenizer.is_fast and tokenizer.model_max_length == 512
    assert tokenizer.convert_tokens_to_ids(list(SPECIAL_TOKENS)) == [0, 1, 2, 3, 4]
    assert tokenizer.pad_token == "[PAD]" and tokenizer.mask_token == "[MASK]"
    text = " ".join(items[0]["report"].split("IMPRESSION:")[-1].split())
    encoded = tokenizer(text, padding="max_length", max_length=64, truncation=True)
    ids = [i for i in encoded["input_ids"] if i != tokenizer.pad_token_id]
    assert ids[0] == tokenizer.cls_token_id and ids[-1] == tokenizer.sep_token_id
    assert tokenizer.unk_token_id not in ids
    pieces = tokenizer.convert_ids_to_tokens(ids[1:-1])
    assert "".join(p.removeprefix("##") for p in pieces) == "".join(text.lower().split())
    vocab = (demo_dir / "tokenizer" / "vocab.txt").read_text().splitlines()
    assert vocab == sorted(tokenizer.get_vocab(), key=tokenizer.get_vocab().get)


def test_wordpiece_merges_are_frequency_ranked_with_deterministic_ties() -> None:
    counts = {"low": 5, "lower": 2, "newest": 6, "widest": 3}
    vocab = learn_wordpiece_vocab(counts, vocab_size=100)
    alphabet = sorted({"l", "n", "w", "##o", "##w", "##e", "##r", "##s", "##t", "##i", "##d"})
    assert vocab[: len(SPECIAL_TOKENS)] == list(SPECIAL_TOKENS)
    assert vocab[len(SPECIAL_TOKENS) : len(SPECIAL_TOKENS) + len(alphabet)] == alphabet
    # (##e, ##s) and (##s, ##t) both occur 9 times: the smaller pair goes first
    assert vocab[len(SPECIAL_TOKENS) + len(alphabet) :][:4] == ["##es", "##est", "##ow", "low"]
    assert learn_wordpiece_vocab(dict(reversed(counts.items())), vocab_size=100) == vocab
    assert len(learn_wordpiece_vocab(counts, vocab_size=18)) == 18


# ------------------------------------------------------------------------------------------------ RLE
@pytest.mark.parametrize("bits", [8, 12, 16])
def test_vectorised_rle_matches_pydicom_encoder_byte_for_byte(bits: int) -> None:
    rng = np.random.default_rng(bits)
    rows, columns = 9, 301
    smooth = np.repeat(rng.integers(0, 1 << bits, (rows, columns // 7 + 1)), 7, axis=1)[:, :columns]
    noisy = rng.integers(0, 1 << bits, (rows, columns))
    pixels = np.where(rng.random((rows, columns)) < 0.3, noisy, smooth)
    pixels[2] = pixels[2, 0]  # a whole row of one value: replicate packets of 128 and a remainder
    pixels = pixels.astype(np.uint8 if bits == 8 else np.uint16)

    ds = pydicom.Dataset()
    ds.file_meta = pydicom.dataset.FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.Rows, ds.Columns, ds.SamplesPerPixel, ds.PhotometricInterpretation = rows, columns, 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = pixels.itemsize * 8, bits, bits - 1, 0
    ds.PixelData = pixels.tobytes()
    ds.compress(RLELossless, pixels, encoding_plugin="pydicom", generate_instance_uid=False)
    assert pydicom.encaps.encapsulate([demo.dicom._rle_lossless_frame(pixels)]) == ds.PixelData
    assert np.array_equal(ds.pixel_array, pixels)
