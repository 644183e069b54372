"""Tests of the report parsers: IU X-ray XML and MIMIC-CXR text sections, the composed text, byte decoding."""

from __future__ import annotations

import re

import pytest
from report_samples import IU_REPORTS, MIMIC_REPORT, _iu_sections_by_regex, _require_iu_reports

from sista_monai.errors import ReportError
from sista_monai.transforms.report import ExtractReportSections, ExtractReportSectionsd
from sista_monai.transforms.sections import (
    IUReport,
    compose_report_text,
    decode_report_bytes,
    parse_iu_report_xml,
    parse_mimic_report,
)

# ---------------------------------------------------------------------------------------------- IU reports


@pytest.mark.realdata
def test_all_iu_reports_parse_and_findings_count_matches_raw_scan():
    files = _require_iu_reports()
    assert len(files) == 1979
    reports = [parse_iu_report_xml(path) for path in files]
    with_findings = sum(bool(report.sections.get("findings")) for report in reports)
    expected = sum(bool(_iu_sections_by_regex(path.read_text("utf-8")).get("findings")) for path in files)
    assert with_findings == expected
    assert 0 < with_findings < len(files)
    assert all(report.report_id.startswith("CXR") for report in reports)
    image_count = sum(len(re.findall(r'<parentImage id="', path.read_text("utf-8"))) for path in files)
    assert sum(len(report.image_ids) for report in reports) == image_count


@pytest.mark.realdata
def test_iu_report_3_has_no_findings_and_composes_its_impression():
    _require_iu_reports()
    path = IU_REPORTS / "3.xml"
    report = parse_iu_report_xml(path)
    impression = _iu_sections_by_regex(path.read_text("utf-8"))["impression"]
    assert impression.startswith("No displaced rib fractures")
    assert report.report_id == "CXR3"
    assert report.sections["findings"] == ""
    assert report.sections["comparison"] == ""
    assert report.text() == impression
    assert ExtractReportSections(parser="iu")(path) == impression
    assert ExtractReportSections()(str(path)) == impression
    assert ExtractReportSections()(path.read_bytes()) == impression
    assert report.mesh_major == ["normal"]
    assert report.mesh_automatic == []
    assert report.image_ids == ["CXR3_IM-1384-1001", "CXR3_IM-1384-2001"]


def test_iu_report_from_string_and_bytes_with_mesh(tmp_path):
    xml = """<?xml version="1.0" encoding="utf-8"?>
<eCitation><uId id="CXR42"/>
 <MedlineCitation><Article><Abstract>
  <AbstractText Label="FINDINGS">Heart size normal. Lungs clear.</AbstractText>
  <AbstractText Label="IMPRESSION">Normal chest.</AbstractText>
  <AbstractText Label="INDICATION"/>
 </Abstract></Article></MedlineCitation>
 <MeSH><major>Cardiomegaly/mild</major><major>Opacity</major><automatic>atelectases</automatic></MeSH>
 <parentImage id="CXR42_IM-1"/><parentImage id="CXR42_IM-2"/>
</eCitation>"""
    for source in (xml, xml.encode("utf-8")):
        report = parse_iu_report_xml(source)
        assert isinstance(report, IUReport)
        assert report.report_id == "CXR42"
        assert report.sections == {
            "findings": "Heart size normal. Lungs clear.",
            "impression": "Normal chest.",
            "indication": "",
        }
        assert report.mesh_major == ["Cardiomegaly/mild", "Opacity"]
        assert report.mesh_automatic == ["atelectases"]
        assert report.image_ids == ["CXR42_IM-1", "CXR42_IM-2"]
        assert report.text() == "Normal chest. Heart size normal. Lungs clear."
        assert report.text(order=("findings",)) == "Heart size normal. Lungs clear."
    without_uid = tmp_path / "77.xml"
    without_uid.write_text(xml.replace('<uId id="CXR42"/>', ""), encoding="utf-8")
    assert parse_iu_report_xml(without_uid).report_id == "77"


def test_malformed_iu_xml_raises_report_error_naming_the_file(tmp_path):
    path = tmp_path / "broken.xml"
    path.write_text('<eCitation><AbstractText Label="FINDINGS">Secret text</eCitation>', encoding="utf-8")
    with pytest.raises(ReportError, match="malformed XML") as info:
        parse_iu_report_xml(path)
    assert info.value.source == str(path)
    assert "Secret" not in str(info.value)
    with pytest.raises(ReportError, match="malformed XML") as info:
        ExtractReportSectionsd("report")({"id": "item-9", "report": b"<eCitation><oops></eCitation>"})
    assert info.value.source == "item-9"
    with pytest.raises(ReportError, match="cannot read"):
        parse_iu_report_xml(tmp_path / "missing.xml")
    with pytest.raises(ReportError, match="no <AbstractText>"):
        parse_iu_report_xml("<root><child/></root>")


# ---------------------------------------------------------------------------------------------- MIMIC reports


def test_mimic_report_sections_known_answer():
    sections = parse_mimic_report(MIMIC_REPORT)
    assert sections == {
        "examination": "CHEST (PA AND LAT)",
        "indication": "___F with cough and fever.",
        "technique": "Chest PA and lateral",
        "comparison": "None.",
        "findings": "Heart size: normal. Lungs are clear.\n No pleural effusion.",
        "impression": "No acute cardiopulmonary process.",
    }
    assert compose_report_text(sections) == (
        "No acute cardiopulmonary process. Heart size: normal. Lungs are clear.\n No pleural effusion."
    )


def test_mimic_report_varied_headers_missing_sections_and_preamble():
    text = (
        "WET READ: ___ 3:15 PM\n"
        "Comparison made to prior.\n"
        "  CLINICAL   HISTORY : fever\n"
        "IMPRESSIONS:1. Small effusion.\n2. No pneumothorax.\n"
        "Impression\n"
        "FINDINGS/IMPRESSION\n"
        "Stable.\n"
    )
    sections = parse_mimic_report(text)
    assert sections == {
        "wet_read": "___ 3:15 PM\nComparison made to prior.",
        "history": "fever",
        "impression": "1. Small effusion.\n2. No pneumothorax.\nImpression\nStable.",
    }
    assert "findings" not in sections
    assert parse_mimic_report("Patient is a 60 year old.\nFINDINGS: Clear lungs.") == {
        "preamble": "Patient is a 60 year old.",
        "findings": "Clear lungs.",
    }
    no_headers = "Heart size: normal.\nLungs: clear."
    assert parse_mimic_report(no_headers) == {"preamble": no_headers}
    assert parse_mimic_report("FINDINGS:\nIMPRESSION: Normal.") == {"findings": "", "impression": "Normal."}


def test_compose_report_text_order_separator_and_missing_sections():
    sections = {"findings": " Clear lungs. ", "impression": "", "indication": "Cough."}
    assert compose_report_text(sections) == "Clear lungs."
    assert compose_report_text(sections, order=("indication", "findings"), separator=" | ") == "Cough. | Clear lungs."
    assert compose_report_text(sections, order=("impression", "history")) == ""


# ---------------------------------------------------------------------------------------------- bytes


def test_decode_report_bytes_strict_replace_and_bom():
    data = b"Effusion" + b"\xe9 small"
    with pytest.raises(ReportError) as info:
        decode_report_bytes(data, source="reports/s1.txt")
    message = str(info.value)
    assert info.value.source == "reports/s1.txt"
    assert message.startswith("reports/s1.txt: not valid utf-8")
    assert "offset 8" in message and "0xe9" in message
    assert "Effusion" not in message
    assert decode_report_bytes(data, "s1", errors="replace") == "Effusion\ufffd small"
    assert decode_report_bytes(data, "s1", encoding="latin-1") == "Effusion\xe9 small"
    assert decode_report_bytes(b"\xef\xbb\xbfClear.", "s1") == "Clear."
    with pytest.raises(ReportError, match="unknown text encoding"):
        decode_report_bytes(b"x", "s1", encoding="no-such-codec")
