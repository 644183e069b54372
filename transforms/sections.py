"""Reading radiology reports into sections: the MIMIC-CXR free-text and IU X-ray XML parsers.

:func:`parse_mimic_report` and :func:`parse_iu_report_xml` split a raw report (MIMIC-CXR ``.txt`` text, an Indiana
University report XML) into its sections, :func:`compose_report_text` joins the chosen ones into the training text
(IMPRESSION then FINDINGS by default) and :func:`decode_report_bytes` turns a report's bytes into text. Errors are
:class:`~sista_monai.errors.ReportError` and never contain report text. The transform that does all of this for a
pipeline is :class:`~sista_monai.transforms.report.ExtractReportSections`.
"""

from __future__ import annotations

import os
import re
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from sista_monai.errors import ReportError

__all__ = [
    "DEFAULT_SECTION_ORDER",
    "MIMIC_SECTION_NAMES",
    "IUReport",
    "parse_mimic_report",
    "parse_iu_report_xml",
    "compose_report_text",
    "decode_report_bytes",
]

DEFAULT_SECTION_ORDER: tuple[str, ...] = ("impression", "findings")
"""Sections composed into the training text, in this order (the SISTA recipe)."""

MIMIC_SECTION_NAMES: dict[str, str] = {
    "findings": "findings",
    "finding": "findings",
    "impression": "impression",
    "impressions": "impression",
    "conclusion": "impression",
    "conclusions": "impression",
    "findings and impression": "impression",
    "findings and impressions": "impression",
    "impression and findings": "impression",
    "findings/impression": "impression",
    "impression/findings": "impression",
    "indication": "indication",
    "indications": "indication",
    "clinical indication": "indication",
    "reason for exam": "indication",
    "reason for examination": "indication",
    "clinical information": "indication",
    "history": "history",
    "clinical history": "history",
    "technique": "technique",
    "techniques": "technique",
    "procedure": "technique",
    "comparison": "comparison",
    "comparisons": "comparison",
    "examination": "examination",
    "exam": "examination",
    "type of examination": "examination",
    "recommendation": "recommendation",
    "recommendations": "recommendation",
    "recommendation(s)": "recommendation",
    "notification": "notification",
    "addendum": "addendum",
    "wet read": "wet_read",
}
"""Header names recognised by :func:`parse_mimic_report` (lower case) and the canonical key of each.

Only these names start a section, so a sentence such as ``Heart size: normal.`` stays in the text.
"""

_PREAMBLE = "preamble"


def _header_alternatives(names: Iterable[str]) -> str:
    """Regex alternation of header names, longest first, tolerant of spacing inside a name."""
    parts = []
    for name in sorted(names, key=len, reverse=True):
        words = [re.escape(word) for word in name.split()]
        pattern = r"[ \t]+".join(words)
        parts.append(pattern.replace(r"/", r"[ \t]*/[ \t]*"))
    return "|".join(parts)


_MIMIC_HEADER = re.compile(
    r"^[ \t]*(?P<name>" + _header_alternatives(MIMIC_SECTION_NAMES) + r")[ \t]*(?P<colon>:|$)[ \t]*",
    re.IGNORECASE | re.MULTILINE,
)
_FINAL_REPORT_LINE = re.compile(r"^[ \t]*FINAL[ \t]+REPORT[ \t]*$\n?", re.IGNORECASE | re.MULTILINE)


def parse_mimic_report(text: str) -> dict[str, str]:
    """Split a MIMIC-CXR free-text report into its sections.

    A section starts at a line whose first word(s) are a known header name (:data:`MIMIC_SECTION_NAMES`,
    any capitalisation, any spacing before or around the colon) followed by a colon; text may follow the
    colon on the same line. A known header name in upper case alone on its line (no colon) also starts a
    section. ``FINAL REPORT`` lines are dropped, text before the first header is kept under ``"preamble"``,
    and a header that occurs twice has its texts joined by a newline.

    Args:
        text: the report as written in the MIMIC-CXR ``.txt`` file.

    Returns:
        Section texts (stripped, inner newlines kept) keyed by canonical lower-case name, e.g.
        ``{"examination": ..., "indication": ..., "findings": ..., "impression": ...}``, in the order the
        sections appear. Sections absent from the report are absent from the result.

    Raises:
        TypeError: when ``text`` is not a string.
    """
    if not isinstance(text, str):
        raise TypeError(f"parse_mimic_report expects str, got {type(text).__name__}")
    text = _FINAL_REPORT_LINE.sub("", text)
    headers = [
        match for match in _MIMIC_HEADER.finditer(text) if match.group("colon") == ":" or match.group("name").isupper()
    ]
    sections: dict[str, str] = {}

    def add(name: str, body: str) -> None:
        body = body.strip()
        if not body:
            sections.setdefault(name, "")
            return
        sections[name] = f"{sections[name]}\n{body}" if sections.get(name) else body

    preamble = text[: headers[0].start()] if headers else text
    if preamble.strip():
        add(_PREAMBLE, preamble)
    for index, match in enumerate(headers):
        end = headers[index + 1].start() if index + 1 < len(headers) else len(text)
        name = " ".join(re.sub(r"\s*/\s*", "/", match.group("name")).lower().split())
        add(MIMIC_SECTION_NAMES[name], text[match.end() : end])
    return sections


@dataclass
class IUReport:
    """An Indiana University (OpenI) chest X-ray report.

    Attributes:
        report_id: the ``uId`` of the report (e.g. ``"CXR3"``), else the file stem.
        sections: section texts keyed by lower-case label (``findings``, ``impression``, ``indication``,
            ``comparison``); a label present in the XML with no text maps to ``""``.
        mesh_major: the ``MeSH/major`` terms, in document order.
        mesh_automatic: the ``MeSH/automatic`` terms, in document order.
        image_ids: the ``parentImage`` ids (image file stems), in document order.
    """

    report_id: str
    sections: dict[str, str] = field(default_factory=dict)
    mesh_major: list[str] = field(default_factory=list)
    mesh_automatic: list[str] = field(default_factory=list)
    image_ids: list[str] = field(default_factory=list)

    def text(self, order: Sequence[str] = DEFAULT_SECTION_ORDER, separator: str = " ") -> str:
        """The training text of this report; see :func:`compose_report_text`."""
        return compose_report_text(self.sections, order=order, separator=separator)


def _element_text(element: ET.Element) -> str:
    return "".join(element.itertext()).strip()


def parse_iu_report_xml(source: str | os.PathLike | bytes, source_name: str | None = None) -> IUReport:
    """Parse an Indiana University chest X-ray report XML (OpenI ``ecgen-radiology`` format).

    Args:
        source: a path to the XML file, or the XML document itself as bytes or as a string that starts
            with ``<`` (after leading whitespace).
        source_name: how errors name the report when ``source`` is a document rather than a path
            (e.g. the datalist item id); defaults to the path, or ``"<IU report XML>"``.

    Returns:
        The report's sections, MeSH terms, image ids and id.

    Raises:
        ReportError: when the file cannot be read, the XML is malformed, or it has no ``AbstractText``
            section. The message names the file (or ``source_name``) and never contains report text.
    """
    path: Path | None = None
    if isinstance(source, (bytes, bytearray)):
        document = bytes(source)
    elif isinstance(source, str) and source.lstrip().startswith("<"):
        try:
            document = source.encode("utf-8")
        except UnicodeEncodeError:
            raise ReportError(source_name or "<IU report XML>", "not valid text (unpaired surrogate)") from None
        if document.lstrip().startswith(b"<?xml"):
            document = re.sub(rb"^\s*<\?xml[^>]*\?>", b"", document, count=1)
    else:
        path = Path(source)
        try:
            document = path.read_bytes()
        except (OSError, ValueError) as err:  # ValueError: a NUL character in the path
            raise ReportError(source_name or path, f"cannot read report XML ({type(err).__name__})") from None
    name = source_name or (str(path) if path is not None else "<IU report XML>")
    try:
        root = ET.fromstring(document)
    except ET.ParseError as err:
        raise ReportError(name, f"malformed XML: {err}") from None
    except (LookupError, ValueError):
        raise ReportError(name, "malformed XML: unknown or unsupported encoding declaration") from None
    try:
        return _iu_report(root, name, path)
    except RecursionError:
        raise ReportError(name, "malformed XML: elements nested too deeply") from None


def _iu_report(root: ET.Element, name: str, path: Path | None) -> IUReport:
    """The :class:`IUReport` of a parsed document (see :func:`parse_iu_report_xml`)."""
    sections: dict[str, str] = {}
    abstract_texts = list(root.iter("AbstractText"))
    if not abstract_texts:
        raise ReportError(name, "no <AbstractText> section: not an IU report XML")
    for element in abstract_texts:
        label = (element.get("Label") or "").strip().lower()
        if not label:
            continue
        body = _element_text(element)
        sections[label] = f"{sections[label]} {body}".strip() if sections.get(label) else body

    uid = root.find("uId")
    report_id = (uid.get("id") if uid is not None else None) or (path.stem if path is not None else name)
    return IUReport(
        report_id=report_id,
        sections=sections,
        mesh_major=[t for t in (_element_text(e) for e in root.iterfind("MeSH/major")) if t],
        mesh_automatic=[t for t in (_element_text(e) for e in root.iterfind("MeSH/automatic")) if t],
        image_ids=[i for i in (e.get("id") for e in root.iterfind("parentImage")) if i],
    )


def compose_report_text(
    sections: Mapping[str, str], order: Sequence[str] = DEFAULT_SECTION_ORDER, separator: str = " "
) -> str:
    """Join the chosen sections of a report into one training text.

    Args:
        sections: section texts keyed by lower-case name (from :func:`parse_mimic_report` or
            :attr:`IUReport.sections`).
        order: the sections to use, in this order; missing or blank sections are skipped.
        separator: put between consecutive sections.

    Returns:
        The joined, stripped section texts; ``""`` when none of the sections has text.
    """
    parts = [sections[name].strip() for name in order if sections.get(name) and sections[name].strip()]
    return separator.join(parts)


def decode_report_bytes(
    data: bytes | bytearray, source: object, encoding: str = "utf-8", errors: str = "strict"
) -> str:
    """Decode the bytes of a report, naming the report when they are not valid text.

    A leading byte-order mark is removed.

    Args:
        data: the encoded report.
        source: the file path or item id that errors name.
        encoding: the codec, ``"utf-8"`` by default.
        errors: ``"strict"`` raises on an undecodable byte; ``"replace"`` substitutes U+FFFD; any other
            :meth:`bytes.decode` error handler is passed through.

    Returns:
        The decoded text.

    Raises:
        ReportError: when decoding fails under ``errors="strict"`` (the message gives the byte offset,
            never the text) or the encoding is unknown.
    """
    try:
        text = bytes(data).decode(encoding, errors=errors)
    except UnicodeDecodeError as err:
        bad = err.object[err.start]
        raise ReportError(
            source, f"not valid {encoding}: undecodable byte 0x{bad:02x} at offset {err.start} ({err.reason})"
        ) from None
    except LookupError:
        raise ReportError(source, f"unknown text encoding {encoding!r} or error handler {errors!r}") from None
    return text[1:] if text.startswith("\ufeff") else text
