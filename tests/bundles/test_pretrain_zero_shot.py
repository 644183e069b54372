"""Zero-shot classification with the pretraining bundle: ``zero_shot.json`` layered on ``train.json`` evaluates on the
demo's test split, classifies a folder of real inputs, and writes nothing of a report or a DICOM header."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from bundle_helpers import (
    REPO_ROOT,
    as_cli,
    assert_no_planted_phi,
    assert_short_console,
    run_cli,
    tiny_pretrain_overrides,
)
from monai.bundle import ConfigParser
from monai.metrics import compute_roc_auc
from PIL import Image

from sista_monai.data.prompts import DEMO_PROMPTS, PromptSet, load_prompts
from sista_monai.io import load_network_weights
from sista_monai.transforms import CleanReportd, TokenizeReportd, load_tokenizer
from sista_monai.transforms.io import read_chest_xray

CONFIGS = REPO_ROOT / "bundles" / "pretrain" / "configs"
LAYERED = "['bundles/pretrain/configs/train.json','bundles/pretrain/configs/zero_shot.json']"

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def pretrained(tiny_demo: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny model pretrained by the README's command (one epoch, no validation): its bundle folder."""
    bundle_root = tmp_path_factory.mktemp("zero_shot") / "pretrain"
    overrides = {"bundle_root": str(bundle_root), **_tiny(tiny_demo), "val_interval": 5, "save_interval": 0}
    result = run_cli(
        ["python", "-m", "monai.bundle", "run", "--config_file", str(CONFIGS / "train.json")] + as_cli(overrides)
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return bundle_root


def _tiny(dataset_dir: Path) -> dict[str, object]:
    return {**tiny_pretrain_overrides(dataset_dir), "epochs": 1}


def _zero_shot(bundle_root: Path, demo: Path, dataset_dir: Path, **extra: object) -> tuple[int, str]:
    overrides = {**_tiny(dataset_dir), "bundle_root": str(bundle_root), "tokenizer": str(demo / "tokenizer"), **extra}
    result = run_cli(["python", "-m", "monai.bundle", "run", "--config_file", LAYERED] + as_cli(overrides))
    if result.returncode == 0:
        assert_short_console(result)
    return result.returncode, result.stdout + result.stderr


def _recomputed(bundle_root: Path, demo: Path, image: Path, prompts: PromptSet) -> list[float]:
    """The probabilities of one image from the saved checkpoint, each prompt embedded on its own."""
    parser = ConfigParser()
    parser.read_config([str(CONFIGS / "train.json"), str(CONFIGS / "zero_shot.json")])
    parser.update({**_tiny(demo), "bundle_root": str(bundle_root), "tokenizer": str(demo / "tokenizer")})
    network = parser.get_parsed_content("network_def").eval()
    load_network_weights(bundle_root / "models" / "checkpoint_final.pt", network)
    tokenizer = load_tokenizer(demo / "tokenizer")
    tokenize = TokenizeReportd("report", tokenizer, max_length=64)
    pixels = parser.get_parsed_content("inference_transforms")({"image": str(image)})["image"][None]
    probabilities = []
    with torch.no_grad():
        image_emb = network.encode_image(pixels)[0][0]
        image_emb = image_emb / image_emb.norm()
        for class_prompts in prompts.classes.values():
            means = []
            for sentences in (class_prompts.positive, class_prompts.negative):
                embedded = []
                for sentence in sentences:
                    tokens = tokenize(CleanReportd("report")({"report": sentence}))
                    text = network.encode_text(tokens["input_ids"][None], tokens["attention_mask"][None])[0][0]
                    embedded.append(text / text.norm())
                mean = torch.stack(embedded).mean(0)
                means.append(float(image_emb @ (mean / mean.norm())))
            logits = torch.tensor(means, dtype=torch.float64) / 0.07  # train.json's sia_temperature
            probabilities.append(float(torch.softmax(logits, 0)[0]))
    return probabilities


def _assert_no_report_text(folder: Path, console: str, demo: Path) -> None:
    """No report's distinctive text (its INDICATION's "-year-old") and no planted PHI in any file or the console."""
    assert_no_planted_phi(folder, console, demo)
    for path in [p for p in folder.rglob("*") if p.is_file()]:
        assert b"year-old" not in path.read_bytes(), path
    assert "year-old" not in console


def test_evaluation_on_the_demo_test_split(pretrained: Path, tiny_demo: Path) -> None:
    status, console = _zero_shot(pretrained, tiny_demo, tiny_demo)
    assert status == 0, console[-3000:]
    datalist = json.loads((tiny_demo / "datalist_pretrain.json").read_text())
    label_names, test = datalist["label_names"], datalist["test"]
    report = json.loads((pretrained / "eval" / "zero_shot.json").read_text())
    assert report["classes"] == label_names and report["n_images"] == len(test) and report["split"] == "test"
    assert report["prompts"] == {"source": "demo", "classes": DEMO_PROMPTS.to_dict()}
    assert report["temperature"] == pytest.approx(0.07)

    out = pretrained / "eval" / "zero_shot"
    with (out / "zero_shot.csv").open() as stream:
        rows = list(csv.DictReader(stream))
    assert [r["source"] for r in rows] == [item["image"] for item in test]
    scores = np.array([[float(r[c]) for c in label_names] for r in rows])
    labels = np.array([item["labels"] for item in test], dtype=float)
    assert ((scores >= 0) & (scores <= 1)).all()
    for c, name in enumerate(label_names):
        assert report["positives"][name] == int(labels[:, c].sum())
        if 0 < labels[:, c].sum() < len(test):
            expected = float(compute_roc_auc(torch.as_tensor(scores[:, c]), torch.as_tensor(labels[:, c])))
            assert report["auroc"][name] == pytest.approx(expected, abs=1e-6)
            low, high = report["auroc_interval"][name]
            assert 0 <= low <= report["auroc"][name] <= high <= 1
        else:
            assert report["auroc"][name] is None
    defined = [v for v in report["auroc"].values() if v is not None]
    assert report["mean_auroc"] == pytest.approx(sum(defined) / len(defined))

    first = test[0]["image"]
    record = json.loads((out / Path(first).with_suffix(".json")).read_text())
    assert record["source"] == first and record["classes"] == label_names
    expected = _recomputed(pretrained, tiny_demo, tiny_demo / first, DEMO_PROMPTS)
    assert list(record["probabilities"].values()) == pytest.approx(expected, abs=1e-5)
    assert scores[0].tolist() == pytest.approx(expected, abs=1e-5)
    assert "zero-shot AUROC on 6 test images: mean" in console
    _assert_no_report_text(pretrained / "eval", console, tiny_demo)


def test_a_folder_of_inputs_with_a_prompts_file(pretrained: Path, tiny_demo: Path, tmp_path: Path) -> None:
    """A PNG, a DICOM without extension in a subfolder, an unreadable .dcm: outputs for the two good ones, the bad
    one in errors.json, exit status 1; the prompts file's classes are the classes scored."""
    test = json.loads((tiny_demo / "datalist_pretrain.json").read_text())["test"]
    folder = tmp_path / "in"
    (folder / "series").mkdir(parents=True)
    shutil.copy(tiny_demo / test[1]["image"], folder / "series" / "IM0001")
    pixels = read_chest_xray(tiny_demo / test[2]["image"]).pixels
    Image.fromarray((np.asarray(pixels, dtype=np.float64) * 255).round().astype(np.uint8)).save(folder / "scan.png")
    (folder / "broken.dcm").write_bytes(b"DICM but not really")
    prompts_file = tmp_path / "prompts.json"
    classes = {name: DEMO_PROMPTS.classes[name].to_dict() for name in ("Pneumothorax", "Cardiomegaly")}
    prompts_file.write_text(json.dumps({"classes": classes}))
    out = tmp_path / "out"

    status, console = _zero_shot(
        pretrained, tiny_demo, folder, output_dir=str(out), prompts=str(prompts_file), eval_dir=str(tmp_path / "eval")
    )
    assert status == 1, console[-3000:]
    assert "could not be read" in console and "errors.json" in console
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()) == [
        "errors.json",
        "scan.json",
        "series/IM0001.json",
        "zero_shot.csv",
    ]
    assert [e["file"] for e in json.loads((out / "errors.json").read_text())] == ["broken.dcm"]
    assert not (tmp_path / "eval").exists()  # no labels, no evaluation
    with (out / "zero_shot.csv").open() as stream:
        rows = list(csv.reader(stream))
    assert rows[0] == ["source", "Pneumothorax", "Cardiomegaly"]
    assert [r[0] for r in rows[1:]] == ["scan.png", "series/IM0001"]
    record = json.loads((out / "series" / "IM0001.json").read_text())
    assert record["source"] == "series/IM0001" and record["classes"] == ["Pneumothorax", "Cardiomegaly"]
    expected = _recomputed(pretrained, tiny_demo, folder / "series" / "IM0001", load_prompts(prompts_file))
    assert list(record["probabilities"].values()) == pytest.approx(expected, abs=1e-5)
    assert [float(v) for v in rows[2][1:]] == pytest.approx(expected, abs=1e-5)
    _assert_no_report_text(out, console, tiny_demo)
