"""Radiology report transforms: section extraction, cleaning and tokenisation.

A report travels through three steps before it reaches the text encoder:

1. :class:`ExtractReportSections` turns a raw report (MIMIC-CXR free text, an Indiana University
   report XML, or the bytes of either) into the training text, IMPRESSION followed by FINDINGS by default.
2. :class:`CleanReport` collapses whitespace and removes numbered-list markers and de-identification masks
   (``XXXX``, ``___``), and refuses a report that is empty afterwards.
3. :class:`TokenizeReport` turns the text into fixed-length ``input_ids``, ``attention_mask`` and
   ``word_mask`` tensors with a Hugging Face fast tokenizer.

Each step has an array form (operating on one report) and a dictionary form (operating on datalist items,
naming the item in its errors). Errors are :class:`~sista_monai.errors.ReportError` and their
messages never contain report text. :func:`filter_report_items` is the way to skip unusable reports with a
record of each skip instead of raising during training.
"""

from __future__ import annotations

import html
import logging
import os
import re
import unicodedata
import xml.etree.ElementTree as ET
from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform, Transform
from monai.utils import TransformBackends

from sista_monai.errors import ReportError

__all__ = [
    "DEFAULT_SECTION_ORDER",
    "MIMIC_SECTION_NAMES",
    "IUReport",
    "parse_mimic_report",
    "parse_iu_report_xml",
    "compose_report_text",
    "clean_report_text",
    "decode_report_bytes",
    "report_item_id",
    "filter_report_items",
    "ReportTokenizer",
    "load_tokenizer",
    "ExtractReportSections",
    "CleanReport",
    "TokenizeReport",
    "ExtractReportSectionsd",
    "ExtractReportSectionsD",
    "ExtractReportSectionsDict",
    "CleanReportd",
    "CleanReportD",
    "CleanReportDict",
    "TokenizeReportd",
    "TokenizeReportD",
    "TokenizeReportDict",
    "word_positions",
]

logger = logging.getLogger(__name__)

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
        image_ids=[e.get("id") for e in root.iterfind("parentImage") if e.get("id")],
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


def decode_report_bytes(data: bytes, source: object, encoding: str = "utf-8", errors: str = "strict") -> str:
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


_MASK_UNIT = r"(?:(?<![A-Za-z0-9])X{3,}(?![A-Za-z0-9])|(?<!_)_{2,}(?!_))"
_MASK_RUN = _MASK_UNIT + r"(?:[\s\-/]*" + _MASK_UNIT + r")*"
_MASK_RUN_RE = re.compile(_MASK_RUN)
_MASK_RUN_WITH_HYPHENS_RE = re.compile(r"-?" + _MASK_RUN + r"-?")
_BR_TAG = re.compile(r"<\s*/?\s*br\s*/?\s*>", re.IGNORECASE)
_LIST_MARKER = re.compile(r"(?<!\S)(?:\((?P<enclosed>\d{1,2})\)|(?P<number>\d{1,2})(?P<mark>[.)]))(?=\s|$)")
_PUNCTUATION_RUN = re.compile(r"[.,;:](?:\s*[.,;:])+")
_SPACE_BEFORE_PUNCTUATION = re.compile(r"\s+([.,;:!?%)\]])")
_SPACE_AFTER_OPENING = re.compile(r"([(\[])\s+")
_EMPTY_BRACKETS = re.compile(r"\(\s*\)|\[\s*\]")
_LEADING_PUNCTUATION = re.compile(r"^[\s.,;:]+")


def _remove_list_markers(text: str) -> str:
    """Remove numbered-list markers (``1.``, ``2)``, ``(3)``) preceded by whitespace or the text start.

    ``(3)`` is always a marker. ``2)`` is one unless it closes an open parenthesis (``(grade 2)``).
    ``2.`` is one at the start of the text or of a line, after sentence punctuation (``". 2. "``), when
    it continues the numbering of the previous marker (``"... disease 2. Changes"`` after ``1.``), or when
    it is ``1.`` and a ``2.`` follows; a count ending a sentence (``"ribs 4 and 5. No"``) is kept.
    """
    matches = list(_LIST_MARKER.finditer(text))
    later_numbers = [int(m.group("number") or m.group("enclosed")) for m in matches]
    pieces: list[str] = []
    last_end = 0
    expected: int | None = None
    for index, match in enumerate(matches):
        before = text[: match.start()]
        if match.group("enclosed") is not None:
            number, accept = int(match.group("enclosed")), True
        elif match.group("mark") == ")":
            number, accept = int(match.group("number")), before.count("(") <= before.count(")")
        else:
            number = int(match.group("number"))
            previous = before.rstrip(" \t")
            accept = (
                not previous
                or previous.endswith(("\n", ".", ";", ":", "!", "?"))
                or number == expected
                or (number == 1 and 2 in later_numbers[index + 1 :])
            )
        if accept:
            pieces.append(text[last_end : match.start()])
            pieces.append(" ")
            last_end = match.end()
            expected = number + 1
    pieces.append(text[last_end:])
    return "".join(pieces)


def _spaced_replacement(match: re.Match[str], replacement: str) -> str:
    """``replacement``, with a space on each side where the mask was glued to a letter or digit (``___F``)."""
    text = match.string
    before = " " if match.start() > 0 and text[match.start() - 1].isalnum() else ""
    after = " " if match.end() < len(text) and text[match.end()].isalnum() else ""
    return f"{before}{replacement}{after}"


def _remove_masks(text: str, deid_replacement: str | None) -> str:
    """Remove (``None``) or replace each run of de-identification masks (see :func:`clean_report_text`)."""
    if deid_replacement is None:
        return _MASK_RUN_WITH_HYPHENS_RE.sub(" ", text)
    return _MASK_RUN_RE.sub(lambda match: _spaced_replacement(match, deid_replacement), text)


def _strongest_punctuation(match: re.Match[str]) -> str:
    run = match.group(0)
    for mark in ".;:":
        if mark in run:
            return mark
    return run[0]


def clean_report_text(
    text: str,
    deid_replacement: str | None = None,
    *,
    remove_list_markers: bool = True,
    remove_markup: bool = True,
) -> str:
    """Normalise a report text for tokenisation.

    In order: HTML entities are decoded and ``<BR>`` tags become spaces (``remove_markup``);
    de-identification masks are removed or replaced; numbered-list markers are removed
    (``remove_list_markers``); whitespace (newlines included) collapses to single spaces; spaces before
    punctuation and inside brackets are removed, and punctuation left doubled by a removal (``". ."``)
    collapses to one mark.

    De-identification masks are whole words of 3 or more ``X`` (``XXXX``, as in the IU reports) and runs
    of 2 or more underscores (``___``, as in MIMIC-CXR), the latter also when glued to a word (MIMIC
    writes ``___F`` for a masked age). Consecutive masks separated only by spaces, hyphens
    or slashes (``XXXX-XXXX``, ``XXXX XXXX``, ``___ ___``) count as one. With ``deid_replacement=None``
    a mask is removed together with a hyphen that glues it to a word (``"x-XXXX"`` becomes ``"x"``);
    otherwise each run of masks becomes one ``deid_replacement`` token (e.g. ``"[deid]"``).

    List markers are ``1.``, ``2)`` or ``(3)`` at the start of an item: at the start of the text or of a
    line, after the end of a sentence, or continuing the numbering of the previous marker; ``2)`` and
    ``(3)`` also after any space unless the ``2)`` closes an open parenthesis. Decimal numbers
    (``3.3 mm``), counts (``4 cm``) and a number ending a sentence (``"ribs 4 and 5. No"``) are kept.

    Args:
        text: the report or section text.
        deid_replacement: the token each run of de-identification masks becomes; ``None`` removes them.
        remove_list_markers: remove numbered-list markers.
        remove_markup: decode HTML entities and turn ``<BR>`` tags into spaces.

    Returns:
        The cleaned text; may be ``""`` (the transforms turn that into an error).

    Raises:
        TypeError: when ``text`` is not a string.
    """
    if not isinstance(text, str):
        raise TypeError(f"clean_report_text expects str, got {type(text).__name__}")
    if remove_markup:
        text = _BR_TAG.sub(" ", html.unescape(text))
    text = _remove_masks(text, deid_replacement)
    if remove_list_markers:
        text = _remove_list_markers(text)
    text = " ".join(text.split())
    unbracketed = _EMPTY_BRACKETS.sub("", text)
    while unbracketed != text:  # "_()_" is a mask once its empty brackets are gone
        text = " ".join(_remove_masks(unbracketed, deid_replacement).split())
        unbracketed = _EMPTY_BRACKETS.sub("", text)
    text = _SPACE_BEFORE_PUNCTUATION.sub(r"\1", text)
    text = _SPACE_AFTER_OPENING.sub(r"\1", text)
    text = _PUNCTUATION_RUN.sub(_strongest_punctuation, text)
    text = _LEADING_PUNCTUATION.sub("", text)
    return " ".join(text.split())


def report_item_id(data: Mapping[Hashable, Any], id_key: str | None = "id", image_key: str | None = "image") -> str:
    """The name of a datalist item for error messages and skip records.

    Args:
        data: the datalist item.
        id_key: the key of the item's identifier, used when present.
        image_key: the key of the item's image, used when there is no id: a path, the first path of a
            list, or the ``filename_or_obj`` of a loaded MetaTensor.

    Returns:
        The identifier, the image path, or ``"<item without id>"``.
    """
    if id_key is not None and data.get(id_key) is not None:
        return str(data[id_key])
    image = data.get(image_key) if image_key is not None else None
    if isinstance(image, (list, tuple)) and image:
        image = image[0]
    if isinstance(image, (str, os.PathLike)):
        return os.fspath(image)
    meta = getattr(image, "meta", None)
    if isinstance(meta, Mapping) and meta.get("filename_or_obj"):
        return str(meta["filename_or_obj"])
    return "<item without id>"


_PATH_SUFFIXES = (".txt", ".xml")


def _is_report_path(value: str) -> bool:
    return "\n" not in value and len(value) < 4096 and value.lower().endswith(_PATH_SUFFIXES) and os.path.isfile(value)


class ExtractReportSections(Transform):
    """Turn a raw report into its training text: the chosen sections joined in order.

    Accepted inputs: MIMIC-CXR free text (``str``), an IU report XML document (``str`` starting with
    ``<``), the bytes of either, a path (``os.PathLike``, or a ``str`` without newline naming an existing
    ``.txt``/``.xml`` file), an :class:`IUReport`, or a mapping of already parsed sections.

    Args:
        parser: ``"mimic"`` (:func:`parse_mimic_report`), ``"iu"`` (:func:`parse_iu_report_xml`) or
            ``"auto"``: IU for ``.xml`` paths and documents that start with ``<``, MIMIC otherwise.
        order: the sections composed into the training text, in order (IMPRESSION then FINDINGS by
            default); see :func:`compose_report_text`.
        fallback: sections composed instead when none of ``order`` has text; the default
            ``("preamble",)`` keeps a MIMIC report without any recognised header.
        separator: put between consecutive sections.
        encoding: the codec of byte and file inputs.
        errors: how undecodable bytes are handled (``"strict"`` raises, ``"replace"`` substitutes U+FFFD).

    Raises:
        ValueError: when ``parser`` is unknown.
    """

    backend: list[TransformBackends] = []
    parsers = ("auto", "mimic", "iu")

    def __init__(
        self,
        parser: str = "auto",
        order: Sequence[str] = DEFAULT_SECTION_ORDER,
        fallback: Sequence[str] = (_PREAMBLE,),
        separator: str = " ",
        encoding: str = "utf-8",
        errors: str = "strict",
    ) -> None:
        if parser not in self.parsers:
            raise ValueError(f"parser must be one of {self.parsers}, got {parser!r}")
        self.parser = parser
        self.order = tuple(order)
        self.fallback = tuple(fallback)
        self.separator = separator
        self.encoding = encoding
        self.errors = errors

    def sections(self, report: Any, source: object = "report") -> Mapping[str, str]:
        """Parse ``report`` into its sections.

        Args:
            report: any input accepted by this transform.
            source: how errors name the report (item id or path).

        Returns:
            Section texts keyed by lower-case name.

        Raises:
            ReportError: when the report cannot be read, decoded or parsed.
            TypeError: when ``report`` has an unsupported type.
        """
        if isinstance(report, IUReport):
            return report.sections
        if isinstance(report, Mapping):
            return report
        if isinstance(report, str) and _is_report_path(report):
            report = Path(report)
        if isinstance(report, os.PathLike):
            path = Path(report)
            if self.parser == "iu" or (self.parser == "auto" and path.suffix.lower() == ".xml"):
                return parse_iu_report_xml(path).sections
            try:
                report = path.read_bytes()
            except OSError as err:
                raise ReportError(path, f"cannot read report file ({type(err).__name__})") from None
            source = path
        if isinstance(report, (bytes, bytearray)):
            if self.parser == "iu" or (self.parser == "auto" and bytes(report).lstrip().startswith(b"<")):
                return parse_iu_report_xml(bytes(report), source_name=str(source)).sections
            report = decode_report_bytes(report, source, self.encoding, self.errors)
        if not isinstance(report, str):
            raise TypeError(f"{source}: unsupported report type {type(report).__name__}")
        if self.parser == "iu" or (self.parser == "auto" and report.lstrip().startswith("<")):
            return parse_iu_report_xml(report, source_name=str(source)).sections
        return parse_mimic_report(report)

    def __call__(self, report: Any, source: object = "report") -> str:
        """Return the training text of ``report``.

        Args:
            report: any input accepted by this transform.
            source: how errors name the report (item id or path).

        Returns:
            The composed text, ``""`` when neither ``order`` nor ``fallback`` sections have text.
        """
        sections = self.sections(report, source)
        text = compose_report_text(sections, self.order, self.separator)
        if not text and self.fallback:
            text = compose_report_text(sections, self.fallback, self.separator)
        return text


class CleanReport(Transform):
    """Clean a report text with :func:`clean_report_text` and refuse an empty result.

    Args:
        deid_replacement: the token each run of de-identification masks becomes; ``None`` removes them.
        remove_list_markers: remove numbered-list markers.
        remove_markup: decode HTML entities and turn ``<BR>`` tags into spaces.
        allow_empty: return ``""`` for a report that is empty after cleaning instead of raising.
        encoding: the codec used when the report arrives as bytes.

    Raises:
        ReportError: (on call) when the report is empty after cleaning and ``allow_empty`` is false, or
            when bytes cannot be decoded.
    """

    backend: list[TransformBackends] = []

    def __init__(
        self,
        deid_replacement: str | None = None,
        remove_list_markers: bool = True,
        remove_markup: bool = True,
        allow_empty: bool = False,
        encoding: str = "utf-8",
    ) -> None:
        self.deid_replacement = deid_replacement
        self.remove_list_markers = remove_list_markers
        self.remove_markup = remove_markup
        self.allow_empty = allow_empty
        self.encoding = encoding

    def __call__(self, text: str | bytes, source: object = "report") -> str:
        """Return the cleaned ``text``; errors name ``source`` (item id or path)."""
        if isinstance(text, (bytes, bytearray)):
            text = decode_report_bytes(text, source, self.encoding)
        cleaned = clean_report_text(
            text,
            self.deid_replacement,
            remove_list_markers=self.remove_list_markers,
            remove_markup=self.remove_markup,
        )
        if not cleaned and not self.allow_empty:
            raise ReportError(source, "report is empty after cleaning")
        return cleaned


def _is_punctuation_char(char: str) -> bool:
    """BERT's definition: Unicode punctuation, or any non-alphanumeric printable ASCII character."""
    code = ord(char)
    if 33 <= code <= 47 or 58 <= code <= 64 or 91 <= code <= 96 or 123 <= code <= 126:
        return True
    return unicodedata.category(char).startswith("P")


_SUBWORD_MARKERS = ("##", "\u0120", "\u2581", "\u010a")


def _is_punctuation_token(token: str) -> bool:
    """Whether a vocabulary entry carries no word: only punctuation once subword markers are removed."""
    surface = token
    for marker in _SUBWORD_MARKERS:
        if surface.startswith(marker):
            surface = surface[len(marker) :]
    surface = surface.strip()
    return all(_is_punctuation_char(char) for char in surface)


def word_positions(
    input_ids: torch.Tensor, word_mask: torch.Tensor, word_ids: Sequence[int | None]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Where each word of a tokenised report starts, and which earlier occurrence of the same word it repeats.

    A WordPiece tokenizer splits a rare word into pieces (``"pneumothorax"`` → ``"pneumo"``, ``"##thorax"``);
    token-level alignment should see the word once (MGCA aggregates a word's pieces), and a word written twice
    (FINDINGS echoed in IMPRESSION) is the same word, not a negative of itself.

    Args:
        input_ids: ``(T,)`` token ids.
        word_mask: ``(T,)`` bool, the tokens that count as words.
        word_ids: the fast tokenizer's word index of every token (``None`` for special tokens), e.g.
            ``BatchEncoding.word_ids()``.

    Returns:
        ``(word_start, word_group)``, two ``(T,)`` long tensors, ``-1`` outside ``word_mask``: the position of
        the first piece of each token's word, and the position of the first piece of the first occurrence of
        the same word (same piece ids) in the report.
    """
    length = len(input_ids)
    word_start = torch.full((length,), -1, dtype=torch.long)
    word_group = torch.full((length,), -1, dtype=torch.long)
    ids = input_ids.tolist()
    valid = word_mask.tolist()
    spans: list[tuple[int, int]] = []
    previous: int | None = None
    for position in range(length):
        word = word_ids[position] if position < len(word_ids) else None
        if not valid[position] or word is None:
            previous = None
            continue
        if word != previous or not spans:
            spans.append((position, position + 1))
        else:
            spans[-1] = (spans[-1][0], position + 1)
        previous = word
    first_seen: dict[tuple[int, ...], int] = {}
    for start, end in spans:
        group = first_seen.setdefault(tuple(ids[start:end]), start)
        word_start[start:end] = start
        word_group[start:end] = group
    return word_start, word_group


def load_tokenizer(
    name_or_path: str | os.PathLike | Any, local_files_only: bool = True, revision: str | None = None
) -> Any:
    """The Hugging Face tokenizer of a local folder or hub id, loaded once (``AutoTokenizer.from_pretrained``).

    The one loader of the project: a bundle builds its ``loaded_tokenizer`` component with it and hands the object
    to every consumer (the report transforms, the zone/lesion word transforms, the text encoder, the heat maps,
    pretraining inference); each consumer also still accepts a folder or hub id, which it loads through here.

    Args:
        name_or_path: a local folder, a hub id, or an already-built tokenizer (returned as is).
        local_files_only: load from the local folder or cache only (no hub download).
        revision: the hub revision (branch, tag or commit) to load; pin a commit for reproducibility.

    Returns:
        The tokenizer.

    Raises:
        OSError: when the tokenizer cannot be loaded (the message names it).
    """
    if not isinstance(name_or_path, (str, os.PathLike)):
        return name_or_path
    from transformers import AutoTokenizer

    name = os.fspath(name_or_path)
    try:
        return AutoTokenizer.from_pretrained(name, local_files_only=local_files_only, revision=revision)
    except (OSError, ValueError) as err:
        raise OSError(f"cannot load tokenizer {name!r}: {err}") from err


class ReportTokenizer:
    """Fixed-length tokenisation of report texts with a Hugging Face fast tokenizer.

    Every report becomes ``max_length`` token ids: special tokens added, padded to ``max_length``,
    truncated when longer (not an error; the closing special token such as ``[SEP]`` is kept). Truncated
    reports are counted in :attr:`truncated_count`; the first truncation is logged at INFO and every one
    at DEBUG, with counts only, never the text. The counters are per process (each DataLoader worker has
    its own).

    ``word_mask`` marks the tokens that count as words for token-level (patch-word) alignment: not a
    special token, not padding and, with ``exclude_punctuation``, not a token made only of punctuation
    (``"."``, ``","``, ``"##/"``). Word-piece continuations (``"##ing"``) are words.

    Args:
        tokenizer: a hub id or a local folder (loaded with :func:`load_tokenizer`), or an already-built fast
            tokenizer object.
        max_length: the length of every output, special tokens included.
        exclude_punctuation: leave pure-punctuation tokens out of ``word_mask``.
        local_files_only: load from the local folder or cache only (no hub download).
        revision: the hub revision (branch, tag or commit) to load; pin a commit for reproducibility.

    Raises:
        TypeError: when the tokenizer is a slow (pure-Python) tokenizer.
        ValueError: when it has no padding token or ``max_length`` leaves no room for text.
        OSError: when the tokenizer cannot be loaded.
    """

    def __init__(
        self,
        tokenizer: str | os.PathLike | Any,
        max_length: int = 112,
        exclude_punctuation: bool = True,
        local_files_only: bool = True,
        revision: str | None = None,
    ) -> None:
        tokenizer = load_tokenizer(tokenizer, local_files_only, revision)
        if not getattr(tokenizer, "is_fast", False):
            raise TypeError(
                f"{type(tokenizer).__name__} is not a fast tokenizer: ReportTokenizer needs a Hugging Face fast "
                "(Rust `tokenizers`) tokenizer, i.e. a folder or hub id with tokenizer.json or a "
                "PreTrainedTokenizerFast object"
            )
        if tokenizer.pad_token_id is None:
            raise ValueError(f"{type(tokenizer).__name__} has no padding token; set tokenizer.pad_token first")
        n_special = tokenizer.num_special_tokens_to_add(pair=False)
        if max_length <= n_special:
            raise ValueError(f"max_length={max_length} leaves no room for text after {n_special} special tokens")
        self.tokenizer = tokenizer
        self.max_length = int(max_length)
        self.exclude_punctuation = exclude_punctuation
        self.truncated_count = 0
        self.report_count = 0
        self._non_word = self._non_word_table()

    def _non_word_table(self) -> torch.Tensor:
        """A boolean per vocabulary id: True for special tokens and, optionally, pure punctuation."""
        size = len(self.tokenizer)
        non_word = torch.zeros(size, dtype=torch.bool)
        special = [i for i in self.tokenizer.all_special_ids if 0 <= i < size]
        non_word[special] = True
        if self.exclude_punctuation:
            tokens = self.tokenizer.convert_ids_to_tokens(list(range(size)))
            punctuation = [i for i, token in enumerate(tokens) if token is None or _is_punctuation_token(token)]
            non_word[punctuation] = True
        return non_word

    def _was_truncated(self, encoding: Any, text: str) -> bool:
        encodings = getattr(encoding, "encodings", None)
        if encodings:
            return bool(encodings[0].overflowing)
        return len(self.tokenizer(text, add_special_tokens=True)["input_ids"]) > self.max_length

    def __call__(self, text: str) -> dict[str, torch.Tensor]:
        """Tokenise one report.

        Args:
            text: the cleaned report text.

        Returns:
            ``input_ids`` (long), ``attention_mask`` (long), ``word_mask`` (bool), and ``word_start`` and
            ``word_group`` (long, see :func:`word_positions`), each a 1-D tensor of length ``max_length``.

        Raises:
            TypeError: when ``text`` is not a string.
        """
        if not isinstance(text, str):
            raise TypeError(f"ReportTokenizer expects str, got {type(text).__name__}")
        encoding = self.tokenizer(
            text,
            max_length=self.max_length,
            padding="max_length",
            truncation=True,
            return_attention_mask=True,
        )
        input_ids = torch.as_tensor(encoding["input_ids"], dtype=torch.long)
        attention_mask = torch.as_tensor(encoding["attention_mask"], dtype=torch.long)
        self.report_count += 1
        if self._was_truncated(encoding, text):
            self.truncated_count += 1
            if self.truncated_count == 1:
                logger.info(
                    "a report is longer than max_length=%d tokens and was truncated; truncations are counted "
                    "in ReportTokenizer.truncated_count and logged at DEBUG",
                    self.max_length,
                )
            logger.debug(
                "report truncated to max_length=%d tokens (%d of %d reports truncated so far)",
                self.max_length,
                self.truncated_count,
                self.report_count,
            )
        word_mask = attention_mask.bool() & ~self._non_word[input_ids.clamp(0, len(self._non_word) - 1)]
        word_start, word_group = word_positions(input_ids, word_mask, encoding.word_ids())
        return {
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "word_mask": word_mask,
            "word_start": word_start,
            "word_group": word_group,
        }


class TokenizeReport(Transform):
    """Tokenise a report text into fixed-length tensors with a :class:`ReportTokenizer`.

    Args:
        tokenizer: a :class:`ReportTokenizer` (used as is; the other arguments are then ignored), a hub
            id, a local folder or a fast tokenizer object.
        max_length: the length of every output, special tokens included.
        exclude_punctuation: leave pure-punctuation tokens out of ``word_mask``.
        local_files_only: load from the local folder or cache only.
        revision: the hub revision to load.
    """

    backend = [TransformBackends.TORCH]

    def __init__(
        self,
        tokenizer: ReportTokenizer | str | os.PathLike | Any,
        max_length: int = 112,
        exclude_punctuation: bool = True,
        local_files_only: bool = True,
        revision: str | None = None,
    ) -> None:
        if isinstance(tokenizer, ReportTokenizer):
            self.tokenizer = tokenizer
        else:
            self.tokenizer = ReportTokenizer(
                tokenizer,
                max_length=max_length,
                exclude_punctuation=exclude_punctuation,
                local_files_only=local_files_only,
                revision=revision,
            )

    def __call__(self, text: str) -> dict[str, torch.Tensor]:
        """Return ``input_ids``, ``attention_mask``, ``word_mask``, ``word_start`` and ``word_group`` (length ``max_length``)."""
        return self.tokenizer(text)


class ExtractReportSectionsd(MapTransform):
    """Dictionary-based wrapper of :class:`ExtractReportSections`: replaces each key's raw report by its text.

    Args:
        keys: keys of the reports to transform. See also: monai.transforms.MapTransform
        parser: ``"mimic"``, ``"iu"`` or ``"auto"``.
        order: the sections composed into the training text, in order.
        fallback: sections composed instead when none of ``order`` has text.
        separator: put between consecutive sections.
        encoding: the codec of byte and file inputs.
        errors: how undecodable bytes are handled.
        id_key: the key of the item id that errors name; when absent, the ``image_key`` path is used.
        image_key: the key of the item's image.
        allow_missing_keys: don't raise exception if key is missing.
    """

    backend = ExtractReportSections.backend

    def __init__(
        self,
        keys: KeysCollection = "report",
        parser: str = "auto",
        order: Sequence[str] = DEFAULT_SECTION_ORDER,
        fallback: Sequence[str] = (_PREAMBLE,),
        separator: str = " ",
        encoding: str = "utf-8",
        errors: str = "strict",
        id_key: str | None = "id",
        image_key: str | None = "image",
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.extractor = ExtractReportSections(parser, order, fallback, separator, encoding, errors)
        self.id_key = id_key
        self.image_key = image_key

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        source = report_item_id(d, self.id_key, self.image_key)
        for key in self.key_iterator(d):
            d[key] = self.extractor(d[key], source=source)
        return d


class CleanReportd(MapTransform):
    """Dictionary-based wrapper of :class:`CleanReport`; errors name the item.

    Args:
        keys: keys of the reports to clean. See also: monai.transforms.MapTransform
        deid_replacement: the token each run of de-identification masks becomes; ``None`` removes them.
        remove_list_markers: remove numbered-list markers.
        remove_markup: decode HTML entities and turn ``<BR>`` tags into spaces.
        allow_empty: keep a report that is empty after cleaning instead of raising.
        encoding: the codec used when a report arrives as bytes.
        id_key: the key of the item id that errors name; when absent, the ``image_key`` path is used.
        image_key: the key of the item's image.
        allow_missing_keys: don't raise exception if key is missing.

    Raises:
        ReportError: (on call) ``ReportError(item_id, "report is empty after cleaning")``.
    """

    backend = CleanReport.backend

    def __init__(
        self,
        keys: KeysCollection = "report",
        deid_replacement: str | None = None,
        remove_list_markers: bool = True,
        remove_markup: bool = True,
        allow_empty: bool = False,
        encoding: str = "utf-8",
        id_key: str | None = "id",
        image_key: str | None = "image",
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.cleaner = CleanReport(deid_replacement, remove_list_markers, remove_markup, allow_empty, encoding)
        self.id_key = id_key
        self.image_key = image_key

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        source = report_item_id(d, self.id_key, self.image_key)
        for key in self.key_iterator(d):
            d[key] = self.cleaner(d[key], source=source)
        return d


class TokenizeReportd(MapTransform):
    """Dictionary-based wrapper of :class:`TokenizeReport`.

    The report text under each key is kept; the three tensors are written under ``input_ids_key``,
    ``attention_mask_key`` and ``word_mask_key``. Each output key may contain ``{key}``, replaced by the
    report's key (e.g. ``"{key}_input_ids"`` gives ``"report_input_ids"``), which is required when several
    keys are tokenised.

    Args:
        keys: keys of the report texts. See also: monai.transforms.MapTransform
        tokenizer: a :class:`ReportTokenizer`, a hub id, a local folder or a fast tokenizer object.
        max_length: the length of every output, special tokens included.
        exclude_punctuation: leave pure-punctuation tokens out of ``word_mask``.
        local_files_only: load from the local folder or cache only.
        revision: the hub revision to load.
        input_ids_key: where the token ids go (default ``"input_ids"``).
        attention_mask_key: where the attention mask goes (default ``"attention_mask"``).
        word_mask_key: where the word mask goes (default ``"word_mask"``).
        word_start_key: where the first-piece positions of the words go (default ``"word_start"``, or
            ``"{key}_word_start"`` when several keys are tokenised).
        word_group_key: where the repeated-word groups go (default ``"word_group"``, or ``"{key}_word_group"``).
        allow_missing_keys: don't raise exception if key is missing.

    Raises:
        ValueError: when several keys would write the same output keys.
    """

    backend = TokenizeReport.backend

    def __init__(
        self,
        keys: KeysCollection,
        tokenizer: ReportTokenizer | str | os.PathLike | Any,
        max_length: int = 112,
        exclude_punctuation: bool = True,
        local_files_only: bool = True,
        revision: str | None = None,
        input_ids_key: str = "input_ids",
        attention_mask_key: str = "attention_mask",
        word_mask_key: str = "word_mask",
        word_start_key: str | None = None,
        word_group_key: str | None = None,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        several = len(self.keys) > 1
        word_start_key = word_start_key or ("{key}_word_start" if several else "word_start")
        word_group_key = word_group_key or ("{key}_word_group" if several else "word_group")
        self.output_keys = {
            "input_ids": input_ids_key,
            "attention_mask": attention_mask_key,
            "word_mask": word_mask_key,
            "word_start": word_start_key,
            "word_group": word_group_key,
        }
        if len(self.keys) > 1 and not all("{key}" in name for name in self.output_keys.values()):
            raise ValueError(
                f"tokenising {len(self.keys)} keys needs output keys containing '{{key}}', got {self.output_keys}"
            )
        self.tokenize = TokenizeReport(tokenizer, max_length, exclude_punctuation, local_files_only, revision)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            for name, value in self.tokenize(d[key]).items():
                d[self.output_keys[name].format(key=key)] = value
        return d


def filter_report_items(
    items: Iterable[Mapping[Hashable, Any]],
    key: str = "report",
    *,
    id_key: str | None = "id",
    image_key: str | None = "image",
    parser: str | None = None,
    order: Sequence[str] = DEFAULT_SECTION_ORDER,
    fallback: Sequence[str] = (_PREAMBLE,),
    **clean_kwargs: Any,
) -> tuple[list[Mapping[Hashable, Any]], list[dict[str, str]]]:
    """Split datalist items into those with a usable report and a record of those skipped.

    This is the documented way to skip unusable reports instead of having :class:`CleanReportd` raise in
    the middle of training: run it when building the datalist and keep (or log) the skip records. An item
    is skipped when it has no ``key``, when its report cannot be decoded or parsed, or when it is empty
    after (optional section extraction and) cleaning.

    Args:
        items: datalist items.
        key: the key of the report.
        id_key: the key of the item id the skip records name; when absent, the ``image_key`` path is used.
        image_key: the key of the item's image.
        parser: when given (``"mimic"``, ``"iu"`` or ``"auto"``), extract sections with
            :class:`ExtractReportSections` before cleaning, as the pipeline will.
        order: the sections composed into the training text when ``parser`` is given.
        fallback: the fallback sections when ``parser`` is given.
        **clean_kwargs: keyword arguments of :func:`clean_report_text` (e.g. ``deid_replacement``).

    Returns:
        ``(kept, skipped)``: the kept items themselves (unchanged, in order) and one
        ``{"item": <id>, "reason": <PHI-free reason>}`` per skipped item.
    """
    extractor = ExtractReportSections(parser, order, fallback) if parser is not None else None
    kept: list[Mapping[Hashable, Any]] = []
    skipped: list[dict[str, str]] = []
    for item in items:
        item_id = report_item_id(item, id_key, image_key)
        reason: str | None = None
        if key not in item or item[key] is None:
            reason = f"no {key!r} in the item"
        else:
            try:
                text = extractor(item[key], source=item_id) if extractor is not None else item[key]
                if isinstance(text, (bytes, bytearray)):
                    text = decode_report_bytes(text, item_id)
                if not clean_report_text(text, **clean_kwargs):
                    reason = "report is empty after cleaning"
            except ReportError as err:
                reason = err.reason
            except TypeError:
                reason = f"report is {type(item[key]).__name__}, not text"
        if reason is None:
            kept.append(item)
        else:
            skipped.append({"item": item_id, "reason": reason})
            logger.debug("skipping item %s: %s", item_id, reason)
    logger.info("report filter kept %d items and skipped %d", len(kept), len(skipped))
    return kept, skipped


ExtractReportSectionsD = ExtractReportSectionsDict = ExtractReportSectionsd
CleanReportD = CleanReportDict = CleanReportd
TokenizeReportD = TokenizeReportDict = TokenizeReportd
