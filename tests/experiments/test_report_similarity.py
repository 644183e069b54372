"""The report-similarity experiment: TF-IDF by hand, the labeler's scores, and runs on demo and real IU reports."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from sista_monai.experiments.report_similarity import (
    FLAG_KEYS,
    THETAS,
    ReportSet,
    labeler_scores,
    main,
    run,
    tfidf_features,
)
from sista_monai.transforms.findings import FINDINGS


def test_tfidf_by_hand() -> None:
    train = ["effusion left", "effusion right", "no effusion"]
    # vocabulary: words in >= 2 training reports -> {"effusion"} only; every report is the same unit vector, so
    # the centred vectors are all zero
    assert torch.count_nonzero(tfidf_features(train, ["left effusion", "small effusion"])) == 0
    train = ["effusion left", "effusion left", "pneumothorax right", "pneumothorax right"]
    features = tfidf_features(train, ["effusion left", "pneumothorax right"])
    # each word has df 2 of 4: the same IDF, so both reports are (1, 1, 0, 0)/√2 and (0, 0, 1, 1)/√2 before the
    # centre (their mean); centred they are opposite
    assert torch.allclose(features[0], -features[1])
    assert float(torch.nn.functional.cosine_similarity(features[0], features[1], dim=0)) == pytest.approx(-1.0)


def test_tfidf_marks_negated_words() -> None:
    train = ["no effusion", "no effusion", "effusion", "effusion"]
    plain = tfidf_features(train, ["no effusion", "effusion"])
    marked = tfidf_features(train, ["no effusion", "effusion"], mark_negation=True)
    # without marking, "effusion" is shared; with it, "no effusion" has the words "neg_no", "neg_effusion"
    cos = torch.nn.functional.cosine_similarity
    assert float(cos(marked[0], marked[1], dim=0)) == pytest.approx(-1.0)
    assert float(cos(plain[0], plain[1], dim=0)) == pytest.approx(-1.0)  # "no" tells them apart in both
    assert plain.shape[1] == 2 and marked.shape[1] == 3  # {no, effusion} and {neg_no, neg_effusion, effusion}


def _reports(texts: list[str], truth: list[set[str]]) -> ReportSet:
    vectors = torch.tensor([[float(f in t) for f in FINDINGS] for t in truth])
    return ReportSet("demo", [f"r{i}" for i in range(len(texts))], texts, vectors, FINDINGS, ["test"] * len(texts))


def test_labeler_scores_by_hand() -> None:
    reports = _reports(
        ["Small left effusion.", "No effusion.", "No effusion.", "Possible effusion.", "Normal."],
        [{"pleural_effusion"}, {"pleural_effusion"}, set(), set(), set()],
    )
    effusion = labeler_scores(reports)["per_finding"]["pleural_effusion"]
    # stated (positive or uncertain): r0, r3; truth: r0, r1 -> tp 1, fp 1 (r3), fn 1 (r1, read as negated)
    assert effusion["precision"] == 0.5 and effusion["recall"] == 0.5 and effusion["f1"] == 0.5
    assert effusion["negated_but_true"] == 1 and effusion["missed_negation"] == 0
    assert effusion["examples"] == {"false_positive": ["r3"], "false_negative": ["r1"]}
    assert effusion["positives"] == 2


def test_run_on_demo_reports(tmp_path: Path) -> None:
    from sista_monai.data.demo import ensure_demo_data

    root = ensure_demo_data(tmp_path / "demo", n=40, size=64, seed=3)
    result = run(root, tmp_path / "out", part="all", sources=("findings", "tfidf"), demo_root=None)
    written = json.loads((tmp_path / "out" / "report_similarity.json").read_text())
    assert written["dataset"] == "demo" and written["reports"] == 40
    findings = written["sources"]["findings"]
    assert set(FLAG_KEYS) <= set(findings) and findings["theta"] == THETAS["demo"]["findings"]
    # on the demo grammar the labeler reads every drawn finding: its flags are right
    assert findings["flag_precision"] >= 0.95
    assert set(written["sources"]["tfidf"]) >= set(FLAG_KEYS)
    assert result["targets"] == {"flag_precision": 0.95, "flag_recall": 0.9}
    assert all(0.0 <= v <= 1.0 for k, v in findings.items() if k in FLAG_KEYS and not math.isnan(v))


def test_run_on_real_iu_reports(realdata: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    reports = realdata / "iu_xray" / "reports"
    code = main(["--reports", str(reports), "--out", str(tmp_path), "--part", "test", "--sources", "findings"])
    assert code == 0
    written = json.loads((tmp_path / "report_similarity.json").read_text())
    assert written["dataset"] == "iu_xray" and written["part"] == "test"
    assert 250 < written["reports"] < 300 and written["excluded"]["no_indexing"] > 0
    labeler = written["sources"]["findings"]["labeler"]
    assert labeler["mean_f1_findings"] and all(
        labeler["per_finding"][f]["positives"] >= 20 for f in labeler["mean_f1_findings"]
    )
    assert labeler["mean_f1"] == pytest.approx(
        sum(labeler["per_finding"][f]["f1"] for f in labeler["mean_f1_findings"]) / len(labeler["mean_f1_findings"])
    )
    out = capsys.readouterr().out
    assert "iu_xray (test" in out and "targets met" in out
    assert "CXR" not in out  # report ids only in the JSON file, never on the console


def test_a_folder_without_reports_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--reports", str(tmp_path / "nowhere"), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "nowhere" in err and "neither a demo data folder" in err and "Traceback" not in err
