"""The pretraining bundle's retrieval.json and grounding.json on a tiny pretrained model, in both modes: evaluation
on the demo's truth (the same figures as the pretraining report, or as the retrieve mode's own files), and folders
of a PNG, a DICOM and an unreadable file (outputs for the readable ones, errors.json, exit status 1)."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from bundle_helpers import as_cli, assert_no_planted_phi, assert_short_console, run_cli, tiny_pretrain_overrides
from PIL import Image

pytestmark = pytest.mark.slow

CONFIGS = "bundles/pretrain/configs"
PHRASE = "left pleural effusion"


def _overrides(demo: Path, bundle_root: Path, **extra: Any) -> list[str]:
    """The tiny model's overrides without dataset_dir (its absence selects the evaluation), the demo as truth."""
    overrides = {k: v for k, v in tiny_pretrain_overrides(demo).items() if k != "dataset_dir"}
    return as_cli({**overrides, "bundle_root": str(bundle_root), "evaluation_dir": str(demo), **extra})


def _run(config: str, demo: Path, bundle_root: Path, **extra: Any) -> Any:
    files = f"['{CONFIGS}/train.json','{CONFIGS}/{config}']"
    result = run_cli(
        ["python", "-m", "monai.bundle", "run", "--config_file", files] + _overrides(demo, bundle_root, **extra)
    )
    if result.returncode == 0:
        assert_short_console(result)
    return result


@pytest.fixture(scope="module")
def pretrained(tiny_demo: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny model pretrained by the README command with the bundle tests' overrides (about 20 s on one core)."""
    bundle_root = tmp_path_factory.mktemp("bundle") / "pretrain"
    args = ["python", "-m", "monai.bundle", "run", "--config_file", f"{CONFIGS}/train.json"]
    result = run_cli(args + as_cli({"bundle_root": str(bundle_root), **tiny_pretrain_overrides(tiny_demo)}))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert (bundle_root / "models" / "checkpoint_final.pt").is_file()
    return bundle_root


def _mixed_folder(folder: Path, demo: Path) -> dict[str, Path]:
    """A PNG of 40 rows and 80 columns, a demo DICOM in a subfolder, and a .dcm file that is not DICOM."""
    (folder / "sub").mkdir(parents=True)
    pixels = np.random.default_rng(0).integers(0, 255, (40, 80), dtype=np.uint8)
    Image.fromarray(pixels).save(folder / "wide.png")
    item = json.loads((demo / "datalist_pretrain.json").read_text())["test"][0]
    shutil.copy(demo / item["image"], folder / "sub" / "study.dcm")
    (folder / "broken.dcm").write_bytes(b"DICM? no: a truncated export")
    return {"wide": folder / "wide.png", "sub/study": folder / "sub" / "study.dcm"}


def _test_split(demo: Path) -> list[dict[str, Any]]:
    return json.loads((demo / "datalist_pretrain.json").read_text())["test"]


def _fair_recall(similarity: np.ndarray, k: int, groups: list[str]) -> float:
    """Recall@k of paired rows (row i with column i), candidates with the pair's report text tied with it."""
    hits = []
    for i, row in enumerate(similarity):
        same = np.array([g == groups[i] for g in groups])
        others = np.arange(len(row)) != i
        better = int(((row > row[i]) & ~same).sum())
        tied = int((((row == row[i]) | same) & others).sum())
        hits.append(min(1.0, max(0.0, (k - better) / (tied + 1))))
    return float(np.mean(hits))


def test_retrieval_evaluation_matches_the_rankings_of_the_retrieve_mode(
    tiny_demo: Path, pretrained: Path, tmp_path: Path
) -> None:
    evaluated = _run("retrieval.json", tiny_demo, pretrained)
    assert evaluated.returncode == 0, evaluated.stdout[-3000:] + evaluated.stderr[-3000:]
    report = json.loads((pretrained / "eval" / "retrieval.json").read_text())
    split = _test_split(tiny_demo)
    n = len(split)
    assert report["split"] == "test" and report["n_pairs"] == n == 6
    assert report["retrieval"]["chance"] == {f"R@{k}": pytest.approx(min(1.0, k / n)) for k in (1, 5, 10)}
    labels = [tuple(v > 0.5 for v in item["labels"]) for item in split]
    same_findings = np.array([[a == b for b in labels] for a in labels])
    assert report["retrieval"]["semantic"]["chance"] == pytest.approx(same_findings.mean())
    assert "semantic precision@5" in evaluated.stdout + evaluated.stderr

    # the retrieve mode on the same images (named by their ids) against the split's reports, every report kept
    images = tmp_path / "test_images"
    images.mkdir()
    for item in split:
        shutil.copy(tiny_demo / item["image"], images / f"{item['id']}.dcm")
    out = pretrained / "eval" / "retrieval_of_test"
    retrieved = _run(
        "retrieval.json",
        tiny_demo,
        pretrained,
        dataset_dir=str(images),
        report_bank=str(tiny_demo / "datalist_pretrain.json"),
        output_dir=str(out),
        top_k=n,
    )
    assert retrieved.returncode == 0, retrieved.stdout[-3000:] + retrieved.stderr[-3000:]
    ids = [item["id"] for item in split]
    similarity = np.zeros((n, n))
    for i, image in enumerate(ids):
        record = json.loads((out / f"{image}.json").read_text())
        scores = [m["score"] for m in record["reports"]]
        assert scores == sorted(scores, reverse=True) and len(scores) == n
        for match in record["reports"]:
            similarity[i, ids.index(match["report"])] = match["score"]
    groups = [item["report"] for item in split]
    for k in (1, 5, 10):
        assert report["retrieval"]["image_to_report"][f"R@{k}"] == pytest.approx(
            _fair_recall(similarity, k, groups), abs=1e-5
        )
        assert report["retrieval"]["report_to_image"][f"R@{k}"] == pytest.approx(
            _fair_recall(similarity.T, k, groups), abs=1e-5
        )
    top5 = np.argsort(-similarity, axis=1, kind="stable")[:, :5]
    precision = np.mean([same_findings[i, top5[i]].mean() for i in range(n)])
    assert report["retrieval"]["semantic"]["precision_at_5"] == pytest.approx(precision, abs=1e-5)
    reverse = json.loads((out / "report_to_image.json").read_text())
    for j, report_id in enumerate(ids):
        for match in reverse["reports"][report_id]:
            assert match["score"] == pytest.approx(similarity[ids.index(match["image"]), j], abs=1e-6)


def test_retrieve_mode_on_a_folder_with_an_unreadable_file(tiny_demo: Path, pretrained: Path, tmp_path: Path) -> None:
    readable = _mixed_folder(tmp_path / "in", tiny_demo)
    bank = tmp_path / "bank"
    (bank / "iu").mkdir(parents=True)
    split = _test_split(tiny_demo)
    for item in split[:3]:
        (bank / f"{item['id']}.txt").write_text(item["report"])
    (bank / "iu" / "case.xml").write_text(
        '<?xml version="1.0"?><eCitation><MedlineCitation><Article><Abstract><AbstractText Label="FINDINGS">'
        "Moderate left pleural effusion.</AbstractText></Abstract></Article></MedlineCitation></eCitation>"
    )
    out = pretrained / "eval" / "retrieval_of_folder"
    result = _run(
        "retrieval.json",
        tiny_demo,
        pretrained,
        dataset_dir=str(tmp_path / "in"),
        report_bank=str(bank),
        output_dir=str(out),
    )
    console = result.stdout + result.stderr
    assert result.returncode == 1, console[-3000:]
    assert "1 inputs could not be read" in console and "errors.json" in console
    assert [e["file"] for e in json.loads((out / "errors.json").read_text())] == ["broken.dcm"]
    bank_ids = sorted([f"{item['id']}.txt" for item in split[:3]] + ["iu/case.xml"])
    per_image = {}
    for stem in readable:
        record = json.loads((out / f"{stem}.json").read_text())
        assert record["image"] == stem and record["top_k"] == 5
        assert sorted(m["report"] for m in record["reports"]) == bank_ids  # 4 reports: all of them, best first
        per_image[stem] = {m["report"]: m["score"] for m in record["reports"]}
    reverse = json.loads((out / "report_to_image.json").read_text())
    assert reverse["images"] == 2 and sorted(reverse["reports"]) == bank_ids
    for report_id, matches in reverse["reports"].items():
        assert [m["score"] for m in matches] == sorted((m["score"] for m in matches), reverse=True)
        assert {m["image"]: m["score"] for m in matches} == {s: per_image[s][report_id] for s in readable}
    written = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert written == ["errors.json", "report_to_image.json", "sub/study.json", "wide.json"]
    sentences = [s.strip() for item in split[:3] for s in item["report"].split(".") if len(s.strip()) >= 12]
    for path in out.rglob("*.json"):
        text = path.read_text()
        assert "effusion" not in text.lower() and not any(sentence in text for sentence in sentences), path
    assert_no_planted_phi(pretrained, console, tiny_demo)


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a):
        return math.isnan(b)
    return bool(a == b)


def test_grounding_evaluation_is_the_pretraining_reports_counterfactual_block(
    tiny_demo: Path, pretrained: Path
) -> None:
    metrics = json.loads((pretrained / "eval" / "metrics.json").read_text())
    result = _run("grounding.json", tiny_demo, pretrained)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    report = json.loads((pretrained / "eval" / "grounding.json").read_text())
    block = report["grounding"]["counterfactual"]
    assert _same(block, metrics["grounding"]["counterfactual"]), (block, metrics["grounding"]["counterfactual"])
    twins = json.loads((tiny_demo / "datalist_counterfactual.json").read_text())["test"]
    assert report["twins"] == len(twins) == 3 and block["trials"] >= len(twins)
    assert report["measured"]["counterfactual_follow_rate"] == block["follow_rate"]
    assert report["targets"] == {"counterfactual_follow_rate": 0.5, "counterfactual_over_image_free": 5.0}
    assert "counterfactual grounding on test" in result.stdout + result.stderr


def test_grounding_of_a_phrase_in_a_folder_with_an_unreadable_file(
    tiny_demo: Path, pretrained: Path, tmp_path: Path
) -> None:
    readable = _mixed_folder(tmp_path / "in", tiny_demo)
    assert sorted(readable) == ["sub/study", "wide"]
    out = pretrained / "eval" / "grounding_of_folder"
    result = _run("grounding.json", tiny_demo, pretrained, dataset_dir=str(tmp_path / "in"), output_dir=str(out))
    assert result.returncode != 0 and "--phrase" in result.stdout + result.stderr  # grounding needs a phrase
    result = _run(
        "grounding.json", tiny_demo, pretrained, dataset_dir=str(tmp_path / "in"), output_dir=str(out), phrase=PHRASE
    )
    console = result.stdout + result.stderr
    assert result.returncode == 1, console[-3000:]
    assert [e["file"] for e in json.loads((out / "errors.json").read_text())] == ["broken.dcm"]
    written = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert written == [
        "errors.json",
        "sub/study_grounding.json",
        "sub/study_grounding_left-pleural-effusion.png",
        "wide_grounding.json",
        "wide_grounding_left-pleural-effusion.png",
    ]
    # the tiny model's input: resize the longest side to 64, pad to 64 x 64, crop 48 (8 pixels off every side), a 3 x 3
    # grid of 16-pixel patches. The 64 x 64 DICOM keeps its scale; the 80 x 40 PNG is scaled by 80/64 = 1.25 with 16
    # rows of padding above and below
    for stem, size in (("sub/study", (64, 64)), ("wide", (80, 40))):
        record = json.loads((out / f"{stem}_grounding.json").read_text())
        column, row = record["patch"]
        weights = np.array(record["weights"])
        assert record["patch_grid"] == [3, 3] and weights.shape == (3, 3) and weights.sum() == pytest.approx(1.0)
        assert weights[column, row] == weights.max() and record["words"] == 3 and record["phrase"] == PHRASE
        if stem == "wide":
            box = [(16 * column + 8) * 1.25, (16 * row - 8) * 1.25, (16 * column + 24) * 1.25, (16 * row + 8) * 1.25]
        else:
            box = [16 * column + 8, 16 * row + 8, 16 * column + 24, 16 * row + 24]
        clipped = [min(max(v, 0.0), size[axis % 2]) for axis, v in enumerate(box)]
        assert record["box"] == pytest.approx(clipped, abs=1e-3) and record["image_size"] == list(size)
        with Image.open(out / Path(stem).parent / record["heatmap"]) as png:
            assert png.size == size and png.mode == "RGB"
    assert_no_planted_phi(pretrained, console, tiny_demo)
