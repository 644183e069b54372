"""Cleaning a report text for tokenisation: markup, de-identification masks, list markers, spacing, punctuation.

:func:`clean_report_text` is the one normaliser; :class:`~sista_monai.transforms.report.CleanReport` applies it in a
pipeline and refuses a report that is empty afterwards.
"""

from __future__ import annotations

import html
import re

__all__ = ["clean_report_text"]

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
