"""Property-based tests: whatever bytes or text arrive, the loader and the report parser either give a valid
result or raise the project's documented exception (``ChestXrayReadError`` / ``ReportError``), never another one.

Every property runs the real code on real files (written with pydicom into a temporary folder) and the real
WordPiece tokenizer; example counts are modest so the module runs in seconds.
"""

from __future__ import annotations

import contextlib
import html
import io
import logging
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pydicom
import pytest
import torch
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st
from pydicom.dataelem import RawDataElement
from pydicom.dataset import FileMetaDataset
from pydicom.tag import Tag
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian, SecondaryCaptureImageStorage

from sista_monai.data.tokenizer import train_wordpiece_tokenizer
from sista_monai.transforms import (
    MIMIC_SECTION_NAMES,
    ChestXray,
    ChestXrayReadError,
    CleanReport,
    ExtractReportSections,
    IUReport,
    LoadChestXray,
    ReportError,
    TokenizeReport,
    decode_report_bytes,
    parse_iu_report_xml,
    parse_mimic_report,
    read_chest_xray,
)

PROPERTY = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
SMALL = settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
DICOM_PREFIX = b"\x00" * 128 + b"DICM"
NUMBER_TEXT = st.text(alphabet="0123456789.-+eEnaifNI ", max_size=10)  # DS/IS strings, "nan", "inf", "", "1e999"


@pytest.fixture(scope="module")
def folder() -> Iterator[Path]:
    """One scratch folder for the module (hypothesis reruns a test body many times per fixture)."""
    with tempfile.TemporaryDirectory(prefix="sista-properties-") as name:
        yield Path(name)


def assert_valid_image(image: ChestXray, rows: int | None = None, columns: int | None = None) -> None:
    """A loaded radiograph: a 2-D float32 array in [0, 1] without NaN, and the header's size."""
    pixels = image.pixels
    assert pixels.ndim == 2 and pixels.dtype == np.float32
    assert np.isfinite(pixels).all()
    assert pixels.min() >= 0.0 and pixels.max() <= 1.0
    assert (image.meta["rows"], image.meta["columns"]) == pixels.shape
    if rows is not None:
        assert pixels.shape == (rows, columns)


def read_or_refuse(path: Path) -> ChestXray | None:
    """The loader's result, or ``None`` when it refused the file with the documented error naming it."""
    try:
        image = read_chest_xray(path)
    except ChestXrayReadError as err:
        assert str(path) in str(err) and err.reason
        event("refused with ChestXrayReadError")
        return None
    assert_valid_image(image)
    event("loaded")
    return image


# ------------------------------------------------------------------------------------------- DICOM loader
@PROPERTY
@given(data=st.binary(max_size=4096), with_prefix=st.booleans())
@example(data=b"", with_prefix=False)
@example(data=b"", with_prefix=True)
@example(data=b"\x89PNG\r\n\x1a\n", with_prefix=False)
@example(data=b"\xff\xd8\xff\xe0garbage", with_prefix=False)
def test_arbitrary_bytes_named_dcm(folder: Path, data: bytes, with_prefix: bool) -> None:
    path = folder / "arbitrary.dcm"
    path.write_bytes((DICOM_PREFIX if with_prefix else b"") + data)
    read_or_refuse(path)


def _base_dataset(rows: int, columns: int) -> pydicom.Dataset:
    ds = pydicom.Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    ds.file_meta.MediaStorageSOPInstanceUID = "1.2.3.4"
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.SOPInstanceUID = "1.2.3.4"
    ds.Modality = "DX"
    ds.Rows, ds.Columns = rows, columns
    return ds


def _raw_element(ds: pydicom.Dataset, tag: int, vr: str, text: str) -> None:
    """Store ``text`` as the element's bytes exactly as given (pydicom would refuse to convert "x" to IS)."""
    value = text.encode("ascii")
    value += b" " * (len(value) % 2)
    ds._dict[Tag(tag)] = RawDataElement(Tag(tag), vr, len(value), value, 0, False, True)


NUMBER = st.sampled_from(["1", "0.5", "100", "2048", "-1024", "1.5E2"]) | NUMBER_TEXT
VALUE_ELEMENTS = {
    "slope": st.none() | NUMBER,
    "intercept": st.none() | NUMBER,
    "center": st.none() | NUMBER | st.lists(NUMBER, min_size=1, max_size=3).map("\\".join),
    "width": st.none() | NUMBER | st.lists(NUMBER, min_size=1, max_size=3).map("\\".join),
    "function": st.none() | st.sampled_from(["LINEAR", "LINEAR_EXACT", "SIGMOID", "BOGUS", ""]),
    "presentation": st.none() | st.sampled_from(["IDENTITY", "INVERSE", "x"]),
    "spacing": st.none() | NUMBER | st.lists(NUMBER, min_size=1, max_size=3).map("\\".join),
    "implicit": st.booleans(),
}
PLAUSIBLE_STRUCTURE = {
    "rows": st.integers(1, 6),
    "columns": st.integers(1, 6),
    "bits_allocated": st.sampled_from([8, 16]),
    "bits_stored": st.none() | st.integers(1, 16),
    "pixel_representation": st.sampled_from([0, 1]),
    "photometric": st.sampled_from(["MONOCHROME1", "MONOCHROME2"]),
    "samples": st.just(1),
    "frames": st.sampled_from([None, "1"]),
    "pixel_bytes": st.just("exact"),
}
ANY_STRUCTURE = {
    "rows": st.integers(1, 6),
    "columns": st.integers(1, 6),
    "bits_allocated": st.sampled_from([8, 16, 1, 32, 12]),
    "bits_stored": st.none() | st.integers(0, 33),
    "pixel_representation": st.sampled_from([0, 1, 2]),
    "photometric": st.sampled_from(["MONOCHROME1", "MONOCHROME2", "RGB", "PALETTE COLOR", "", "monochrome2"]),
    "samples": st.sampled_from([1, 3, 0]),
    "frames": st.sampled_from([None, "1", "2", "0", "x"]),
    "pixel_bytes": st.sampled_from(["exact", "short", "long"]) | st.binary(max_size=64),
}
HEADERS = st.fixed_dictionaries({**PLAUSIBLE_STRUCTURE, **VALUE_ELEMENTS}) | st.fixed_dictionaries(
    {**ANY_STRUCTURE, **VALUE_ELEMENTS}
)
"""DICOM headers: a plausible grey-scale structure with arbitrary LUT/window/spacing text, or anything at all."""


@PROPERTY
@given(header=HEADERS, seed=st.integers(0, 2**16))
@example(
    header={"rows": 2, "columns": 2, "bits_allocated": 16, "bits_stored": 12, "pixel_representation": 0,
            "photometric": "MONOCHROME2", "samples": 1, "frames": None, "slope": "nan", "intercept": None,
            "center": None, "width": None, "function": None, "presentation": None, "spacing": None,
            "pixel_bytes": "exact", "implicit": False},
    seed=0,
)  # fmt: skip
@example(
    header={"rows": 2, "columns": 2, "bits_allocated": 8, "bits_stored": 8, "pixel_representation": 0,
            "photometric": "MONOCHROME2", "samples": 1, "frames": None, "slope": None, "intercept": None,
            "center": "nan", "width": "100", "function": None, "presentation": None, "spacing": None,
            "pixel_bytes": "exact", "implicit": False},
    seed=0,
)  # fmt: skip
def test_arbitrary_header_values(folder: Path, header: dict, seed: int) -> None:
    rows, columns = header["rows"], header["columns"]
    ds = _base_dataset(rows, columns)
    ds.BitsAllocated = header["bits_allocated"]
    bits_stored = header["bits_allocated"] if header["bits_stored"] is None else header["bits_stored"]
    ds.BitsStored, ds.HighBit = bits_stored, max(bits_stored - 1, 0)
    ds.PixelRepresentation = header["pixel_representation"]
    ds.SamplesPerPixel = header["samples"]
    ds.PhotometricInterpretation = header["photometric"]
    if header["frames"] is not None:
        _raw_element(ds, 0x00280008, "IS", header["frames"])
    for tag, keyword in (
        (0x00281053, "slope"),
        (0x00281052, "intercept"),
        (0x00281050, "center"),
        (0x00281051, "width"),
    ):
        if header[keyword] is not None:
            _raw_element(ds, tag, "DS", header[keyword])
    if header["spacing"] is not None:
        _raw_element(ds, 0x00280030, "DS", header["spacing"])
    if header["function"] is not None:
        ds.VOILUTFunction = header["function"]
    if header["presentation"] is not None:
        ds.PresentationLUTShape = header["presentation"]
    expected = rows * columns * max(header["samples"], 1) * max(header["bits_allocated"], 8) // 8
    rng = np.random.default_rng(seed)
    chosen = header["pixel_bytes"]
    if isinstance(chosen, bytes):
        pixel_data = chosen
    else:
        length = {"exact": expected, "short": max(expected // 2, 0), "long": expected + 7}[chosen]
        pixel_data = rng.integers(0, 256, length, dtype=np.uint8).tobytes()
    ds.PixelData = pixel_data + (b"\x00" if len(pixel_data) % 2 else b"")
    if header["implicit"]:
        ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
    path = folder / "header.dcm"
    ds.save_as(path, enforce_file_format=True)
    image = read_or_refuse(path)
    if image is not None:
        assert image.pixels.shape == (rows, columns)


def _valid_dicom_bytes(rows: int = 6, columns: int = 5) -> bytes:
    ds = _base_dataset(rows, columns)
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME1"
    ds.RescaleSlope, ds.RescaleIntercept, ds.WindowCenter, ds.WindowWidth = 2, -5, 1000, 1500
    ds.PatientName = "Müller^Jürgen"
    ds.InstitutionName = "Klinikum Süd"
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.PixelData = np.arange(rows * columns, dtype=np.uint16).tobytes()
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


VALID_DICOM = _valid_dicom_bytes()


@st.composite
def mutated_dicom(draw: st.DrawFn) -> bytes:
    """A valid file truncated, overwritten and/or extended at hypothesis-chosen places."""
    data = bytearray(VALID_DICOM)
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["truncate", "overwrite", "insert", "delete"]))
        at = draw(st.integers(0, max(len(data) - 1, 0)))
        if kind == "truncate":
            del data[at:]
        elif kind == "overwrite":
            chunk = draw(st.binary(min_size=1, max_size=8))
            data[at : at + len(chunk)] = chunk
        elif kind == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=8))
        else:
            del data[at : at + draw(st.integers(1, 8))]
    return bytes(data)


def test_the_unmutated_file_loads(folder: Path) -> None:
    path = folder / "valid.dcm"
    path.write_bytes(VALID_DICOM)
    image = read_chest_xray(path)
    assert_valid_image(image, 6, 5)
    assert image.meta["photometric_interpretation"] == "MONOCHROME1"
    assert "Müller" not in repr(image.meta) and "Klinikum" not in repr(image.meta)


@contextlib.contextmanager
def library_messages() -> Iterator[list[str]]:
    """Every warning and every ``pydicom`` log message emitted inside the block."""
    messages: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            messages.append(record.getMessage())

    handler = Collect()
    logging.getLogger("pydicom").addHandler(handler)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            yield messages
        messages.extend(str(warning.message) for warning in caught)
    finally:
        logging.getLogger("pydicom").removeHandler(handler)


@PROPERTY
@given(data=mutated_dicom())
def test_damaged_dicom_bytes(folder: Path, data: bytes) -> None:
    path = folder / "mutated.dcm"
    path.write_bytes(data)
    with library_messages() as messages:
        try:
            image = read_chest_xray(path)
        except ChestXrayReadError as err:
            assert str(path) in str(err) and err.reason
            messages.append(str(err))
            event("refused with ChestXrayReadError")
        else:
            assert_valid_image(image)
            event("loaded")
    for message in messages:  # header values pydicom never had to decode cannot leak into a warning or a log
        assert "ller^J" not in message and "Klinikum" not in message


@SMALL
@given(data=st.binary(max_size=512), suffix=st.sampled_from([".dcm", ".png", ".jpg", ""]))
def test_load_chest_xray_transform_raises_only_the_documented_error(folder: Path, data: bytes, suffix: str) -> None:
    path = folder / f"transform{suffix}"
    path.write_bytes(data)
    try:
        image = LoadChestXray()(path)
    except ChestXrayReadError as err:
        assert str(path) in str(err)
        return
    assert isinstance(image, torch.Tensor) and image.ndim == 3 and image.shape[0] == 1
    assert torch.isfinite(image).all() and 0.0 <= float(image.min()) <= float(image.max()) <= 1.0


# ------------------------------------------------------------------------------------------- report parser
SECTION_NAMES = sorted(set(MIMIC_SECTION_NAMES.values()) | {"preamble"})


@PROPERTY
@given(text=st.text(max_size=600))
@example(text="FINAL REPORT\nFINDINGS:\nIMPRESSION:")
@example(text="impression:impression:\n\nFINDINGS")
def test_mimic_parser_accepts_any_text(text: str) -> None:
    sections = parse_mimic_report(text)
    assert set(sections) <= set(SECTION_NAMES)
    assert all(isinstance(value, str) and value == value.strip() for value in sections.values())


BODY = st.text(
    alphabet=st.characters(blacklist_categories=("Cs", "Cc", "Zl", "Zp"), blacklist_characters=":"), max_size=80
)


@PROPERTY
@given(findings=BODY, impression=BODY)
def test_mimic_parser_returns_the_section_bodies(findings: str, impression: str) -> None:
    sections = parse_mimic_report(f"FINDINGS: {findings}\n IMPRESSION:\n{impression}\n")
    assert sections["findings"] == findings.strip()
    assert sections["impression"] == impression.strip()


XML_TEXT = st.text(
    alphabet=st.characters(
        blacklist_categories=("Cs", "Cc", "Co", "Cn"), blacklist_characters="\ufffe\uffff", whitelist_characters="\n\t"
    ),
    max_size=120,
)


@PROPERTY
@given(findings=XML_TEXT, impression=XML_TEXT, as_bytes=st.booleans())
def test_iu_parser_returns_the_escaped_section_texts(findings: str, impression: str, as_bytes: bool) -> None:
    document = (
        '<?xml version="1.0" encoding="utf-8"?><eCitation><uId id="CXR1"/><MedlineCitation><Article><Abstract>'
        f'<AbstractText Label="FINDINGS">{html.escape(findings, quote=False)}</AbstractText>'
        f'<AbstractText Label="IMPRESSION">{html.escape(impression, quote=False)}</AbstractText>'
        "</Abstract></Article></MedlineCitation></eCitation>"
    )
    report = parse_iu_report_xml(document.encode("utf-8") if as_bytes else document, source_name="item-1")
    assert isinstance(report, IUReport) and report.report_id == "CXR1"
    assert report.sections == {"findings": findings.strip(), "impression": impression.strip()}


@PROPERTY
@given(source=st.binary(max_size=400) | st.text(max_size=400).map(lambda t: "<" + t))
@example(source=b'<?xml version="1.0" encoding="no-such-codec"?><a/>')
@example(source=b'<?xml version="1.0" encoding="utf-16"?><a/>')
@example(source=b"<a>" * 5000 + b"</a>" * 5000)
@example(source="<AbstractText>" * 3000)
@example(
    source='<!DOCTYPE a [<!ENTITY b "bbbbbbbb"><!ENTITY c "&b;&b;&b;&b;&b;&b;">]><a><AbstractText Label="F">&c;</AbstractText></a>'
)
def test_iu_parser_accepts_any_document(source: bytes | str) -> None:
    try:
        report = parse_iu_report_xml(source, source_name="item-7")
    except ReportError as err:
        assert err.source == "item-7" and err.reason
        return
    assert isinstance(report, IUReport)
    assert all(isinstance(value, str) for value in report.sections.values())


@PROPERTY
@given(name=st.text(max_size=60))
@example(name="a\x00b.xml")
@example(name="")
@example(name=".")
def test_iu_parser_given_any_path_string(folder: Path, name: str) -> None:
    if name.lstrip().startswith("<"):
        return  # a document, not a path: covered above
    try:
        parse_iu_report_xml(str(folder / name) if name else name)
    except ReportError as err:
        assert err.reason
        assert "a\x00b" not in err.reason


@PROPERTY
@given(
    report=st.text(max_size=400) | st.binary(max_size=400),
    parser=st.sampled_from(["auto", "mimic", "iu"]),
    errors=st.sampled_from(["strict", "replace"]),
)
@example(report=b"FINDINGS: caf\xe9 au lait", parser="mimic", errors="strict")
@example(report="a\x00b.txt", parser="auto", errors="strict")
def test_section_extraction_then_cleaning(report: str | bytes, parser: str, errors: str) -> None:
    try:
        text = ExtractReportSections(parser, errors=errors)(report, source="item-3")
        cleaned = CleanReport()(text, source="item-3")
    except ReportError as err:
        assert err.source == "item-3" and err.reason
        if isinstance(report, str) and len(report) > 12:
            assert report not in str(err)  # report text never reaches an error message
        return
    assert isinstance(cleaned, str) and cleaned and cleaned == cleaned.strip()
    assert "  " not in cleaned and "\n" not in cleaned


@PROPERTY
@given(data=st.binary(max_size=200), errors=st.sampled_from(["strict", "replace", "ignore"]))
def test_report_bytes_decode_or_name_the_offset(data: bytes, errors: str) -> None:
    try:
        text = decode_report_bytes(data, "item-9", errors=errors)
    except ReportError as err:
        assert errors == "strict" and "offset" in err.reason
        return
    assert isinstance(text, str) and not text.startswith("\ufeff")


@pytest.fixture(scope="module")
def tokenize(tmp_path_factory: pytest.TempPathFactory) -> TokenizeReport:
    """The project's WordPiece tokenizer trained on a few report sentences (saved and reloaded from disk)."""
    sentences = [
        "The heart size is normal. The lungs are clear.",
        "No pleural effusion or pneumothorax. Mild cardiomegaly.",
        "Opacity in the right lower lobe, concerning for pneumonia.",
    ] * 4
    folder = train_wordpiece_tokenizer(sentences, tmp_path_factory.mktemp("tokenizer"), vocab_size=300)
    return TokenizeReport(str(folder), max_length=24)


@PROPERTY
@given(text=st.text(max_size=500))
@example(text="opacity " * 400)
@example(text="")
def test_tokenizer_gives_fixed_length_tensors_for_any_text(tokenize: TokenizeReport, text: str) -> None:
    out = tokenize(text)
    ids, attention, words = out["input_ids"], out["attention_mask"], out["word_mask"]
    assert ids.shape == attention.shape == words.shape == (24,)
    assert ids.dtype == torch.long and words.dtype == torch.bool
    length = int(attention.sum())
    assert 2 <= length <= 24 and bool(attention[:length].all()) and not bool(attention[length:].any())
    assert not bool((words & ~attention.bool()).any())
    tokenizer = tokenize.tokenizer.tokenizer
    assert int(ids[0]) == tokenizer.cls_token_id and int(ids[length - 1]) == tokenizer.sep_token_id
    # every word token points at its word's first piece, and repeats point at the first occurrence of the same pieces
    starts, groups = out["word_start"].tolist(), out["word_group"].tolist()
    pieces = {}
    for j in range(24):
        if not words[j]:
            assert starts[j] == groups[j] == -1
            continue
        assert 0 <= groups[j] <= starts[j] <= j and starts[starts[j]] == starts[j]
        pieces.setdefault(starts[j], []).append(int(ids[j]))
    for j, start in enumerate(starts):
        if start >= 0:
            assert pieces[groups[j]] == pieces[start]
