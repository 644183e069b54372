"""Tests of the report transforms: section extraction, cleaning, tokenisation and the MONAI wrappers."""

from __future__ import annotations

import logging
import pickle
import re
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from monai.data import DataLoader, Dataset
from monai.transforms import Compose

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
    IUReport,
    ReportTokenizer,
    TokenizeReport,
    TokenizeReportD,
    TokenizeReportd,
    TokenizeReportDict,
    clean_report_text,
    compose_report_text,
    decode_report_bytes,
    filter_report_items,
    parse_iu_report_xml,
    parse_mimic_report,
    report_item_id,
)

REALDATA = Path(__file__).resolve().parents[2].parent / "shared" / "realdata"
IU_REPORTS = REALDATA / "iu_xray" / "reports"

MIMIC_REPORT = """                                 FINAL REPORT
 EXAMINATION:  CHEST (PA AND LAT)

 INDICATION:  ___F with cough and fever.

 TECHNIQUE:  Chest PA and lateral

 COMPARISON:  None.

 Findings :

 Heart size: normal. Lungs are clear.
 No pleural effusion.

 impression: No acute cardiopulmonary process.
"""

# A few dozen report sentences for training a real WordPiece vocabulary.
REPORT_SENTENCES = [
    "The heart size is normal.",
    "The lungs are clear.",
    "No pleural effusion or pneumothorax.",
    "No focal consolidation.",
    "Mild cardiomegaly is present.",
    "There is a small left pleural effusion.",
    "Right lower lobe opacity, concerning for pneumonia.",
    "The mediastinal contours are within normal limits.",
    "No acute cardiopulmonary process.",
    "Degenerative changes of the thoracic spine.",
    "Lungs are hyperinflated, with flattening of the hemidiaphragms.",
    "Heart size and pulmonary vascularity are normal.",
    "There is no pneumothorax.",
    "Stable appearance of the chest.",
    "Small bilateral pleural effusions with bibasilar atelectasis.",
    "Calcified granuloma in the right upper lobe.",
    "Endotracheal tube terminates 4 cm above the carina.",
    "No evidence of pulmonary edema.",
    "The cardiomediastinal silhouette is within normal limits.",
    "Patchy opacity at the left base may represent atelectasis or pneumonia.",
    "Moderate right pneumothorax is seen.",
    "Interval resolution of the left lower lobe consolidation.",
    "Osseous structures are intact.",
    "Low lung volumes, otherwise clear lungs.",
    "No displaced rib fractures.",
    "Cardiomegaly with mild pulmonary edema.",
    "Left sided central venous catheter tip in the superior vena cava.",
    "Blunting of the costophrenic angles.",
    "No free air under the diaphragm.",
    "Normal chest radiograph.",
]


def _iu_sections_by_regex(xml_text: str) -> dict[str, str]:
    """Section texts read from the raw XML with a regex, independently of the parser under test."""
    sections = {}
    for label, body in re.findall(r'<AbstractText Label="([A-Z]+)"(?:/>|>(.*?)</AbstractText>)', xml_text, re.S):
        sections[label.lower()] = body.strip()
    return sections


def _require_iu_reports() -> list[Path]:
    if not IU_REPORTS.is_dir():
        pytest.skip(f"../shared/realdata not present: IU report XMLs expected in {IU_REPORTS}")
    return sorted(IU_REPORTS.glob("*.xml"))


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


@pytest.mark.parametrize(
    ("raw", "removed", "replaced"),
    [
        (
            "1. Concern for free air.  2. Interval increase in\n effusions.\n3. Catheter 4 cm above the carina.",
            "Concern for free air. Interval increase in effusions. Catheter 4 cm above the carina.",
            "Concern for free air. Interval increase in effusions. Catheter 4 cm above the carina.",
        ),
        (
            "No evidence of disease 2. Changes of kyphosis",
            "No evidence of disease 2. Changes of kyphosis",
            "No evidence of disease 2. Changes of kyphosis",
        ),
        (
            "1. Effusion 2. Atelectasis 3) edema",
            "Effusion Atelectasis edema",
            "Effusion Atelectasis edema",
        ),
        (
            "Fractures of ribs 4 and 5. Nodule 3.3 mm, measuring 2.3. Effusion (grade 2) is small.",
            "Fractures of ribs 4 and 5. Nodule 3.3 mm, measuring 2.3. Effusion (grade 2) is small.",
            "Fractures of ribs 4 and 5. Nodule 3.3 mm, measuring 2.3. Effusion (grade 2) is small.",
        ),
        (
            "Rib pain after a XXXX, XXXX XXXX steps. Normal chest x-XXXX.",
            "Rib pain after a, steps. Normal chest x.",
            "Rib pain after a [deid], [deid] steps. Normal chest x-[deid].",
        ),
        (
            "Dr. XXXX- XXXX was called at XXXX.",
            "Dr. was called at.",
            "Dr. [deid] was called at [deid].",
        ),
        (
            "___F with cough. ___-year-old man seen by Dr. ___ ___ at ___ PM.",
            "F with cough. year-old man seen by Dr. at PM.",
            "[deid] F with cough. [deid]-year-old man seen by Dr. [deid] at [deid] PM.",
        ),
        (
            "Nodules concerning for&lt;BR&gt;metastatic disease ( XXXX ) .",
            "Nodules concerning for metastatic disease.",
            "Nodules concerning for metastatic disease ([deid]).",
        ),
        ("  \n\t ", "", ""),
        ("XXXX. ___", "", "[deid]. [deid]"),
        ("XXXL and XXX-ray", "XXXL and ray", "XXXL and [deid]-ray"),
    ],
)
def test_clean_report_text_known_answers(raw, removed, replaced):
    assert clean_report_text(raw) == removed
    assert clean_report_text(raw, deid_replacement="[deid]") == replaced


def test_clean_report_text_options():
    raw = "1. Effusion.<br/>2. XXXX"
    assert clean_report_text(raw, remove_list_markers=False) == "1. Effusion. 2."
    assert clean_report_text(raw, remove_markup=False) == "Effusion.<br/>2."
    with pytest.raises(TypeError):
        clean_report_text(b"bytes")


@settings(max_examples=150, deadline=None)
@given(st.text(alphabet="X_x .,;:()-\n12a", max_size=40))
def test_clean_report_text_leaves_no_masks_or_extra_space(raw):
    for replacement in (None, "[deid]"):
        cleaned = clean_report_text(raw, deid_replacement=replacement)
        assert cleaned == cleaned.strip()
        assert "  " not in cleaned and "\n" not in cleaned
        assert "__" not in cleaned
        assert not re.search(r"(?<![A-Za-z0-9])X{3,}(?![A-Za-z0-9])", cleaned)


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
def wordpiece_folder(tmp_path_factory) -> Path:
    """A real WordPiece tokenizer trained on report sentences, saved as a Hugging Face fast tokenizer."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    backend = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    backend.normalizer = normalizers.BertNormalizer(lowercase=True)
    backend.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    backend.train_from_iterator(REPORT_SENTENCES, trainers.WordPieceTrainer(vocab_size=400, special_tokens=specials))
    cls_id, sep_id = backend.token_to_id("[CLS]"), backend.token_to_id("[SEP]")
    backend.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)],
    )
    backend.decoder = decoders.WordPiece()
    fast = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
    )
    folder = tmp_path_factory.mktemp("wordpiece")
    fast.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def report_tokenizer(wordpiece_folder) -> ReportTokenizer:
    return ReportTokenizer(str(wordpiece_folder), max_length=16, local_files_only=True)


def test_tokenizer_shapes_dtypes_and_word_mask(report_tokenizer):
    out = report_tokenizer("The heart size is normal, lungs are clear.")
    assert set(out) == {"input_ids", "attention_mask", "word_mask", "word_start", "word_group"}
    for value in out.values():
        assert value.shape == (16,)
    assert out["input_ids"].dtype == torch.long
    assert out["attention_mask"].dtype == torch.long
    assert out["word_mask"].dtype == torch.bool
    tokens = report_tokenizer.tokenizer.convert_ids_to_tokens(out["input_ids"].tolist())
    length = int(out["attention_mask"].sum())
    words = ["the", "heart", "size", "is", "normal", ",", "lungs", "are", "clear", "."]
    assert tokens[:length] == ["[CLS]", *words, "[SEP]"]
    assert tokens[length:] == ["[PAD]"] * (16 - length)
    assert out["attention_mask"].tolist() == [1] * length + [0] * (16 - length)
    expected = [token not in {"[CLS]", "[SEP]", "[PAD]", ",", "."} for token in tokens]
    assert out["word_mask"].tolist() == expected
    assert int(out["word_mask"].sum()) == 8
    assert report_tokenizer.truncated_count == 0


def test_tokenizer_keeps_punctuation_when_asked(wordpiece_folder):
    tokenizer = ReportTokenizer(str(wordpiece_folder), max_length=16, exclude_punctuation=False, local_files_only=True)
    out = tokenizer("Lungs are clear.")
    tokens = tokenizer.tokenizer.convert_ids_to_tokens(out["input_ids"].tolist())
    assert out["word_mask"].tolist() == [token not in {"[CLS]", "[SEP]", "[PAD]"} for token in tokens]
    assert out["word_mask"][tokens.index(".")]


def test_tokenizer_truncation_keeps_sep_and_is_counted(wordpiece_folder, caplog):
    tokenizer = ReportTokenizer(str(wordpiece_folder), max_length=8, local_files_only=True)
    sep_id = tokenizer.tokenizer.sep_token_id
    long_text = "No pleural effusion or pneumothorax. The heart size is normal. The lungs are clear."
    with caplog.at_level(logging.DEBUG, logger="sista_monai.transforms.report"):
        out = tokenizer(long_text)
        tokenizer(long_text)
    assert out["input_ids"].shape == (8,)
    assert out["input_ids"][-1].item() == sep_id
    assert out["attention_mask"].tolist() == [1] * 8
    assert not out["word_mask"][-1] and not out["word_mask"][0]
    assert tokenizer.truncated_count == 2
    tokenizer("Lungs clear.")
    assert tokenizer.truncated_count == 2
    assert tokenizer.report_count == 3
    info = [record for record in caplog.records if record.levelno == logging.INFO]
    assert len(info) == 1 and "max_length=8" in info[0].getMessage()
    assert any("2 of 2 reports truncated" in record.getMessage() for record in caplog.records)
    assert all("pleural" not in record.getMessage() for record in caplog.records)


def test_tokenizer_accepts_built_object_and_refuses_slow_ones(wordpiece_folder, tmp_path):
    from transformers import AutoTokenizer

    built = AutoTokenizer.from_pretrained(str(wordpiece_folder), local_files_only=True)
    from_object = ReportTokenizer(built, max_length=16)
    from_folder = ReportTokenizer(wordpiece_folder, max_length=16, local_files_only=True)
    text = "Small left pleural effusion."
    for name in ("input_ids", "attention_mask", "word_mask"):
        assert torch.equal(from_object(text)[name], from_folder(text)[name])
    restored = pickle.loads(pickle.dumps(from_folder))
    assert torch.equal(restored(text)["word_mask"], from_folder(text)["word_mask"])

    import transformers

    slow_class = getattr(transformers, "BertTokenizerLegacy", None)
    if slow_class is None:
        pytest.skip("this transformers version has no slow BertTokenizerLegacy to test the refusal with")
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "heart", "normal", "."]) + "\n")
    with pytest.raises(TypeError, match="not a fast tokenizer"):
        ReportTokenizer(slow_class(str(vocab)))
    with pytest.raises(ValueError, match="no room"):
        ReportTokenizer(built, max_length=2)
    with pytest.raises(OSError, match="cannot load tokenizer"):
        ReportTokenizer(str(tmp_path / "absent"), local_files_only=True)


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
