"""Tests of the report transforms (section extraction, cleaning, tokenisation wrappers) and the datalist filter."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from monai.data import DataLoader, Dataset
from monai.transforms import Compose
from report_samples import MIMIC_REPORT, _iu_sections_by_regex, _require_iu_reports

from sista_monai.errors import ReportError
from sista_monai.transforms.report import (
    CleanReport,
    CleanReportD,
    CleanReportd,
    CleanReportDict,
    ExtractReportSections,
    ExtractReportSectionsD,
    ExtractReportSectionsd,
    ExtractReportSectionsDict,
    TokenizeReport,
    TokenizeReportD,
    TokenizeReportd,
    TokenizeReportDict,
    filter_report_items,
    report_item_id,
)
from sista_monai.transforms.tokenizer import ReportTokenizer

# ---------------------------------------------------------------------------------------------- IU reports


@pytest.mark.realdata
def test_filter_skips_exactly_the_iu_reports_without_impression_and_findings():
    files = _require_iu_reports()
    expected_skipped = []
    for path in files:
        sections = _iu_sections_by_regex(path.read_text("utf-8"))
        if not sections.get("impression") and not sections.get("findings"):
            expected_skipped.append(path.stem)
    items = [{"id": path.stem, "report": path} for path in files]
    kept, skipped = filter_report_items(items, parser="auto")
    assert sorted(record["item"] for record in skipped) == sorted(expected_skipped)
    assert {record["reason"] for record in skipped} <= {"report is empty after cleaning"}
    assert len(kept) + len(skipped) == len(files)
    pipeline = Compose([ExtractReportSectionsd("report"), CleanReportd("report", deid_replacement="[deid]")])
    texts = [pipeline(item)["report"] for item in kept[:200]]
    assert all(text and "XXXX" not in text and "  " not in text for text in texts)


# ---------------------------------------------------------------------------------------------- extraction


def test_extract_report_sections_mimic_fallback_and_errors():
    extract = ExtractReportSections()
    assert extract(MIMIC_REPORT) == extract(MIMIC_REPORT.encode("utf-8"))
    assert extract(MIMIC_REPORT).startswith("No acute cardiopulmonary process. Heart size: normal.")
    assert extract("Lungs are clear. No effusion.") == "Lungs are clear. No effusion."
    assert ExtractReportSections(fallback=())("Lungs are clear.") == ""
    assert ExtractReportSections(order=("indication",))(MIMIC_REPORT) == "___F with cough and fever."
    assert extract({"impression": "A.", "findings": "B."}) == "A. B."
    with pytest.raises(ValueError, match="parser"):
        ExtractReportSections(parser="radlex")
    with pytest.raises(ReportError, match="offset 9") as info:
        ExtractReportSectionsd("report")({"image": "/data/p1/s2.dcm", "report": b"FINDINGS:\xff clear"})
    assert info.value.source == "/data/p1/s2.dcm"
    assert ExtractReportSections(errors="replace")(b"FINDINGS: \xff clear") == "\ufffd clear"


def test_extract_reads_mimic_text_file(tmp_path):
    path = tmp_path / "s50414267.txt"
    path.write_bytes(MIMIC_REPORT.encode("utf-8"))
    expected = ExtractReportSections()(MIMIC_REPORT)
    assert ExtractReportSections()(path) == expected
    assert ExtractReportSections()(str(path)) == expected
    assert ExtractReportSectionsd("report")({"report": str(path)})["report"] == expected


# ---------------------------------------------------------------------------------------------- cleaning


def test_clean_report_empty_raises_naming_the_item_without_text():
    raw = "1. XXXX\n2. ___ ___"
    with pytest.raises(ReportError) as info:
        CleanReportd("report")({"id": "study-17", "report": raw})
    assert info.value.source == "study-17"
    assert info.value.reason == "report is empty after cleaning"
    assert str(info.value) == "study-17: report is empty after cleaning"
    with pytest.raises(ReportError) as info:
        CleanReportd("report")({"image": Path("/img/a.dcm"), "report": raw})
    assert info.value.source == "/img/a.dcm"
    with pytest.raises(ReportError) as info:
        CleanReport()(raw, source="s9")
    assert info.value.source == "s9"
    assert CleanReport(allow_empty=True)(raw) == ""
    assert CleanReportd("report", deid_replacement="[deid]")({"id": 1, "report": raw})["report"] == "[deid] [deid]"
    with pytest.raises(ReportError, match="offset 0"):
        CleanReportd("report")({"id": "s3", "report": b"\xff"})


def test_report_item_id_fallbacks():
    assert report_item_id({"id": 0, "image": "a.dcm"}) == "0"
    assert report_item_id({"image": ["a.dcm", "b.dcm"]}) == "a.dcm"
    assert report_item_id({"case": "c1"}, id_key="case") == "c1"
    assert report_item_id({"report": "x"}) == "<item without id>"


def test_filter_report_items_records_every_skip():
    items = [
        {"id": "a", "report": "1. Clear lungs."},
        {"id": "b", "report": "XXXX ___"},
        {"id": "c"},
        {"image": "d.dcm", "report": b"Clear\xff"},
        {"id": "e", "report": "INDICATION: cough.\nIMPRESSION: Normal."},
        {"id": "f", "report": "INDICATION: cough."},
        {"id": "g", "report": 7},
    ]
    kept, skipped = filter_report_items(items, parser="mimic", deid_replacement=None)
    assert [item["id"] for item in kept] == ["a", "e"]
    assert kept[0] is items[0]
    assert skipped == [
        {"item": "b", "reason": "report is empty after cleaning"},
        {"item": "c", "reason": "no 'report' in the item"},
        {"item": "d.dcm", "reason": "not valid utf-8: undecodable byte 0xff at offset 5 (invalid start byte)"},
        {"item": "f", "reason": "report is empty after cleaning"},
        {"item": "g", "reason": "report is int, not text"},
    ]
    kept_plain, skipped_plain = filter_report_items(items[:2], deid_replacement="[deid]")
    assert len(kept_plain) == 2 and skipped_plain == []


def test_dictionary_aliases():
    assert ExtractReportSectionsD is ExtractReportSectionsDict is ExtractReportSectionsd
    assert CleanReportD is CleanReportDict is CleanReportd
    assert TokenizeReportD is TokenizeReportDict is TokenizeReportd


# ---------------------------------------------------------------------------------------------- tokenisation


@pytest.fixture(scope="module")
def report_tokenizer(wordpiece_folder) -> ReportTokenizer:
    return ReportTokenizer(str(wordpiece_folder), max_length=16, local_files_only=True)


def test_tokenize_reportd_output_keys_and_collation(report_tokenizer):
    pipeline = Compose(
        [
            ExtractReportSectionsd("report", parser="mimic"),
            CleanReportd("report", deid_replacement="[deid]"),
            TokenizeReportd("report", tokenizer=report_tokenizer),
        ]
    )
    data = [
        {"id": "s1", "report": MIMIC_REPORT},
        {"id": "s2", "report": "FINDINGS: 1. Small left pleural effusion.\n2. No pneumothorax."},
    ]
    first = pipeline(data[0])
    assert first["report"] == (
        "No acute cardiopulmonary process. Heart size: normal. Lungs are clear. No pleural effusion."
    )
    assert torch.equal(first["input_ids"], TokenizeReport(report_tokenizer)(first["report"])["input_ids"])
    batch = next(iter(DataLoader(Dataset(data, transform=pipeline), batch_size=2, num_workers=0)))
    assert batch["input_ids"].shape == (2, 16)
    assert batch["attention_mask"].shape == (2, 16)
    assert batch["word_mask"].shape == (2, 16) and batch["word_mask"].dtype == torch.bool
    assert batch["report"][1] == "Small left pleural effusion. No pneumothorax."

    two_keys = TokenizeReportd(
        ["findings", "impression"],
        tokenizer=report_tokenizer,
        input_ids_key="{key}_input_ids",
        attention_mask_key="{key}_attention_mask",
        word_mask_key="{key}_word_mask",
    )
    out = two_keys({"findings": "Lungs clear.", "impression": "Normal chest."})
    assert set(out) == {"findings", "impression"} | {
        f"{key}_{name}"
        for key in ("findings", "impression")
        for name in ("input_ids", "attention_mask", "word_mask", "word_start", "word_group")
    }
    assert int(out["findings_word_mask"].sum()) == 2
    assert int(out["impression_word_mask"].sum()) == 2
    assert int(out["impression_attention_mask"].sum()) == 5
    with pytest.raises(ValueError, match="{key}"):
        TokenizeReportd(["findings", "impression"], tokenizer=report_tokenizer)
